"""OHTTP review: the frontend's access log is readable by every local user.

The access log (``--access-log FILE``) holds, a line per request, the peer address of every
client that talks to the frontend directly, and the bundle fetches that docs/ohttp-relays.md
says can be linked by timing to relayed requests: personal data, kept to let an operator
audit who asked. ``open_access_log`` creates it (and its directory) with the process umask,
so 0644 / 0755 on a usual host, where the project writes its other records of who did what
(the KMS audit log, batch result files) 0600 in 0700 directories.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from trustserve.frontend.access_log import close_access_log, open_access_log


def test_the_access_log_is_private_to_its_owner(tmp_path: Path) -> None:
    target = tmp_path / "logs" / "access.log"
    old = os.umask(0o022)  # a usual host's umask
    try:
        logger = open_access_log(target)
        try:
            logger.info("%s %s %s %s", "192.0.2.7", "POST", "/v2/ohttp/tiny/1", 200)
        finally:
            close_access_log(logger)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) & 0o077 == 0, oct(target.stat().st_mode)
    assert stat.S_IMODE(target.parent.stat().st_mode) & 0o077 == 0, oct(
        target.parent.stat().st_mode
    )
