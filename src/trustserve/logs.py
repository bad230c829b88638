"""Logging set-up shared by every trustserve process."""

from __future__ import annotations

import logging


def setup(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # a line per HTTP call (KMS challenge/release, bundle fetches) is noise, not news
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)
