"""The folder rules that keep the trust zones apart (docs/architecture.md, Layout).

A module's folder says where it runs; each folder may import only the folders
listed for it here. A module put on the wrong side (a worker module importing the
KMS server, a frontend module importing the stack) fails these tests.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import trustserve

SRC = Path(trustserve.__file__).parent
SHARED = {"top", "crypto", "attestation"}  # formats, primitives, evidence: no I/O policy
ALLOWED = {
    # inside the TEE
    "worker": SHARED | {"engines", "keyrelease", "broker"},
    "engines": {"top"},
    "kms": SHARED | {"keyrelease", "openapi", "transparency"},
    # both sides of key release: the requester's code must not carry the server
    # (transparency/: the log's formats and checks, which a bundle's verifier runs)
    "keyrelease": SHARED | {"transparency"},
    # outside the TEE (or in one, in standard mode only)
    # (transparency/: the form of the KMS's checkpoint, read for metrics, never trusted)
    "frontend": SHARED | {"keyrelease", "broker", "openapi", "transparency"},
    "broker": {"top", "crypto"},
    "client": SHARED | {"keyrelease", "transparency"},
    # the model owner's build tools, and what every zone may use
    "models": {"top"},
    "transparency": {"top", "crypto"},
    "crypto": {"top"},
    "attestation": {"top"},
}
WEB = ("starlette", "uvicorn", "fastapi")
SERVES_HTTP = {"frontend", "kms", "transparency"}  # the only folders with a web server


def zone_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (SRC / parts[1]).is_dir() else "top"


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module}
    return found


def loaded_by(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def crossings(folder: str, root: Path = SRC) -> list[str]:
    """Every import in ``folder`` that reaches a folder its rule does not allow."""
    bad = []
    for path in sorted((root / folder).rglob("*.py")):
        for module in sorted(imports(path)):
            if module.startswith("trustserve."):
                zone = zone_of(module)
                if zone != folder and zone not in ALLOWED[folder]:
                    bad.append(f"{path.relative_to(root)} imports {module}")
            elif folder not in SERVES_HTTP and module.startswith(WEB):
                bad.append(f"{path.relative_to(root)} imports {module}")
    return bad


def test_each_folder_imports_only_the_folders_its_trust_zone_allows() -> None:
    bad = [line for folder in ALLOWED for line in crossings(folder)]
    assert bad == [], "\n".join(bad)


# attestation/: providers run inside the TEE, verifiers and policy where evidence is judged;
# both read formats/ and the top-level seam (base, checks, registry, sim_platform).
ATTESTATION = "trustserve.attestation."
APART = {
    "providers": ("verifiers", "policy"),
    "verifiers": ("providers",),
    "policy": ("providers",),
}


def attestation_crossings(root: Path = SRC / "attestation") -> list[str]:
    bad = []
    for side, banned in APART.items():
        for path in sorted((root / side).rglob("*.py")):
            for module in sorted(imports(path)):
                if module.startswith(tuple(ATTESTATION + b for b in banned)):
                    bad.append(f"{path.relative_to(root)} imports {module}")
    return bad


def test_evidence_providers_and_verifiers_share_no_code_but_formats_and_the_registry() -> None:
    assert attestation_crossings() == [], "\n".join(attestation_crossings())


def test_a_verifier_that_imports_a_provider_is_caught(tmp_path: Path) -> None:
    for side in APART:
        (tmp_path / side).mkdir()
    (tmp_path / "verifiers" / "stray.py").write_text(
        "from trustserve.attestation.providers.sim import SimProvider\n"
    )
    assert attestation_crossings(tmp_path) == [
        "verifiers/stray.py imports trustserve.attestation.providers.sim"
    ]


def test_the_rule_catches_a_worker_module_that_imports_the_kms_server(tmp_path: Path) -> None:
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "stray.py").write_text("from trustserve.kms.service import KmsService\n")
    assert crossings("worker", tmp_path) == ["worker/stray.py imports trustserve.kms.service"]


def test_the_worker_and_a_key_requester_load_no_web_server_frontend_stack_or_kms() -> None:
    banned = (*WEB, "trustserve.frontend", "trustserve.stack", "trustserve.kms")
    for module in ("trustserve.worker.main", "trustserve.keyrelease.client"):
        leaked = sorted(m for m in loaded_by(module) if m.startswith(banned))
        assert leaked == [], f"{module} loads {leaked}"


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its body (not under
    ``if TYPE_CHECKING:``); ``from pkg import name`` counts ``pkg.name`` when that is a module."""
    files = {package: root / "__init__.py"} | {
        ".".join((package, *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): p
        for p in root.rglob("*.py")
    }
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        skipped = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body
            for n in ast.walk(stmt)
        }
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                subs = {f"{base}.{a.name}" for a in node.names} & files.keys()
                deps |= subs or {base}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules, as the shortest path from the
    group's first module back to itself (``a -> b -> a``)."""
    found = []
    for group in strongly_connected(graph):
        start = min(group)
        came_from: dict[str, str] = {}
        frontier = [start]
        while start not in came_from:  # breadth first: the shortest way round
            reached = []
            for module in frontier:
                for dep in sorted(graph[module] & group):
                    if dep not in came_from:
                        came_from[dep] = module
                        reached.append(dep)
            frontier = reached
        path = [start]
        while len(path) == 1 or path[-1] != start:
            path.append(came_from[path[-1]])
        found.append(path[::-1])
    return sorted(found)


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of two or more modules that each reach every other (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, deps = work[-1]
            dep = next(deps, None)
            if dep is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set(stack[stack.index(node) :])
                    del stack[stack.index(node) :]
                    if len(group) > 1:
                        groups.append(group)
            elif dep not in index:
                index[dep] = low[dep] = len(index)
                stack.append(dep)
                work.append((dep, iter(sorted(graph[dep]))))
            elif dep in stack:
                low[node] = min(low[node], index[dep])
    return groups


def test_no_import_cycles_in_the_package() -> None:
    found = [" -> ".join(c) for c in cycles(import_graph(SRC, "trustserve"))]
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_the_cycle_check_sees_an_import_inside_a_function_and_not_one_for_types(
    tmp_path: Path,
) -> None:
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text("def f():\n    from pkg.b import g\n")
    (tmp_path / "b.py").write_text("from . import a\n")
    (tmp_path / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.d\n"
    )
    (tmp_path / "d.py").write_text("from pkg import c\n")
    assert cycles(import_graph(tmp_path, "pkg")) == [["pkg.a", "pkg.b", "pkg.a"]]
