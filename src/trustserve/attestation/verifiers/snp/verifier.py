"""The AMD SEV-SNP verifier: an attestation report, its VCEK, and AMD's pinned roots.

Evidence: ``Evidence(kind="sev-snp", data={"report": b64, "vcek": b64 DER?})``; the
``vcek`` may be left out when the verifier has a VCEK source (``snp_vcek``).

What is checked, in order, each refusal naming its claim:

1. ``chain``: the VCEK is signed by the pinned ASK of an accepted product line
   (Milan, Genoa, Turin by default), which the pinned ARK signs; all RSA-PSS
   SHA-384, all valid at ``now``. Reports of version 3 and later name their CPU,
   which must be of that product line (``product``).
2. ``signature``: the report's ECDSA P-384 SHA-384 signature over its first
   0x2A0 bytes verifies under the VCEK. Reports signed by a VLEK are refused
   (``vcek``): only per-chip VCEKs are supported.
3. ``reported_tcb`` / ``chip_id``: the VCEK was issued for the report's reported
   TCB and chip (its TCB and hwID extensions), so an old VCEK of a chip whose
   firmware has been updated cannot vouch for a report claiming newer firmware.
4. ``report_data``: the report is bound to the expected 64 bytes.

Whether the claims are acceptable (measurement, VMPL, minimum TCB, debug) is the
policy's job (``snp_policy``). There is no TCB status: AMD publishes no TCB
evaluation like Intel's, so the policy's ``min_tcb`` takes its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from trustserve.attestation.base import Claims, Evidence, unb64
from trustserve.attestation.checks import check_report_data
from trustserve.attestation.formats.snp_report import PRODUCTS, SnpReport, TcbVersion
from trustserve.attestation.verifiers.snp.certs import chain_to_amd, load_vcek, vcek_facts
from trustserve.attestation.verifiers.snp.vcek import VcekSource, hwid
from trustserve.errors import AttestationRefused, BadRequest, ConfigError

TEE = "sev-snp"


@dataclass(frozen=True)
class SnpOptions:
    """How a verifier finds VCEKs and which AMD product lines it accepts."""

    products: tuple[str, ...] = PRODUCTS
    vcek_dir: Path | None = None
    kds_url: str | None = None

    @classmethod
    def configured(
        cls,
        *,
        vcek_dir: Path | None = None,
        kds_url: str | None = None,
        products: Sequence[str] | None = None,
    ) -> SnpOptions:
        """From ``--vcek-dir`` / ``--kds-url`` / ``--snp-product``: a VCEK cache that does not
        exist (with no KDS to fill it), a KDS URL that is not http(s) or an unknown product
        stops the verifier at start (ConfigError), not at the first SEV-SNP report.
        """
        if kds_url is not None and not kds_url.startswith(("https://", "http://")):
            raise ConfigError(f"KDS URL must be http(s)://…, got {kds_url!r}")
        if vcek_dir is not None and kds_url is None and not Path(vcek_dir).is_dir():
            raise ConfigError(f"VCEK cache directory {vcek_dir} does not exist")
        options = cls(tuple(products) if products else PRODUCTS, vcek_dir, kds_url)
        SnpVerifier(options)  # checks the products
        return options


class SnpVerifier:
    def __init__(self, options: SnpOptions | None = None) -> None:
        options = options or SnpOptions()
        unknown = sorted(set(options.products) - set(PRODUCTS))
        if unknown or not options.products:
            raise ConfigError(
                f"SEV-SNP products must be some of {', '.join(PRODUCTS)}; got {unknown or 'none'}"
            )
        self._products = tuple(options.products)
        self._source = VcekSource(cache_dir=options.vcek_dir, kds_url=options.kds_url)

    def verify(self, evidence: Evidence, expected_report_data: bytes | None, now: float) -> Claims:
        if evidence.kind != TEE:
            raise BadRequest(f"SEV-SNP verifier given {evidence.kind} evidence")
        try:
            report = SnpReport.parse(unb64(evidence.data.get("report"), "report"))
        except ValueError as exc:
            raise BadRequest(f"sev-snp evidence field 'report' is not a report: {exc}") from None
        if report.signing_key != 0:
            raise AttestationRefused("vcek", "the report is signed by a VLEK; only VCEKs are used")
        if evidence.data.get("vcek") is not None:
            vcek_der = unb64(evidence.data["vcek"], "vcek")
        elif self._source:
            vcek_der = self._source.find(report, self._products)
        else:
            raise BadRequest("sev-snp evidence has no 'vcek' and the verifier has no VCEK source")
        vcek = load_vcek(vcek_der)
        product = chain_to_amd(vcek, self._products, now)
        if report.cpuid_product not in (None, product):
            raise AttestationRefused(
                "product", f"the report is from a {report.cpuid_product} CPU, the VCEK {product}"
            )
        _check_signature(report, vcek.public_key())
        reported = TcbVersion.decode(report.reported_tcb_raw, product)
        facts = vcek_facts(vcek)
        if facts.tcb != reported.components():
            raise AttestationRefused(
                "reported_tcb",
                f"the VCEK is for TCB {facts.tcb}, the report claims {reported.components()}",
            )
        if facts.hwid != hwid(report, product):
            raise AttestationRefused("chip_id", "the VCEK is for another chip")
        claims = _claims(report, reported, product, facts.product_name)
        check_report_data(claims.report_data, expected_report_data)
        return claims


def _check_signature(report: SnpReport, key: object) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise AttestationRefused("vcek", "the VCEK's key is not an ECDSA key")
    r, s = report.signature_rs
    try:
        key.verify(encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise AttestationRefused("signature", "the report's signature does not verify") from None


def _claims(report: SnpReport, reported: TcbVersion, product: str, product_name: str) -> Claims:
    measurements = {
        "measurement": report.measurement.hex(),
        "host_data": report.host_data.hex(),
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "report_data": report.report_data.hex(),
        "chip_id": report.chip_id.hex(),
        "vmpl": str(report.vmpl),
        "guest_svn": str(report.guest_svn),
        "policy": f"{report.policy:#x}",
        **{f"tcb_{name}": str(number) for name, number in reported.components().items()},
    }
    current = TcbVersion.decode(report.current_tcb_raw, product)
    return Claims(
        tee=TEE,
        measurements=measurements,
        tcb_status="NotApplicable",
        advisories=(),
        debug=report.debug,
        report_data=report.report_data,
        extra={
            "product": product,
            "product_name": product_name,
            "report_version": report.version,
            "current_tcb": current.components(),
        },
    )
