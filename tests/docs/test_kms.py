"""docs/kms.md's standalone KMS walk-through: key file, identity, serve, encrypt, rotate, audit."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.blocks import ROOT, DocShell, http_ok, json_documents, marked_blocks
from tests.docs.conftest import link_demo
from tests.support import free_port

DOC = ROOT / "docs" / "kms.md"


def test_standalone_kms_walk_through(tmp_path: Path, demo_dir: Path) -> None:
    blocks = marked_blocks(DOC)
    port, home = free_port(), tmp_path / "home"
    (tmp_path / "work").mkdir()
    link_demo(demo_dir, tmp_path / "work" / "demo")
    shell = DocShell(
        cwd=tmp_path / "work",
        home=home,
        substitutions={
            "~/.trustserve": str(home),
            "127.0.0.1:8443": f"127.0.0.1:{port}",
            "--port 8443": f"--port {port}",
        },
    )
    setup = shell.run(blocks["kms-setup"])
    identity = setup.split()[-1]
    key_file = shell.cwd / "kms.key"
    # the hint works from any directory, as the doc's export does
    assert f"set TRUSTSERVE_KMS_KEY_FILE={key_file}" in setup
    assert key_file.stat().st_mode & 0o077 == 0, "the key file must be private"
    shell.env["TRUSTSERVE_KMS_KEY_FILE"] = str(key_file)  # the doc's export, in the next shell
    try:
        shell.start(
            blocks["kms-serve"],
            http_ok(f"https://127.0.0.1:{port}/healthz", str(home / "tls" / "ca.pem")),
        )
        out = shell.run(blocks["kms-use"])
    finally:
        shell.stop()
    encrypted = re.search(r"digits\.enc\.tsm: encrypted under (model-digits-1-\S+)\n", out)
    assert encrypted, out
    audit = out.index("audit log intact")
    serving, header, rotated = json_documents(
        out[: encrypted.start()] + out[encrypted.end() : audit]
    )
    assert isinstance(serving, dict) and serving["keys"], serving
    assert isinstance(header, dict) and header["manifest"]["name"] == "digits"
    assert header["encryption"]["key_id"] == encrypted[1], header
    assert isinstance(rotated, dict)
    assert rotated["key_id"] not in {k["key_id"] for k in serving["keys"]}
    assert identity and len(identity) == 44  # base64 of a 32-byte public key
