"""What ``up`` / ``serve`` print once the stack listens: where, and commands to copy."""

from __future__ import annotations

from pathlib import Path

from trustserve.stack.config import Settings


def banner(settings: Settings, models: list[str]) -> str:
    s = settings
    base = f"{s.scheme}://localhost:{s.inference_port}"
    ca = f" --cacert {s.tls_dir / 'ca.pem'}" if s.tls else ""
    token = Path(s.token_file)
    lines = []
    if s.dev and s.attestation == "sim":
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
        f"  (bearer token in {token})",
        f"  metrics     {s.scheme}://{s.management_host}:{s.metrics_port}/metrics",
        f"  models      {', '.join(models) or '(none)'}",
        "try:",
        f"  curl{ca} {base}/v2/models/digits",
        f"  curl{ca} -X POST {base}/predictions/digits -H 'Content-Type: application/json' "
        "-d '[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,"
        "0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]'",
        "  # sealed end to end (verifies the attestation first; sim accepted only when asked):",
        f"  trustserve predict {base} resnet50 IMAGE.jpg"
        + (" --allow-simulated" if s.dev and s.attestation == "sim" else ""),
    ]
    return "\n".join(lines)
