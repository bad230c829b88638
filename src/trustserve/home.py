"""The home directory: where a trustserve host keeps its state, in one place.

``$TRUSTSERVE_HOME``, else ``~/.trustserve`` (``--home`` / ``home:`` override both)::

    HOME/
      tls/ca.pem           the local CA: what clients and workers trust by default
      tls/server.pem, tls/server-key.pem   the frontend's certificate from that CA
      kms/                 the KMS state, audit log and admin token (kms/admin.token)
      kms/dev-root.key     ``up`` only: the development root-key file
      models/              the model store (``--model-store``)
      run/                 sockets and the replay-nonce database
      samples/sample.jpg   ``up``'s demo picture
      management.token     the management API's bearer token
      trustserve.yaml      the configuration file, read when it exists
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "TRUSTSERVE_HOME"
HOME_HELP = "state directory (default $TRUSTSERVE_HOME, else ~/.trustserve)"


def default_home() -> Path:
    """The state directory: ``$TRUSTSERVE_HOME``, else ``~/.trustserve``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".trustserve")


def home_or_default(home: Path | str | None) -> Path:
    """``home`` as given (``--home``), else ``default_home()``."""
    return Path(home) if home is not None else default_home()


def tls_dir(home: Path) -> Path:
    return home / "tls"


def ca_file(home: Path) -> Path:
    """The local CA certificate: a client's and a worker's default trust anchor."""
    return tls_dir(home) / "ca.pem"


def trusted_ca(home: Path, given: Path | str | None = None) -> Path:
    """The CA that authenticates a server (the KMS, a frontend): ``given`` (``--ca`` /
    ``--kms-ca`` / ``kms.ca``), else the home's local CA."""
    return Path(given) if given else ca_file(home)


def kms_dir(home: Path) -> Path:
    return home / "kms"


def kms_admin_token(home: Path) -> Path:
    return kms_dir(home) / "admin.token"


def dev_root_key(home: Path) -> Path:
    return kms_dir(home) / "dev-root.key"


def model_store(home: Path) -> Path:
    return home / "models"


def run_dir(home: Path) -> Path:
    return home / "run"


def sample_image(home: Path) -> Path:
    return home / "samples" / "sample.jpg"


def management_token(home: Path) -> Path:
    return home / "management.token"


def config_file(home: Path) -> Path:
    return home / "trustserve.yaml"
