"""``trustserve attest`` (make evidence) and ``trustserve verify`` (check it against a policy).

``verify`` prints a JSON object with the verdict and, when the evidence itself
verified, its claims; it exits 0 accepted, 1 refused, 2 unusable input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from trustserve import files
from trustserve.attestation.base import Claims, Evidence, unb64
from trustserve.attestation.formats.snp_report import PRODUCTS
from trustserve.attestation.policy import Policy
from trustserve.attestation.registry import make_provider, make_verifier
from trustserve.attestation.verifiers.dcap.collateral import FixedCollateral
from trustserve.cli_options import PROVIDER, add_verifier_arguments, verifier_sources
from trustserve.errors import AttestationRefused, BadRequest
from trustserve.home import HOME_HELP, home_or_default


def register(subparsers: Any) -> None:
    attest = subparsers.add_parser("attest", help="make attestation evidence for report data")
    PROVIDER.add_to(attest, "provider")
    attest.add_argument("--report-data", help="hex, at most 64 bytes")
    attest.add_argument("-o", "--output", type=Path, help="evidence JSON file")
    attest.add_argument(
        "--sim-key",
        action="store_true",
        help="print the home's sim platform public key (hex, for kms serve --sim-platform-key)",
    )
    attest.add_argument("--home", type=Path, help=f"{HOME_HELP}: its sim platform key")
    attest.add_argument("--tcti", help="tpm: TCTI, e.g. swtpm:host=127.0.0.1,port=2321")
    attest.add_argument("--pcrs", help="tpm: comma-separated PCR indices (default 0-7)")
    attest.add_argument("--ak-handle", help="tpm: persistent AK handle (Azure: 0x81000003)")
    attest.add_argument("--ak-template-nv", help="tpm: NV index of an AK template (GCP)")
    attest.add_argument("--ak-cert-nv", help="tpm: NV index of the AK certificate (0x01C101D0)")
    attest.add_argument("--ak-cert-intermediates", help="tpm: PEM file of intermediate CAs")
    attest.add_argument("--tsm-root", type=Path, help="tdx/sev-snp: configfs-tsm report dir")
    attest.add_argument("--attestation-dir", type=Path, help="sgx: Gramine /dev/attestation")
    attest.set_defaults(func=_attest)

    verify = subparsers.add_parser("verify", help="verify evidence against a policy")
    verify.add_argument("evidence", type=Path, help="evidence JSON file")
    verify.add_argument("--policy", required=True, type=Path, help="policy YAML file")
    verify.add_argument("--now", type=float, help="verify as of this unix time (default: now)")
    verify.add_argument("--collateral", type=Path, help="sgx/tdx: one collateral JSON file")
    add_verifier_arguments(verify)
    verify.add_argument("--report-data", help="hex the evidence must be bound to")
    verify.add_argument(
        "--snp-product",
        action="append",
        choices=PRODUCTS,
        help="sev-snp: accept only this AMD product line's root (repeatable; default all)",
    )
    verify.set_defaults(func=_verify)


def _hex_arg(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BadRequest(f"{what} is not hex") from None


def _home(args: argparse.Namespace) -> Path:
    return home_or_default(args.home)


def _attest(args: argparse.Namespace) -> int:
    if args.sim_key:
        from trustserve.attestation.sim_platform import platform_public_key

        print(platform_public_key(_home(args)).hex())
        return 0
    missing = [f for f, v in (("--provider", args.provider), ("--report-data", args.report_data),
                              ("-o/--output", args.output)) if v is None]  # fmt: skip
    if missing:
        raise BadRequest(f"attest needs {', '.join(missing)} (or --sim-key)")
    options: dict[str, Any] = {}
    if args.tcti:
        options["tcti"] = args.tcti
    for key in ("pcrs", "ak_handle", "ak_template_nv", "ak_cert_nv", "ak_cert_intermediates"):
        if getattr(args, key):
            options[key] = getattr(args, key)
    if args.tsm_root:
        options["root"] = args.tsm_root
    if args.attestation_dir:
        options["attestation_dir"] = args.attestation_dir
    provider = make_provider(args.provider, _home(args), **options)
    evidence = provider.make(_hex_arg(args.report_data, "--report-data"))
    files.write_atomic(args.output, json.dumps(evidence.to_json(), indent=2).encode() + b"\n")
    if evidence.kind == "sim":
        print("trustserve: warning: sim evidence is not hardware-protected", file=sys.stderr)
    if evidence.kind == "tpm":
        from trustserve.attestation.verifiers.tpm.verifier import ak_name_of

        print("TPM attestation key Name (pin it in tpm_ak_names):", file=sys.stderr)
        print(ak_name_of(evidence), file=sys.stderr)
        if "ak_cert" in evidence.data:
            from cryptography import x509

            cert = x509.load_der_x509_certificate(unb64(evidence.data["ak_cert"], "ak_cert"))
            print(
                f"AK certificate: subject {cert.subject.rfc4514_string()}, issued by "
                f"{cert.issuer.rfc4514_string()} (list that CA in tpm_ak_ca_certs)",
                file=sys.stderr,
            )
    return 0


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise BadRequest(f"cannot read {what} {path}: {exc.strerror}") from None
    except ValueError:
        raise BadRequest(f"{what} {path} is not JSON") from None


def _verify(args: argparse.Namespace) -> int:
    evidence = Evidence.from_json(_read_json(args.evidence, "evidence"))
    policy = Policy.load(args.policy)
    sources = verifier_sources(args, snp_products=args.snp_product)
    if args.collateral:
        collateral = _read_json(args.collateral, "collateral")
        if not isinstance(collateral, dict):
            raise BadRequest("collateral must be a JSON object")
        sources = dataclasses.replace(sources, collateral=FixedCollateral(collateral))
    expected = _hex_arg(args.report_data, "--report-data") if args.report_data else None
    now = time.time() if args.now is None else args.now
    claims: Claims | None = None
    try:
        verifier = make_verifier(evidence.kind, policy, sources)
        claims = verifier.verify(evidence, expected, now)
        policy.check(claims, now)
    except AttestationRefused as exc:
        _print(claims, {"verdict": "refused", "claim": exc.claim, "detail": exc.detail})
        return 1
    _print(claims, {"verdict": "accepted"})
    return 0


def _print(claims: Claims | None, verdict: dict[str, Any]) -> None:
    out = dict(verdict)
    if claims is not None:
        out["claims"] = claims.to_json()
    print(json.dumps(out, indent=2))
