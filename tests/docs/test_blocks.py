"""The extractor: what it takes from a document, and that each tested doc keeps its blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.blocks import ROOT, marked_blocks

TESTED = {
    "README.md": {"quickstart", "batch"},
    "docs/models.md": {"pack", "quantize"},
    "docs/kms.md": {"kms-setup", "kms-serve", "kms-use"},
    "docs/management.md": {"management"},
    "docs/redis.md": {"redis-config", "redis-server", "redis-frontend", "redis-worker"},
}


@pytest.mark.parametrize("doc", sorted(TESTED))
def test_each_doc_keeps_the_blocks_its_test_runs(doc: str) -> None:
    """A renamed or unmarked block must fail here, not silently stop being tested."""
    assert marked_blocks(ROOT / doc).keys() == TESTED[doc]


def test_marked_blocks_and_their_kind(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n```sh\nnot marked\n```\n"
        "<!-- doctest: one -->\n```sh\necho 1\necho 2\n```\n"
        "<!-- doctest: srv background -->\n```sh\nsleep 9\n```\n"
    )
    blocks = marked_blocks(doc)
    assert blocks.keys() == {"one", "srv"}
    assert blocks["one"].text == "echo 1\necho 2\n" and not blocks["one"].background
    assert blocks["srv"].background and blocks["srv"].line == 11


def test_a_marker_must_sit_on_a_sh_fence(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- doctest: one -->\n\n```sh\necho 1\n```\n")
    with pytest.raises(AssertionError, match="not above a ```sh fence"):
        marked_blocks(doc)
