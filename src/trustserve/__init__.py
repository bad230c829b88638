"""trustserve: privacy-preserving, attested model serving."""

__version__ = "0.1.0"
