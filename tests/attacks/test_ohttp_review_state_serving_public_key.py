"""OHTTP review: the host swaps a serving public key in the KMS state; the KMS signs it.

The KMS state (``kms/state.json``) lies on the host's disk, which is untrusted: that is
why every private key in it is wrapped under the root key, and why the KMS refuses a
state whose identity public key is not its wrapped private key's (test_audit_resigned).
A serving key's ``public_key`` field gets no such check: ``KmsState.serving_keys(...,
private=False)``, which the attestation bundle is built from, reads it as stored and
never derives it from the wrapped private key. The OHTTP key config of the key is built
from that same field. So the host writes its own X25519 public key there, the attested
KMS signs it (and a key config around it) into the bundle, the client's checks all pass
(signature, evidence, "the config names its key"), and every OHTTP (and sealed) request
is encapsulated to the host, which opens it, and can pass it on re-encapsulated to the
real key to get the answer too. The KMS must take a serving key's public half from its
unwrapped private half (or refuse a state where they differ) before it signs anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from trustserve.attestation import Policy, make_provider
from trustserve.client.ohttp import encapsulate, inner_request
from trustserve.client.verify import ClientPolicy, verify
from trustserve.crypto import hpke, ohttp
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.encoding import b64
from trustserve.errors import CannotOpenSealed, TrustserveError
from trustserve.kms.service import KmsService


def test_a_public_key_swapped_on_disk_is_never_signed(tmp_path: Path) -> None:
    key_file = tmp_path / "kms.key"
    create_key_file(key_file)
    home = tmp_path / "home"
    kms = KmsService(home, KeyFileProtector(key_file), Policy.development(home))
    host_private, host_public = hpke.generate_keypair()
    state = json.loads(kms.state.path.read_bytes())
    state["serving"][0]["public_key"] = b64(host_public)  # the host edits the file
    kms.state.path.write_bytes(json.dumps(state).encode())

    try:
        bundle = kms.attestation_bundle(make_provider("sim", home))
    except TrustserveError:
        return  # refused: the state was tampered with
    target = verify(bundle, ClientPolicy.development(home))
    config = target.attested_ohttp_config(None)  # what the SDK encapsulates to
    encapsulated, _ = encapsulate(config, inner_request("/v2/models/m/versions/1/infer", b"x"))
    try:
        plain, _ = ohttp.decapsulate_request(host_private, config.key_id, encapsulated)
    except CannotOpenSealed:
        plain = b""
    assert config.public_key != host_public and not plain, f"the host read {plain[:60]!r}"
