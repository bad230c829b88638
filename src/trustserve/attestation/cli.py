"""The attestation commands, one place for all three.

``trustserve attest`` (make evidence) and ``trustserve verify`` (check it against a policy).

``verify`` prints a JSON object with the verdict and, when the evidence itself
verified, its claims; it exits 0 accepted, 1 refused, 2 unusable input.

``trustserve policy``: write a release policy from measurements, so nobody types hex into YAML.

    trustserve policy --sigstruct trustserve-worker.sig --tdx-quote td.quote \\
        --snp-measurement 5fb1... --tpm-evidence vm.json -o release-policy.yaml

Every source adds one measurement set (``trustserve.attestation.policy.reference_values``);
``--base`` starts from an existing policy (its other settings and sets are kept).
The result is loaded back with ``Policy.from_mapping`` before it is written, so the
command never writes a policy the KMS would refuse to load. ``--declare-to KMS_URL``
also appends each set it built (with ``--declare-digest``, the image's digest) to that
KMS's transparency log (``trustserve.kms.declare``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from trustserve import files
from trustserve.attestation.base import Claims, Evidence, unb64
from trustserve.attestation.flags import PROVIDER, add_verifier_arguments, verifier_sources
from trustserve.attestation.formats.snp_report import PRODUCTS
from trustserve.attestation.policy import Policy
from trustserve.attestation.policy import reference_values as ref
from trustserve.attestation.registry import make_provider, make_verifier
from trustserve.attestation.verifiers.dcap.collateral import FixedCollateral
from trustserve.errors import AttestationRefused, BadRequest, ConfigError
from trustserve.home import HOME_HELP, home_or_default


def register(subparsers: Any) -> dict[str, Any]:
    _register_evidence(subparsers)
    # ``policy`` is extended by the KMS's ``--declare-to`` (``trustserve.kms.declare``)
    return {"policy": _register_policy(subparsers)}


def _register_evidence(subparsers: Any) -> None:
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


def _register_policy(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "policy", help="write a release policy from sigstructs, quotes, measurements, TPM evidence"
    )
    p.add_argument("-o", "--output", type=Path, help="policy YAML to write (default: stdout)")
    p.add_argument("--base", type=Path, help="start from this policy (keep its sets and settings)")
    sgx = p.add_argument_group("SGX (Gramine)")
    sgx.add_argument("--sigstruct", type=Path, action="append", default=[], help="a .sig file")
    sgx.add_argument("--sgx-quote", type=Path, action="append", default=[], help="quote or JSON")
    sgx.add_argument(
        "--sgx-by-signer",
        action="store_true",
        help="pin mrsigner + isv_prod_id + isv_svn_min (any later version by that signer) "
        "instead of this exact mrenclave",
    )
    tdx = p.add_argument_group("TDX")
    tdx.add_argument("--tdx-quote", type=Path, action="append", default=[], help="quote or JSON")
    tdx.add_argument(
        "--tdx-also",
        action="append",
        default=[],
        choices=sorted(ref.TDX_OPTIONAL),
        help="from a quote: pin this field too (repeat), e.g. mr_config_id for CoCo's initdata",
    )
    for name in ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"):
        tdx.add_argument(f"--tdx-{name}", metavar="HEX", help=f"{name} (48 bytes)")
    snp = p.add_argument_group("SEV-SNP")
    snp.add_argument("--snp-measurement", metavar="HEX", help="launch measurement (48 bytes)")
    snp.add_argument(
        "--snp-report", type=Path, action="append", default=[], help="report or evidence JSON"
    )
    snp.add_argument("--snp-host-data", metavar="HEX", help="HOST_DATA to pin (32 bytes)")
    snp.add_argument("--snp-ovmf", type=Path, help="compute it from this OVMF (sev-snp-measure)")
    snp.add_argument("--snp-kernel", type=Path, help="direct-boot kernel")
    snp.add_argument("--snp-initrd", type=Path, help="direct-boot initrd")
    snp.add_argument("--snp-append", help="kernel command line")
    snp.add_argument("--snp-vcpus", type=int, default=1, help="vCPUs of the guest (default 1)")
    snp.add_argument("--snp-vcpu-type", default="EPYC-v4", help="QEMU vCPU type (default EPYC-v4)")
    snp.add_argument("--snp-guest-features", type=lambda s: int(s, 0), default=0x1)
    tpm = p.add_argument_group("TPM (Azure / GCP confidential VMs)")
    tpm.add_argument(
        "--tpm-evidence", type=Path, action="append", default=[], help="`trustserve attest` JSON"
    )
    tpm.add_argument(
        "--no-pin-ak", action="store_true", help="do not add the evidence's AK to the policy"
    )
    p.add_argument("--allow-debug", action="store_true", help="TESTING ONLY: debug TEEs")
    p.add_argument(
        "--accept-tcb-status",
        action="append",
        default=None,
        metavar="STATUS",
        help="accepted TCB status (repeat; default UpToDate)",
    )
    p.add_argument(
        "--accept-advisory",
        action="append",
        default=None,
        metavar="ID",
        help="accepted security advisory, e.g. INTEL-SA-00615 (repeat; default none)",
    )
    p.add_argument("--max-evidence-age", type=float, help="seconds (default 300)")
    p.set_defaults(func=_policy)
    return p


def measurement_sets(args: argparse.Namespace) -> tuple[list[ref.Set], list[str]]:
    """The sets the arguments name, and the TPM AKs to pin."""
    debug = args.allow_debug
    sets: list[ref.Set] = []
    sets += [ref.sgx_from_sigstruct(f, args.sgx_by_signer, debug) for f in args.sigstruct]
    sets += [ref.sgx_from_quote(f, args.sgx_by_signer, debug) for f in args.sgx_quote]
    sets += [ref.tdx_from_quote(f, tuple(args.tdx_also), debug) for f in args.tdx_quote]
    sets += [ref.snp_from_report(f, debug) for f in args.snp_report]
    tdx_values = {
        n: getattr(args, f"tdx_{n}") for n in ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3")
    }
    if any(tdx_values.values()):
        sets.append(ref.tdx_from_values(tdx_values))
    if args.snp_measurement and args.snp_ovmf:
        raise ConfigError("give --snp-measurement or --snp-ovmf, not both")
    if args.snp_ovmf:
        args.snp_measurement = ref.snp_launch_measurement(
            args.snp_ovmf,
            args.snp_vcpus,
            args.snp_vcpu_type,
            args.snp_kernel,
            args.snp_initrd,
            args.snp_append,
            args.snp_guest_features,
        )
    elif args.snp_kernel or args.snp_initrd or args.snp_append:
        raise ConfigError("--snp-kernel/--snp-initrd/--snp-append need --snp-ovmf")
    if args.snp_measurement:
        sets.append(ref.snp_from_measurement(args.snp_measurement, args.snp_host_data))
    elif args.snp_host_data:
        raise ConfigError("--snp-host-data needs --snp-measurement or --snp-ovmf")
    aks = []
    for path in args.tpm_evidence:
        tpm_set, ak = ref.tpm_from_evidence(path)
        sets.append(tpm_set)
        if not args.no_pin_ak:
            aks.append(ak)
    return sets, aks


def build_policy(args: argparse.Namespace) -> tuple[dict[str, Any], list[ref.Set]]:
    """The policy to write, and the measurement sets the arguments named (not --base's)."""
    sets, aks = measurement_sets(args)
    if not sets:
        raise ConfigError(
            "no measurements given: name a --sigstruct, --sgx-quote, --tdx-quote, --tdx-mrtd..., "
            "--snp-report/--snp-measurement/--snp-ovmf or --tpm-evidence"
        )
    policy: dict[str, Any] = {}
    if args.base is not None:
        policy = Policy.load(args.base).to_json()
    policy.setdefault("accepted_tcb_statuses", ["UpToDate"])
    if args.accept_tcb_status:
        policy["accepted_tcb_statuses"] = args.accept_tcb_status
    if args.accept_advisory:
        policy["accepted_advisories"] = args.accept_advisory
    if args.max_evidence_age is not None:
        policy["max_evidence_age_s"] = args.max_evidence_age
    if args.allow_debug:
        policy["allow_debug"] = True
    known = policy.setdefault("measurements", [])
    known += [s for s in sets if s not in known]
    if aks:
        pinned = policy.setdefault("tpm_ak_names", [])
        pinned += [ak for ak in aks if ak not in pinned]
    Policy.from_mapping(policy)  # the KMS must be able to load what we write
    return {k: v for k, v in policy.items() if v not in ([], None)}, sets


class _Dumper(yaml.SafeDumper):
    """PEM keys as readable literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _policy(args: argparse.Namespace) -> int:
    policy, sets = build_policy(args)
    # an extension (``--declare-to``) checks its arguments now and acts once it is written
    built: Callable[[argparse.Namespace, list[ref.Set]], Callable[[], None]] | None
    built = getattr(args, "policy_built", None)
    then = built(args, sets) if built is not None else (lambda: None)
    text = yaml.dump(policy, Dumper=_Dumper, sort_keys=False, width=100)
    if args.output is None:
        sys.stdout.write(text)
        then()
        return 0
    files.write_atomic(args.output, text.encode())
    then()
    count = text.count("tee:")
    print(f"wrote {args.output} ({count} measurement set{'s' * (count != 1)})", file=sys.stderr)
    if args.sgx_quote or args.tdx_quote:
        print(
            "note: values were read from the quotes, whose signatures were not checked here; "
            "check the evidence with `trustserve verify` too",
            file=sys.stderr,
        )
    return 0
