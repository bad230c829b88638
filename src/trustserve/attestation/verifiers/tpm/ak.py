"""Which TPM attestation keys (AKs) a verifier trusts: pinned Names, or AK certificates.

A TPM quote is only as good as the key that signed it. An AK is a *restricted*
signing key: the TPM signs with it only structures it generated itself (quotes,
certifications), never a digest handed to it, so a quote it signed reports the
TPM's real PCRs. A non-restricted key signs anything, so a quote "signed" by one
proves nothing. The attributes live in the key's public area (TPMT_PUBLIC), which
the evidence carries; they are trusted only through one of:

- a **pinned Name** (policy ``tpm_ak_names``): the TPM object Name, nameAlg (2
  bytes) || nameAlg-hash of the whole marshalled TPMT_PUBLIC. Pinning the Name
  pins the attributes and the key together; a bare public key would not (the
  evidence could claim ``restricted`` for any key);
- an **AK certificate** chaining to a CA of the policy (``tpm_ak_ca_certs``), as
  cloud vTPMs provide (Azure: NV index 0x01C101D0; GCP: 0x01C10000 RSA,
  0x01C10002 ECC). The certificate's public key must be the quoting key. The CA
  vouches that the key is an AK of its vTPM; the attributes are still checked.

Either way the public area must have the attributes of an attestation key:
restricted, sign, not decrypt, fixedTPM, fixedParent, sensitiveDataOrigin.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from trustserve.attestation.base import unb64
from trustserve.errors import AttestationRefused, BadRequest, ConfigError

# nameAlg -> digest size, for the Name algorithms a policy may pin (no SHA-1).
NAME_ALGS = {0x000B: 32, 0x000C: 48, 0x000D: 64}
_MAX_INTERMEDIATES = 4


def parse_ak_name(text: Any) -> str:
    """A policy's ``tpm_ak_names`` entry, checked: hex of nameAlg || digest (lower case)."""
    if not isinstance(text, str):
        raise ConfigError("tpm_ak_names entry must be a quoted hex string")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ConfigError("tpm_ak_names entry is not hex") from None
    alg = int.from_bytes(raw[:2], "big") if len(raw) >= 2 else None
    if alg not in NAME_ALGS or len(raw) != 2 + NAME_ALGS[alg]:
        raise ConfigError(
            "tpm_ak_names entry must be a TPM Name: 000b + 64 hex (SHA-256), "
            "000c + 96 hex (SHA-384) or 000d + 128 hex (SHA-512)"
        )
    return raw.hex()


def parse_ca_certs(text: Any) -> list[x509.Certificate]:
    """A policy's ``tpm_ak_ca_certs`` entry: one or more PEM certificates."""
    if not isinstance(text, str):
        raise ConfigError("tpm_ak_ca_certs entry must be a PEM string")
    try:
        certs = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise ConfigError("tpm_ak_ca_certs entry is not a PEM certificate") from None
    for cert in certs:
        try:
            ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            ca = False
        if not ca:
            raise ConfigError("tpm_ak_ca_certs entry is not a CA certificate (basicConstraints)")
    return certs


def check_ca_pem(text: Any) -> str:
    """A policy's ``tpm_ak_ca_certs`` entry, checked and returned unchanged."""
    parse_ca_certs(text)
    return str(text)


def ak_name(public: Any) -> str:
    """The hex Name of a TPMT_PUBLIC (computed by tpm2-pytss from the marshalled area)."""
    try:
        return bytes(public.get_name()).hex()
    except ValueError as exc:
        raise AttestationRefused("ak", f"the AK's name algorithm is not supported: {exc}") from None


def check_attributes(public: Any) -> None:
    """Refuse (claim ``ak``) a key that is not a restricted, TPM-bound signing key."""
    from tpm2_pytss.constants import TPMA_OBJECT

    needed = (
        TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.SIGN_ENCRYPT
        | TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
    )
    attrs = public.objectAttributes
    if attrs & needed != needed or attrs & TPMA_OBJECT.DECRYPT:
        raise AttestationRefused(
            "ak",
            "the key is not an attestation key (restricted, sign, fixedTPM, fixedParent, "
            "sensitiveDataOrigin; not decrypt)",
        )


def _ca_policy() -> ExtensionPolicy:
    """Issuers: RFC 5280's essentials, without the web PKI's profile (cloud TPM CAs vary)."""

    def is_ca(_policy: Any, _cert: Any, ext: x509.BasicConstraints) -> None:
        if not ext.ca:
            raise ValueError("issuer is not a CA")

    def signs_certs(_policy: Any, _cert: Any, ext: x509.KeyUsage | None) -> None:
        if ext is not None and not ext.key_cert_sign:
            raise ValueError("issuer key usage lacks keyCertSign")

    return (
        ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, is_ca)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, signs_certs)
    )


def _ak_cert_policy() -> ExtensionPolicy:
    """The AK certificate: no CA, and a signing key when key usage is stated."""

    def not_ca(_policy: Any, _cert: Any, ext: x509.BasicConstraints | None) -> None:
        if ext is not None and ext.ca:
            raise ValueError("the AK certificate is a CA certificate")

    def signs(_policy: Any, _cert: Any, ext: x509.KeyUsage | None) -> None:
        if ext is not None and not ext.digital_signature:
            raise ValueError("the AK certificate's key usage lacks digitalSignature")

    return (
        ExtensionPolicy.permit_all()
        .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, not_ca)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, signs)
    )


def _certs(data: dict[str, Any]) -> tuple[x509.Certificate, list[x509.Certificate]]:
    raw = data.get("ak_cert_intermediates", [])
    if not isinstance(raw, list) or len(raw) > _MAX_INTERMEDIATES:
        raise BadRequest(
            f"tpm evidence ak_cert_intermediates must be a list of at most "
            f"{_MAX_INTERMEDIATES} base64 DER certificates"
        )
    try:
        leaf = x509.load_der_x509_certificate(unb64(data.get("ak_cert"), "ak_cert"))
        chain = [
            x509.load_der_x509_certificate(unb64(c, "ak_cert_intermediates entry")) for c in raw
        ]
    except ValueError as exc:
        raise BadRequest(f"tpm evidence carries a malformed certificate: {exc}") from None
    return leaf, chain


class AkTrust:
    """The AKs a policy trusts; ``check`` returns how the AK of some evidence is trusted."""

    def __init__(self, names: Sequence[str] = (), ca_pems: Sequence[str] = ()) -> None:
        self._names = [parse_ak_name(n) for n in names]
        self._cas = [c for pem in ca_pems for c in parse_ca_certs(pem)]

    def check(self, public: Any, data: dict[str, Any], now: float) -> dict[str, Any]:
        """Refuse (claim ``ak``) unless ``public`` is a trusted attestation key.

        ``data`` is the evidence data (its ``ak_cert`` / ``ak_cert_intermediates``).
        Returns claims about the AK: its Name and how it is trusted.
        """
        name = ak_name(public)
        check_attributes(public)
        if any(hmac.compare_digest(name, pinned) for pinned in self._names):
            return {"ak_name": name, "ak_trust": "pinned-name"}
        if not self._names and not self._cas:
            raise AttestationRefused(
                "ak", "no TPM attestation key is trusted (tpm_ak_names, tpm_ak_ca_certs)"
            )
        if "ak_cert" not in data:
            raise AttestationRefused(
                "ak", f"the AK (Name {name}) is not pinned and the evidence has no AK certificate"
            )
        if not self._cas:
            raise AttestationRefused(
                "ak", f"the AK (Name {name}) is not pinned and no AK CA is trusted"
            )
        leaf, intermediates = _certs(data)
        quoting_key = public.to_der()
        cert_key = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        if not hmac.compare_digest(cert_key, quoting_key):
            raise AttestationRefused("ak", "the AK certificate is for another key than the quote's")
        verifier = (
            PolicyBuilder()
            .store(Store(self._cas))
            .time(datetime.fromtimestamp(now, UTC))
            .max_chain_depth(_MAX_INTERMEDIATES + 1)
            .extension_policies(ca_policy=_ca_policy(), ee_policy=_ak_cert_policy())
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, intermediates)
        except VerificationError as exc:
            raise AttestationRefused(
                "ak", f"the AK certificate does not chain to a trusted AK CA: {exc}"
            ) from None
        return {
            "ak_name": name,
            "ak_trust": "certificate",
            "ak_cert_subject": leaf.subject.rfc4514_string(),
            "ak_cert_issuer": verified.chain[-1].subject.rfc4514_string(),
        }
