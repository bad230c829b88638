"""The key-release protocol both sides share: what a worker, frontend or client sends
to the KMS and how it checks what comes back (wire format, requester, bundle
verification, KMS trust settings, HTTP client). The KMS server is ``trustserve.kms``;
nothing here imports it.
"""
