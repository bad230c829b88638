"""Trusting a TPM AK through its certificate, as Azure and GCP vTPMs provide it.

A real swtpm holds the AK; the test plays the cloud: it makes a CA (fresh keys every
run), issues an AK certificate for the swtpm's AK and writes it into the NV index
where Azure keeps it (0x01C101D0). The provider reads it from there, as on a VM.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from ak_pki import (
    AZURE_AK_CERT_NV,
    DAY,
    HOUR,
    TPM_DEVICE,
    Ca,
    ak_public_key,
    der,
    issue_ak_cert,
    make_ca,
    write_nv,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import ESAPI, TPM2B_PUBLIC, TPMT_PUBLIC
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG

from tests.support import tiny_manifest
from trustserve.attestation import Evidence, Policy, make_provider, verify_evidence
from trustserve.attestation.base import b64, unb64
from trustserve.attestation.registry import parse_options
from trustserve.attestation.verifiers.tpm.verifier import ak_name_of
from trustserve.cli import main
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.errors import AttestationRefused, BadRequest, ConfigError, Forbidden
from trustserve.keyrelease.protocol import make_request, model_digest, open_keys
from trustserve.kms.service import KmsService

PCRS = list(range(8))  # a tpm set must pin the boot chain, PCRs 0-7


def quote(tcti: str, home: Path, nonce: bytes, **options: Any) -> Evidence:
    return make_provider(
        "tpm", home, tcti=tcti, pcrs=PCRS, ak_cert_nv=AZURE_AK_CERT_NV, **options
    ).make(nonce)


def ca_policy(evidence: Evidence, *cas: Ca) -> Policy:
    return Policy.from_mapping(
        {
            "measurements": [{"tee": "tpm", "pcrs": evidence.data["pcrs"]}],
            "tpm_ak_ca_certs": [ca.pem for ca in cas],
        }
    )


def verdict(evidence: Evidence, nonce: bytes, policy: Policy, now: float | None = None) -> str:
    try:
        claims = verify_evidence(evidence, nonce, policy, time.time() if now is None else now)
    except AttestationRefused as exc:
        return f"refused {exc.claim}: {exc.detail}"
    return f"accepted by {claims.extra['ak_trust']}"


@pytest.fixture
def cloud_ca() -> Ca:
    return make_ca("Test Virtual TPM CA")


def test_an_ak_certified_by_a_listed_ca_is_accepted(
    swtpm: str, tmp_path: Path, cloud_ca: Ca
) -> None:
    write_nv(swtpm, AZURE_AK_CERT_NV, der(issue_ak_cert(cloud_ca, ak_public_key(swtpm, tmp_path))))
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    claims = verify_evidence(evidence, nonce, ca_policy(evidence, cloud_ca), time.time())
    assert claims.extra["ak_trust"] == "certificate"
    assert claims.extra["ak_cert_subject"] == "CN=vTPM AK of test-vm"
    assert claims.extra["ak_cert_issuer"] == "CN=Test Virtual TPM CA"


def test_a_zero_padded_nv_index_is_read_up_to_the_certificate(
    swtpm: str, tmp_path: Path, cloud_ca: Ca
) -> None:
    """Azure's AK certificate index is 4096 bytes, the certificate shorter.

    (swtpm's largest NV index is 2048 bytes.)
    """
    cert = der(issue_ak_cert(cloud_ca, ak_public_key(swtpm, tmp_path)))
    write_nv(swtpm, AZURE_AK_CERT_NV, cert + bytes(2048 - len(cert)), size=2048)
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    assert unb64(evidence.data["ak_cert"], "ak_cert") == cert
    assert verdict(evidence, nonce, ca_policy(evidence, cloud_ca)) == "accepted by certificate"


def test_an_index_readable_with_its_own_auth_is_read_too(
    swtpm: str, tmp_path: Path, cloud_ca: Ca
) -> None:
    cert = der(issue_ak_cert(cloud_ca, ak_public_key(swtpm, tmp_path)))
    write_nv(swtpm, AZURE_AK_CERT_NV, cert, owner=False)
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    assert unb64(evidence.data["ak_cert"], "ak_cert") == cert
    assert verdict(evidence, nonce, ca_policy(evidence, cloud_ca)) == "accepted by certificate"


def test_an_ak_certified_by_another_ca_is_refused(swtpm: str, tmp_path: Path, cloud_ca: Ca) -> None:
    stranger = make_ca("Test Virtual TPM CA")  # same name, other key
    write_nv(swtpm, AZURE_AK_CERT_NV, der(issue_ak_cert(stranger, ak_public_key(swtpm, tmp_path))))
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    result = verdict(evidence, nonce, ca_policy(evidence, cloud_ca))
    assert result.startswith("refused ak: the AK certificate does not chain"), result


def test_a_certificate_for_another_key_is_refused(swtpm: str, tmp_path: Path, cloud_ca: Ca) -> None:
    """A genuine AK certificate, but of some other key than the one that signed the quote."""
    other_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    write_nv(swtpm, AZURE_AK_CERT_NV, der(issue_ak_cert(cloud_ca, other_key)))
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    result = verdict(evidence, nonce, ca_policy(evidence, cloud_ca))
    assert result == "refused ak: the AK certificate is for another key than the quote's"


def test_an_expired_certificate_is_refused(swtpm: str, tmp_path: Path, cloud_ca: Ca) -> None:
    past = dt.datetime.now(dt.UTC) - 10 * DAY
    cert = issue_ak_cert(cloud_ca, ak_public_key(swtpm, tmp_path), not_before=past, days=2)
    write_nv(swtpm, AZURE_AK_CERT_NV, der(cert))
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    policy = ca_policy(evidence, cloud_ca)
    assert verdict(evidence, nonce, policy).startswith("refused ak: the AK certificate does not")
    # The same evidence, verified as of a time inside the certificate's validity, passes.
    then = (past + DAY).timestamp()
    assert verdict(evidence, nonce, policy, now=then) == "accepted by certificate"


def test_an_intermediate_from_the_evidence_chains_to_the_listed_root(
    swtpm: str, tmp_path: Path, cloud_ca: Ca
) -> None:
    """Like Azure: the root is pinned, the issuing CA travels with the evidence."""
    intermediate = make_ca("Test Virtual TPM CA - 03", cloud_ca)
    cert = issue_ak_cert(intermediate, ak_public_key(swtpm, tmp_path))
    write_nv(swtpm, AZURE_AK_CERT_NV, der(cert))
    chain = tmp_path / "intermediates.pem"
    chain.write_text(intermediate.pem)
    nonce = os.urandom(64)
    with_chain = quote(swtpm, tmp_path, nonce, ak_cert_intermediates=chain)
    policy = ca_policy(with_chain, cloud_ca)
    assert verdict(with_chain, nonce, policy) == "accepted by certificate"
    without = Evidence("tpm", {**with_chain.data, "ak_cert_intermediates": []})
    assert verdict(without, nonce, policy).startswith("refused ak: the AK certificate does not")


def test_a_certificate_issued_by_a_non_ca_certificate_is_refused(
    swtpm: str, tmp_path: Path, cloud_ca: Ca
) -> None:
    """Any end-entity certificate of the CA (another VM's, say) cannot vouch for an AK."""
    leaf = make_ca("some server", cloud_ca, is_ca=False)
    write_nv(swtpm, AZURE_AK_CERT_NV, der(issue_ak_cert(leaf, ak_public_key(swtpm, tmp_path))))
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    evidence.data["ak_cert_intermediates"] = [b64(der(leaf.cert))]
    result = verdict(evidence, nonce, ca_policy(evidence, cloud_ca))
    assert result.startswith("refused ak: the AK certificate does not chain"), result


def test_a_certificate_is_ignored_without_listed_cas(
    swtpm: str, tmp_path: Path, cloud_ca: Ca
) -> None:
    write_nv(swtpm, AZURE_AK_CERT_NV, der(issue_ak_cert(cloud_ca, ak_public_key(swtpm, tmp_path))))
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    policy = Policy.from_mapping({"measurements": [{"tee": "tpm", "pcrs": evidence.data["pcrs"]}]})
    assert verdict(evidence, nonce, policy).startswith("refused ak: no TPM attestation key")


def test_malformed_certificates_in_evidence_are_bad_requests(
    swtpm: str, tmp_path: Path, cloud_ca: Ca
) -> None:
    nonce = os.urandom(64)
    evidence = make_provider("tpm", tmp_path, tcti=swtpm, pcrs=PCRS).make(nonce)
    policy = ca_policy(evidence, cloud_ca)
    for extra in ({"ak_cert": b64(b"not DER")}, {"ak_cert": 7}):
        with pytest.raises(BadRequest):
            verify_evidence(Evidence("tpm", {**evidence.data, **extra}), nonce, policy, time.time())


def test_an_nv_index_without_a_certificate_is_a_configuration_error(
    swtpm: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="cannot read TPM NV index 0x1c101d0"):
        quote(swtpm, tmp_path, os.urandom(64))
    write_nv(swtpm, AZURE_AK_CERT_NV, os.urandom(64))
    with pytest.raises(ConfigError, match="does not hold"):
        quote(swtpm, tmp_path, os.urandom(64))


def test_policy_refuses_a_non_ca_certificate_as_ak_ca(cloud_ca: Ca) -> None:
    leaf = make_ca("not a CA", cloud_ca, is_ca=False)
    with pytest.raises(ConfigError, match="not a CA certificate"):
        Policy.from_mapping({"tpm_ak_ca_certs": [leaf.pem]})
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        Policy.from_mapping({"tpm_ak_ca_certs": ["-----BEGIN CERTIFICATE-----\nAAAA\n"]})


def test_attest_reads_the_ak_certificate_then_verify_accepts_it(
    swtpm: str, tmp_path: Path, cloud_ca: Ca, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real CLI: ``trustserve attest --ak-cert-nv 0x01C101D0``, then ``trustserve verify``."""
    write_nv(swtpm, AZURE_AK_CERT_NV, der(issue_ak_cert(cloud_ca, ak_public_key(swtpm, tmp_path))))
    nonce = os.urandom(64).hex()
    out = tmp_path / "evidence.json"
    argv = ["attest", "--provider", "tpm", "--tcti", swtpm, "--pcrs", "0,1,2,3,4,5,6,7"]
    argv += ["--ak-cert-nv", "0x01C101D0", "--report-data", nonce, "-o", str(out)]
    assert main([*argv, "--home", str(tmp_path)]) == 0
    assert "issued by CN=Test Virtual TPM CA" in capsys.readouterr().err
    evidence = json.loads(out.read_text())
    assert "ak_cert" in evidence["data"]
    policy = {
        "measurements": [{"tee": "tpm", "pcrs": evidence["data"]["pcrs"]}],
        "tpm_ak_ca_certs": [cloud_ca.pem],
    }
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(json.dumps(policy))
    capsys.readouterr()
    assert main(["verify", str(out), "--policy", str(policy_file), "--report-data", nonce]) == 0
    assert json.loads(capsys.readouterr().out)["claims"]["extra"]["ak_trust"] == "certificate"
    other = {**policy, "tpm_ak_ca_certs": [make_ca("Another CA").pem]}
    policy_file.write_text(json.dumps(other))
    assert main(["verify", str(out), "--policy", str(policy_file), "--report-data", nonce]) == 1
    assert json.loads(capsys.readouterr().out)["claim"] == "ak"


def test_the_kms_releases_a_key_to_a_certified_ak_only(
    swtpm: str, tmp_path: Path, cloud_ca: Ca
) -> None:
    """The release path end to end: a KMS whose policy lists the AK CA, a vTPM-like worker."""
    write_nv(swtpm, AZURE_AK_CERT_NV, der(issue_ak_cert(cloud_ca, ak_public_key(swtpm, tmp_path))))
    options = parse_options([f"tcti={swtpm}", "pcrs=0,1,2,3,4,5,6,7", "ak_cert_nv=0x01C101D0"])
    provider = make_provider("tpm", tmp_path, **options)
    pcrs = provider.make(os.urandom(64)).data["pcrs"]
    key_file = tmp_path / "kms.key"
    create_key_file(key_file)

    def release(ca: Ca) -> dict[str, bytes]:
        policy = {"measurements": [{"tee": "tpm", "pcrs": pcrs}], "tpm_ak_ca_certs": [ca.pem]}
        kms = KmsService(tmp_path / "kms", KeyFileProtector(key_file), Policy.from_mapping(policy))
        manifest = tiny_manifest("m", os.urandom(4).hex())  # a new model version each time
        key_id = kms.create_model_key(manifest)
        nonce = base64.b64decode(kms.challenge()["nonce"])
        held = {key_id: model_digest(manifest)}
        private, request = make_request(nonce, provider, [key_id], held)
        identity = kms.state.identity_public_key()
        keys = open_keys(private, nonce, kms.release(request.to_json()), identity)
        assert keys[key_id] == kms.model_key(key_id)
        return keys

    assert release(cloud_ca)
    with pytest.raises(Forbidden):
        release(make_ca("Test Virtual TPM CA"))
    audit = (tmp_path / "kms" / "kms" / "audit.jsonl").read_text()
    assert '"claim":"ak"' in audit


def test_an_ak_made_from_a_template_in_nv_is_used(swtpm: str, tmp_path: Path) -> None:
    """GCP keeps its AK template in NV (0x01C10001 RSA, 0x01C10003 ECC); the AK is made from it."""
    area = TPMT_PUBLIC.parse(
        "ecc384:ecdsa-sha384:null",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
    )
    area.parameters.eccDetail.symmetric.algorithm = TPM2_ALG.NULL
    write_nv(swtpm, 0x01C10003, area.marshal())
    nonce = os.urandom(64)
    provider = make_provider("tpm", tmp_path, tcti=swtpm, pcrs=PCRS, ak_template_nv="0x01C10003")
    evidence = provider.make(nonce)
    ak, _ = TPMT_PUBLIC.unmarshal(unb64(evidence.data["ak_public"], "ak_public"))
    assert isinstance(serialization.load_pem_public_key(ak.to_pem()), ec.EllipticCurvePublicKey)
    assert serialization.load_pem_public_key(ak.to_pem()).curve.name == "secp384r1"  # type: ignore[union-attr]
    policy = {
        "measurements": [{"tee": "tpm", "pcrs": evidence.data["pcrs"]}],
        "tpm_ak_names": [ak_name_of(evidence)],
    }
    assert verdict(evidence, nonce, Policy.from_mapping(policy)) == "accepted by pinned-name"


def test_an_azure_like_rsa_ak_at_a_persistent_handle_with_its_certificate(
    swtpm: str, tmp_path: Path, cloud_ca: Ca
) -> None:
    """Azure's layout: an RSA-2048 AK persistent at 0x81000003, its certificate in 0x01C101D0."""
    area = TPMT_PUBLIC.parse(
        "rsa2048:rsassa-sha256:null",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
    )
    area.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG.NULL
    esapi = ESAPI(swtpm)
    try:
        transient, public, *_ = esapi.create_primary(None, TPM2B_PUBLIC(area), ESYS_TR.ENDORSEMENT)
        esapi.evict_control(ESYS_TR.OWNER, transient, 0x81000003)
        esapi.flush_context(transient)
    finally:
        esapi.close()
    rsa_key = serialization.load_pem_public_key(public.publicArea.to_pem())
    write_nv(swtpm, AZURE_AK_CERT_NV, der(issue_ak_cert(cloud_ca, rsa_key)))
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce, ak_handle="0x81000003")
    claims = verify_evidence(evidence, nonce, ca_policy(evidence, cloud_ca), time.time())
    assert claims.extra["ak_trust"] == "certificate"
    assert claims.extra["ak_public_key"] == public.publicArea.to_pem().decode()


@pytest.mark.parametrize(
    ("extension", "accepted"),
    [
        # TCG credential profile: empty subject, the TPM named in a critical SAN.
        (x509.SubjectAlternativeName([x509.DirectoryName(TPM_DEVICE)]), True),
        # RFC 5280: a critical extension the verifier does not know refuses the certificate.
        (x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\5\0"), False),
    ],
    ids=["tcg-profile", "unknown-critical-extension"],
)
def test_critical_extensions_of_the_ak_certificate(
    swtpm: str, tmp_path: Path, cloud_ca: Ca, extension: x509.ExtensionType, accepted: bool
) -> None:
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(cloud_ca.cert.subject)
        .public_key(ak_public_key(swtpm, tmp_path))
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - HOUR)
        .not_valid_after(now + DAY)
        .add_extension(extension, critical=True)
        .sign(cloud_ca.key, hashes.SHA256())
    )
    write_nv(swtpm, AZURE_AK_CERT_NV, der(cert))
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    result = verdict(evidence, nonce, ca_policy(evidence, cloud_ca))
    assert result.startswith("accepted" if accepted else "refused ak"), result
