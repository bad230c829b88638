"""The SEV-SNP attestation report and the certificate table of an extended report.

The report is the 1,184-byte ``ATTESTATION_REPORT`` of AMD's SEV-SNP Firmware ABI
specification (document 56860, "Attestation Report Format"). Integers are
little-endian; offsets in bytes::

    0x000 VERSION u32            0x004 GUEST_SVN u32          0x008 POLICY u64
    0x010 FAMILY_ID [16]         0x020 IMAGE_ID [16]          0x030 VMPL u32
    0x034 SIGNATURE_ALGO u32     0x038 CURRENT_TCB u64        0x040 PLATFORM_INFO u64
    0x048 flags u32: bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 2-4 SIGNING_KEY
          (0 VCEK, 1 VLEK)
    0x050 REPORT_DATA [64]       0x090 MEASUREMENT [48]       0x0C0 HOST_DATA [32]
    0x0E0 ID_KEY_DIGEST [48]     0x110 AUTHOR_KEY_DIGEST [48] 0x140 REPORT_ID [32]
    0x160 REPORT_ID_MA [32]      0x180 REPORTED_TCB u64
    0x188 CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (report version 3 and later)
    0x1A0 CHIP_ID [64]           0x1E0 COMMITTED_TCB u64 ...
    0x2A0 SIGNATURE [512]: R [72] then S [72], little-endian, zero-padded

The signature (algorithm 1: ECDSA P-384 with SHA-384) covers bytes 0..0x2A0.

A ``TCB_VERSION`` packs security version numbers into 8 bytes. Milan and Genoa:
bootloader, TEE, 4 reserved, SNP, microcode. Turin adds the FMC: FMC, bootloader,
TEE, SNP, 3 reserved, microcode.

The certificate table (GHCB specification, document 56421, MSG_REPORT_REQ; what
configfs-tsm returns in ``auxblob`` for ``sev_guest``) is a list of 24-byte
entries (GUID, offset u32, length u32) ended by an all-zero entry; offsets count
from the start of the table. The host fills it, so nothing in it is trusted: a
certificate taken from it is verified like any other.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
ECDSA_P384_SHA384 = 1
POLICY_DEBUG = 1 << 19
_COMPONENT_SIZE = 72  # R and S fields of the signature

PRODUCTS = ("milan", "genoa", "turin")


@dataclass(frozen=True)
class TcbVersion:
    """The named security version numbers of a ``TCB_VERSION`` (``fmc`` on Turin only)."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def decode(cls, raw: bytes, product: str) -> TcbVersion:
        if product == "turin":
            return cls(bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0])
        return cls(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])

    def components(self) -> dict[str, int]:
        out = {
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out


@dataclass(frozen=True)
class SnpReport:
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> SnpReport:
        """The report in ``raw``; ValueError naming what is wrong if it is not one."""
        if len(raw) != REPORT_SIZE:
            raise ValueError(f"a report is {REPORT_SIZE} bytes, got {len(raw)}")
        report = cls(bytes(raw))
        if report.version < 2:
            raise ValueError(f"report version {report.version} is not supported (2 or later)")
        if report.signature_algo != ECDSA_P384_SHA384:
            raise ValueError(f"signature algorithm {report.signature_algo} is not ECDSA P-384")
        return report

    def _u32(self, offset: int) -> int:
        value: int = struct.unpack_from("<I", self.raw, offset)[0]
        return value

    @property
    def version(self) -> int:
        return self._u32(0x000)

    @property
    def guest_svn(self) -> int:
        return self._u32(0x004)

    @property
    def policy(self) -> int:
        value: int = struct.unpack_from("<Q", self.raw, 0x008)[0]
        return value

    @property
    def debug(self) -> bool:
        return bool(self.policy & POLICY_DEBUG)

    @property
    def vmpl(self) -> int:
        return self._u32(0x030)

    @property
    def signature_algo(self) -> int:
        return self._u32(0x034)

    @property
    def signing_key(self) -> int:
        """0: signed by the chip's VCEK; 1: by a VLEK (a key AMD leases to a cloud)."""
        return (self._u32(0x048) >> 2) & 0b111

    @property
    def report_data(self) -> bytes:
        return self.raw[0x050:0x090]

    @property
    def measurement(self) -> bytes:
        return self.raw[0x090:0x0C0]

    @property
    def host_data(self) -> bytes:
        return self.raw[0x0C0:0x0E0]

    @property
    def id_key_digest(self) -> bytes:
        return self.raw[0x0E0:0x110]

    @property
    def author_key_digest(self) -> bytes:
        return self.raw[0x110:0x140]

    @property
    def chip_id(self) -> bytes:
        return self.raw[0x1A0:0x1E0]

    @property
    def current_tcb_raw(self) -> bytes:
        return self.raw[0x038:0x040]

    @property
    def reported_tcb_raw(self) -> bytes:
        return self.raw[0x180:0x188]

    @property
    def cpuid_product(self) -> str | None:
        """The product line named by the CPUID fields (reports of version 3 and later)."""
        if self.version < 3:
            return None
        return product_from_cpuid(self.raw[0x188], self.raw[0x189])

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def signature_rs(self) -> tuple[int, int]:
        r = self.raw[SIGNED_SIZE : SIGNED_SIZE + _COMPONENT_SIZE]
        s = self.raw[SIGNED_SIZE + _COMPONENT_SIZE : SIGNED_SIZE + 2 * _COMPONENT_SIZE]
        return int.from_bytes(r, "little"), int.from_bytes(s, "little")


def product_from_cpuid(family: int, model: int) -> str | None:
    """Milan is family 19h models 00h-0Fh; Genoa 19h 10h-1Fh and A0h-AFh; Turin 1Ah 00h-1Fh."""
    if family == 0x19 and model <= 0x0F:
        return "milan"
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return "genoa"
    if family == 0x1A and model <= 0x1F:
        return "turin"
    return None


# GUIDs of the certificate table entries (GHCB specification).
CERT_GUIDS = {
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea"): "crl",
}
_ENTRY = struct.Struct("<16sII")


def parse_cert_table(table: bytes) -> dict[str, bytes]:
    """The certificates of an extended report's table, by name (``vcek``, ``ask``, ...).

    Entries with GUIDs not listed in ``CERT_GUIDS`` are skipped. ValueError if the
    table is malformed: no terminator, an entry outside the table, a name twice.
    """
    found: dict[str, bytes] = {}
    for index in range(len(table) // _ENTRY.size):
        raw_guid, offset, length = _ENTRY.unpack_from(table, index * _ENTRY.size)
        if raw_guid == bytes(16) and offset == 0 and length == 0:
            return found
        # GUIDs are stored in the UEFI layout: the first three fields little-endian.
        name = CERT_GUIDS.get(uuid.UUID(bytes_le=raw_guid))
        if name is None:
            continue
        if length == 0 or offset + length > len(table):
            raise ValueError(f"certificate table entry {name} lies outside the table")
        if name in found:
            raise ValueError(f"certificate table lists {name} twice")
        found[name] = table[offset : offset + length]
    raise ValueError("certificate table has no terminating entry")
