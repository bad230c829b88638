"""``trustserve import-torchserve``: a TorchServe model store and its ``config.properties``
moved over in one command.

Every ``.mar`` in the store (or those ``load_models`` names) is imported as ``model
import-mar`` imports one (``models.mar``: TorchScript or eager, stock
``image_classifier`` handler, only with ``--trust-model-code``), with the batching the
configuration gives it written into its manifest; the rest of the configuration becomes
``OUT/trustserve.yaml`` (``models.torchserve_config`` says which key becomes what), with
``model_store: OUT/models``. Every key that has no meaning here is reported with the
reason. ``OUT`` defaults to the home directory, whose ``trustserve.yaml`` ``serve`` reads.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trustserve import files
from trustserve.archive import Manifest
from trustserve.errors import ConfigError
from trustserve.home import config_file, home_or_default
from trustserve.models.torchserve_config import Entry, ModelSettings, Translation
from trustserve.stack import configfile

HEADER = "# written by `trustserve import-torchserve` (docs/migrating-from-torchserve.md)\n"


@dataclass
class Imported:
    mar: str
    archive: Path
    name: str
    version: str
    batch_size: int
    max_batch_delay_ms: float
    max_abs_diff: float


@dataclass
class Report:
    config: Path
    models: list[Imported] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": str(self.config),
            "models": [{**vars(m), "archive": str(m.archive)} for m in self.models],
            "settings": self.settings,
            "translated": [
                {"key": e.key, "to": list(e.to), "note": e.why}
                for e in self.entries
                if not e.ignored
            ],
            "ignored": [{"key": e.key, "why": e.why} for e in self.entries if e.ignored],
        }


def register(sub: Any) -> None:
    p = sub.add_parser(
        "import-torchserve",
        help="import a TorchServe model store (every .mar) and its config.properties into a "
        "model store and trustserve.yaml; needs --trust-model-code",
    )
    p.add_argument("store", type=Path, nargs="?", help="TorchServe's model store (a folder)")
    p.add_argument("--config", type=Path, help="TorchServe's config.properties")
    p.add_argument(
        "--out",
        type=Path,
        help="where to write models/ and trustserve.yaml (default: the home directory)",
    )
    p.add_argument("--home", type=Path, help="state directory (the default --out)")
    p.add_argument("--force", action="store_true", help="replace an existing trustserve.yaml")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    from trustserve.models.cli import trust_flags

    trust_flags(p)
    p.set_defaults(func=cmd_import_torchserve)


def cmd_import_torchserve(args: argparse.Namespace) -> int:
    from trustserve.models.cli import warn_trust
    from trustserve.models.torchserve_config import read_properties, translate

    t = translate(read_properties(args.config) if args.config else {})
    store = args.store or (Path(t.model_store) if t.model_store else None)
    if store is None:
        raise ConfigError("import-torchserve needs the model store (or model_store= in --config)")
    out = args.out or home_or_default(args.home)
    report = import_store(
        store,
        t,
        out,
        trust_code=args.trust_code,
        sandbox=not args.insecure_no_sandbox,
        force=args.force,
        warn=lambda mar: warn_trust(args, mar),
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print("\n".join(report_lines(report)))
    return 0


def import_store(
    store: Path,
    t: Translation,
    out: Path,
    *,
    trust_code: bool,
    sandbox: bool = True,
    force: bool = False,
    warn: Callable[[Path], None] | None = None,
) -> Report:
    """Imports the archives of ``store`` into ``out/models`` and writes ``out/trustserve.yaml``;
    ``warn(mar)`` is called before each conversion (the trust warnings)."""
    from trustserve.models.mar import import_mar, read_mar
    from trustserve.models.packing import pack_model
    from trustserve.models.torch_import import refuse_untrusted

    config = config_file(out)
    if config.exists() and not force:
        raise ConfigError(f"{config} exists: give --force to replace it, or another --out")
    mars = _archives(store, t.load)
    models = out / "models"
    report = Report(config)
    workers: dict[str, int] = {}
    read = [(mar, read_mar(mar)) for mar in mars]  # every archive readable before any work
    seen: dict[tuple[str, str], str] = {}
    for mar, c in read:
        other = seen.setdefault((c.name, c.version), mar.name)
        if other != mar.name:
            raise ConfigError(
                f"{other} and {mar.name} both hold {c.name} version {c.version}: a store "
                "serves each model version once (load_models can choose one)"
            )
    if not trust_code:
        refuse_untrusted(read[0][0].name, read[0][1].kind)
    for mar, contents in read:
        wanted = t.for_model(mar.name, contents.name, contents.version)
        if warn is not None:
            warn(mar)
        _, manifest, exported = import_mar(mar, trust_code=trust_code, sandbox=sandbox)
        manifest = _batching(manifest, wanted)
        if wanted.workers is not None:
            workers[f"{manifest.name}:{manifest.version}"] = wanted.workers
        target = models / f"{mar.stem}.tsm"
        files.write_atomic(target, pack_model(exported.onnx_bytes, manifest))
        report.models.append(
            Imported(
                mar.name,
                target,
                manifest.name,
                manifest.version,
                manifest.max_batch_size,
                manifest.max_batch_delay_ms,
                exported.max_abs_diff,
            )
        )
    settings = dict(t.settings)
    settings["model_store"] = str(models.resolve())
    if workers:
        settings["worker.models"] = workers
    served = [m for m in report.models if workers.get(f"{m.name}:{m.version}") != 0]
    settings["readiness.require"] = sorted({f"{m.name}:{m.version}" for m in served})
    for key, value in settings.items():  # every key one trustserve knows, every value its type
        configfile.BY_NAME[key].parse(value)
    text = HEADER + yaml.safe_dump(_nested(settings), sort_keys=True)
    files.write_atomic(config, text.encode())
    configfile.read_file(config)  # and the file reads back as written
    report.settings = settings
    report.entries = list(t.entries)
    return report


def _archives(store: Path, load: tuple[str, ...] | None) -> list[Path]:
    if not store.is_dir():
        raise ConfigError(f"model store {store} is not a directory")
    found = sorted(store.glob("*.mar"))
    if load is not None:
        missing = sorted(set(load) - {p.name for p in found})
        if missing:
            raise ConfigError(f"load_models names {', '.join(missing)}, not in {store}")
        found = [p for p in found if p.name in load]
    if not found:
        raise ConfigError(f"no .mar archives in {store}")
    return found


def _batching(manifest: Manifest, wanted: ModelSettings) -> Manifest:
    raw = manifest.to_json()
    if wanted.batch_size is not None:
        raw["max_batch_size"] = wanted.batch_size
    if wanted.max_batch_delay_ms is not None:
        raw["max_batch_delay_ms"] = wanted.max_batch_delay_ms
    if wanted.default_version is not None:
        raw["extra"] = {**raw.get("extra", {}), "default_version": wanted.default_version}
    return Manifest.from_json(raw)


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return tree


def report_lines(r: Report) -> list[str]:
    lines = []
    for m in r.models:
        lines.append(
            f"imported {m.mar} -> {m.archive} ({m.name} version {m.version}, batches of up to "
            f"{m.batch_size}, {m.max_batch_delay_ms:g} ms; torch and ONNX Runtime agree "
            f"within {m.max_abs_diff:.2g})"
        )
    lines.append(f"wrote {r.config}:")
    lines += [f"  {k}: {json.dumps(v)}" for k, v in sorted(r.settings.items())]
    done = [e for e in r.entries if not e.ignored]
    if done:
        lines.append("translated:")
        lines += [
            f"  {e.key} -> {', '.join(e.to)}" + (f" ({e.why})" if e.why else "") for e in done
        ]
    ignored = [e for e in r.entries if e.ignored]
    lines.append(f"ignored ({len(ignored)}):" if ignored else "ignored: nothing")
    lines += [f"  {e.key}: {e.why}" for e in ignored]
    lines.append(
        f"try them: trustserve serve --config {r.config} (plaintext mode); to serve them "
        "encrypted, see docs/migrating-from-torchserve.md"
    )
    return lines
