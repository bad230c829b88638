"""Every option of ``up``, ``serve`` and ``worker``, as the one definition of each says.

The definitions are the fields of ``Settings`` (the stack's) and ``WorkerOptions`` (what
each worker starts with) that name a ``trustserve.yaml`` key. From them come the flags
of ``up`` / ``serve`` / ``config show`` (``add_serve_arguments``), the configuration
file's schema and ``TRUSTSERVE_*`` variables (``configfile.KEYS``), the settings a
command runs with (``settings_from``), what ``config show`` prints (``effective``) and
the table of options in docs/configuration.md (``docs_table``; a test compares them).
Run ``python -m trustserve.stack.options`` to print that table.
"""

from __future__ import annotations

import argparse
from typing import Any

from trustserve.home import default_home
from trustserve.options import Option, format_value, options_of
from trustserve.stack.config import Settings
from trustserve.worker.options import WorkerOptions

# the worker options that ``up`` and ``serve`` pass on to their local workers
WORKER_FLAGS = (
    "home",
    "engine",
    "threads",
    "lone_threads",
    "kms",
    "kms_ca",
    "kms_identity",
    "kms_policy",
    "attestation",
    "attestation_options",
    "replay_window",
    "broker_spread",
    "key_refresh",
    "collateral_dir",
    "pccs_url",
    "vcek_dir",
    "kds_url",
)


def stack_options() -> list[Option]:
    """Every option with a configuration-file key, by key."""
    found = [o for o in (*options_of(Settings), *options_of(WorkerOptions)) if o.key]
    return sorted(found, key=lambda o: o.key or "")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``up`` / ``serve``; one not given stays None: the environment, the
    file or the default decides."""
    for opt in (*options_of(WorkerOptions, WORKER_FLAGS), *options_of(Settings)):
        opt.add_to(parser, defaults=False)


def settings_from(args: argparse.Namespace) -> Settings:
    """``Settings`` from ``args`` as ``configfile.apply`` merged them (None: the default)."""
    s = Settings(home=getattr(args, "home", None) or default_home())
    for opt in options_of(Settings):
        value = getattr(args, opt.dest, None)
        if value is not None:
            setattr(s, opt.name, value)
    s.worker = WorkerOptions.from_args(args, home=s.home)
    return s


def value_of(opt: Option, settings: Settings) -> Any:
    return getattr(settings.worker if opt.owner is WorkerOptions else settings, opt.name)


def effective(settings: Settings) -> list[tuple[Option, Any]]:
    """Each option and the value ``config show`` prints for it."""
    return [(o, o.shown(value_of(o, settings), settings)) for o in stack_options()]


def docs_table() -> str:
    """The Markdown table of options in docs/configuration.md."""
    rows = [
        "| `trustserve.yaml` key | environment variable | flag | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for o in stack_options():
        flag = f"`{o.flag}`" if o.flag else "—"
        default = o.default_text or format_value(o.default) or "—"
        meaning = o.meaning.replace("|", "\\|")
        rows.append(f"| `{o.key}` | `{o.env}` | {flag} | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(docs_table(), end="")
