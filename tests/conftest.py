from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import RunningStack, start_stack, write_colour, write_tiny


@pytest.fixture(scope="module")
def tiny_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A real stack (HTTPS, embedded broker, worker processes) serving two small models.

    The body limit is 1 MiB so that the 413 path is cheap to reach.
    """
    root = tmp_path_factory.mktemp("tiny-stack")
    store = root / "store"
    store.mkdir()
    write_tiny(store)
    write_colour(store)
    stack = start_stack(root / "home", store, "--max-body-mb", "1")
    yield stack
    stack.stop()
