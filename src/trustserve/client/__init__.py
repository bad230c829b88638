"""The trustserve client SDK: verify the server's attestation, seal, send, open."""

from trustserve.client.sdk import AsyncTrustserveClient, ServerError, TrustserveClient
from trustserve.client.verify import ClientPolicy, ServingTarget

__all__ = [
    "AsyncTrustserveClient",
    "ClientPolicy",
    "ServerError",
    "ServingTarget",
    "TrustserveClient",
]
