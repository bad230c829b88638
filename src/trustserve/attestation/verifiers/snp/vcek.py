"""Where a verifier finds the VCEK of a report the evidence did not bring one for.

Two sources, tried in order: a local cache directory (any ``*.der`` / ``*.pem`` VCEK
in it; the one whose hwID and TCB extensions match the report is used) and AMD's Key
Distribution Service (or a proxy of it) at a configured URL::

    GET {kds_url}/vcek/v1/{Milan|Genoa|Turin}/{hwID hex}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..

(``fmcSPL`` too on Turin, whose hwID is the first 8 bytes of CHIP_ID). A VCEK
fetched from the KDS is written to the cache directory when there is one.

Nothing from either source is trusted: the verifier checks the chain to the pinned
AMD roots whatever the source. A source that fails (KDS unreachable, no VCEK found)
refuses the evidence (claim ``vcek``): it never lets a report through unchecked.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import httpx

from trustserve import files
from trustserve.attestation.formats.snp_report import SnpReport, TcbVersion
from trustserve.attestation.verifiers.snp.certs import load_vcek, vcek_facts
from trustserve.errors import AttestationRefused, TrustserveError

log = logging.getLogger(__name__)

AMD_KDS_URL = "https://kdsintf.amd.com"
KDS_TIMEOUT_S = 10.0
_MAX_VCEK_BYTES = 16 * 1024


def hwid(report: SnpReport, product: str) -> bytes:
    """The chip identifier a Turin VCEK carries is 8 bytes; earlier ones carry all 64."""
    return report.chip_id[:8] if product == "turin" else report.chip_id


# KDS query parameter of each reported-TCB component
KDS_PARAMS = {
    "bootloader": "blSPL",
    "tee": "teeSPL",
    "snp": "snpSPL",
    "microcode": "ucodeSPL",
    "fmc": "fmcSPL",
}


class VcekSource:
    def __init__(
        self,
        *,
        cache_dir: Path | str | None = None,
        kds_url: str | None = None,
        timeout: float = KDS_TIMEOUT_S,
    ) -> None:
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.kds_url = None if kds_url is None else kds_url.rstrip("/")
        self.timeout = timeout

    def __bool__(self) -> bool:
        return self.cache_dir is not None or self.kds_url is not None

    def find(self, report: SnpReport, products: tuple[str, ...]) -> bytes:
        """The DER of a VCEK for ``report``'s chip and reported TCB; refuses if none is found."""
        hint = report.cpuid_product
        candidates = (hint,) if hint in products else products
        if self.cache_dir is not None:
            cached = self._from_cache(report, candidates)
            if cached is not None:
                return cached
        if self.kds_url is not None:
            for product in candidates:
                der = self._from_kds(report, product)
                if der is not None:
                    self._store(report, product, der)
                    return der
            raise AttestationRefused("vcek", f"the KDS at {self.kds_url} has no VCEK for the chip")
        raise AttestationRefused(
            "vcek", "the evidence holds no VCEK and none for the chip is in the VCEK cache"
        )

    def _from_cache(self, report: SnpReport, products: tuple[str, ...]) -> bytes | None:
        assert self.cache_dir is not None
        if not self.cache_dir.is_dir():
            log.warning("VCEK cache %s is not a directory", self.cache_dir)
            return None
        for path in sorted(self.cache_dir.iterdir()):
            if path.suffix not in (".der", ".pem") or not path.is_file():
                continue
            try:
                der = _der(path.read_bytes())
                facts = vcek_facts(load_vcek(der))
            except (OSError, ValueError, TrustserveError):
                continue
            for product in products:
                tcb = TcbVersion.decode(report.reported_tcb_raw, product).components()
                if facts.hwid == hwid(report, product) and facts.tcb == tcb:
                    return der
        return None

    def _from_kds(self, report: SnpReport, product: str) -> bytes | None:
        tcb = TcbVersion.decode(report.reported_tcb_raw, product)
        params = {KDS_PARAMS[name]: value for name, value in tcb.components().items()}
        url = f"{self.kds_url}/vcek/v1/{product.capitalize()}/{hwid(report, product).hex()}"
        try:
            with httpx.stream("GET", url, params=params, timeout=self.timeout) as response:
                if response.status_code in (400, 404):  # no such chip / TCB for this product
                    return None
                if response.status_code != 200:
                    raise AttestationRefused(
                        "vcek", f"the KDS at {self.kds_url} answered {response.status_code}"
                    )
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > _MAX_VCEK_BYTES:  # the network is not trusted
                        raise AttestationRefused("vcek", f"the KDS at {self.kds_url} sent too much")
        except httpx.HTTPError as exc:
            raise AttestationRefused(
                "vcek", f"cannot fetch the VCEK from {self.kds_url}: {exc}"
            ) from None
        return body

    def _store(self, report: SnpReport, product: str, der: bytes) -> None:
        if self.cache_dir is None:
            return
        name = f"{product}-{report.chip_id.hex()[:16]}-{report.reported_tcb_raw.hex()}.der"
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            files.write_atomic(self.cache_dir / name, der)
        except OSError as exc:
            log.warning("cannot cache the VCEK in %s: %s", self.cache_dir, exc.strerror)


def _der(data: bytes) -> bytes:
    """A certificate file's DER (PEM files are decoded)."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return ssl.PEM_cert_to_DER_cert(data.decode("ascii"))
    return data
