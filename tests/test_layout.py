"""The import rule that keeps the trust zones apart (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import trustserve

SRC = Path(trustserve.__file__).parent
KMS_SERVER = ("trustserve.kms.service", "trustserve.kms.app", "trustserve.kms.state",
              "trustserve.kms.audit", "trustserve.kms.embedded")  # fmt: skip


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def loaded_by(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_worker_loads_no_web_server_frontend_stack_or_kms_server() -> None:
    banned = ("starlette", "uvicorn", "trustserve.frontend", "trustserve.stack", *KMS_SERVER)
    for module in ("trustserve.worker.main", "trustserve.kms.client"):
        leaked = sorted(m for m in loaded_by(module) if m.startswith(banned))
        assert leaked == [], f"{module} loads {leaked}"


def test_frontend_modules_import_no_kms_server_and_no_stack() -> None:
    banned = ("trustserve.stack", *KMS_SERVER)
    for path in sorted((SRC / "frontend").glob("*.py")):
        bad = sorted(m for m in imports(path) if m.startswith(banned))
        assert bad == [], f"{path.name} imports {bad}"
