"""A model URL in the management API (``POST /models?url=``): any text is an archive in the
store, or BadRequest / NotFound; found by schemathesis: a NUL byte was a ValueError (500)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.properties.own_errors import refused_cleanly
from tests.support import write_tiny
from trustserve.frontend.registry import ModelRegistry

STORE = Path(__file__).parent  # any directory: nothing here is a .tsm archive


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_any_text_is_an_archive_or_a_clear_refusal(url: str) -> None:
    assert refused_cleanly(lambda: ModelRegistry(STORE).locate(url)) is not None


def test_nul_byte_is_bad_request() -> None:
    error = refused_cleanly(lambda: ModelRegistry(STORE).locate("tiny\x00.tsm"))
    assert error is not None and error.status == 400


def test_a_real_archive_is_found(tmp_path: Path) -> None:
    write_tiny(tmp_path)
    assert ModelRegistry(tmp_path).locate("tiny-1.tsm") == (tmp_path / "tiny-1.tsm").resolve()
