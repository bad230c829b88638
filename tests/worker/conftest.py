"""The KMS fixtures a worker's key tests need: a real KMS service to be released keys by."""

from tests.kms.conftest import home, key_file, make_service

__all__ = ["home", "key_file", "make_service"]
