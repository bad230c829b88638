"""What ``up`` / ``serve`` print once the stack listens: where, and commands to copy."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from trustserve import home as layout
from trustserve.home import default_home
from trustserve.stack.config import Settings

DIGITS_ROW = (
    "[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,"
    "0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]"
)


def command() -> str:
    """How to call trustserve from this shell: bare if it is on PATH, else by its path."""
    if shutil.which("trustserve"):
        return "trustserve"
    exe = Path(sys.executable).parent / "trustserve"
    rel = os.path.relpath(exe)
    return rel if not rel.startswith("..") else str(exe)


def sample_image(settings: Settings) -> Path:
    """A demo JPEG ``up`` writes (a synthetic picture: nothing is downloaded)."""
    return layout.sample_image(settings.home)


def banner(settings: Settings, models: list[str], image_models: list[str]) -> str:
    s = settings
    base = f"{s.scheme}://localhost:{s.inference_port}"
    ca = f" --cacert {layout.ca_file(s.home)}" if s.tls else ""
    simulated = s.attestation == "sim"
    lines = []
    if s.dev and simulated:
        lines += [
            "!" * 78,
            "!! DEVELOPMENT MODE: attestation is SIMULATED and the KMS root key sits on this disk.",
            "!! NOTHING here is hardware-protected. Do not serve real data this way.",
            "!" * 78,
        ]
    lines += [
        "trustserve is up",
        f"  inference   {base}  (Open Inference Protocol v2, TorchServe /predictions)",
        f"  management  {s.scheme}://{s.management_host}:{s.management_port}"
        f"  (bearer token in {s.token_file})",
        f"  metrics     {s.scheme}://{s.management_host}:{s.metrics_port}/metrics",
        *(
            [
                f"  grpc        localhost:{s.grpc_port}  (Open Inference Protocol v2 over gRPC"
                + (f", TLS: CA {layout.ca_file(s.home)})" if s.tls else ", NO TLS)")
            ]
            if s.grpc_port
            else []
        ),
        f"  models      {', '.join(models) or '(none)'}",
    ]
    if not models:
        return "\n".join(lines)
    lines += ["try:", f"  curl{ca} {base}/v2/models/{models[0]}"]
    image = sample_image(s)
    if "digits" in models:
        lines.append(
            f"  curl{ca} -X POST {base}/predictions/digits -H 'Content-Type: application/json' "
            f"-d '{DIGITS_ROW}'"
        )
    if image_models and image.exists():
        model = image_models[0]
        lines.append(f"  curl{ca} -X POST {base}/predictions/{model} --data-binary @{image}")
        lines += [
            "  # sealed end to end (verifies the attestation first; sim accepted only when asked):",
            f"  {command()} predict {base} {model} {image}"
            + (f" --ca {layout.ca_file(s.home)}" if s.tls and s.home != default_home() else "")
            + (" --allow-simulated" if simulated else ""),
        ]
    return "\n".join(lines)
