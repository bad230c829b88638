"""What the server loads before it starts its workers (issue 14: first answer ≤ 2 s).

``serve`` spawns its workers once it has read its settings and made its KMS; every module
loaded before that delays the workers. The engine libraries, numpy, the KMS client's
httpx, the frontend and the model tools (onnx, PIL) come after the spawn; the worker
loads no Redis client unless its broker is Redis. (Timings: docs/performance.md.)
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "numpy",
    "onnxruntime",
    "openvino",
    "onnx",
    "PIL",
    "httpx",
    "redis",
    "trustserve.frontend.inference",
)


def loaded_by(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_server_reaches_its_worker_spawn_without_heavy_imports() -> None:
    # what `trustserve serve` imports to parse its command line and build its Stack
    code = (
        "from trustserve.cli import FAST_COMMANDS, build_parser\n"
        "build_parser((FAST_COMMANDS['serve'],)).parse_args(['serve'])\n"
        "import trustserve.stack.server, trustserve.kms.embedded, trustserve.kms.app\n"
        "import trustserve.broker.embedded"
    )
    heavy = sorted(m for m in loaded_by(code) if m.split(".")[0] in HEAVY or m in HEAVY)
    assert heavy == []


def test_the_serve_command_parses_with_its_own_module_only() -> None:
    code = "from trustserve.cli import main\ntry:\n    main(['serve', '--help'])\n"
    code += "except SystemExit:\n    pass"
    loaded = loaded_by(code)
    assert "trustserve.models.cli" not in loaded and "trustserve.client.cli" not in loaded
    everything = loaded_by("from trustserve.cli import build_parser\nbuild_parser()")
    assert "trustserve.models.cli" in everything  # other commands still parse with all


def test_a_worker_without_redis_loads_no_redis_client() -> None:
    assert not any(m.split(".")[0] == "redis" for m in loaded_by("import trustserve.worker.main"))
