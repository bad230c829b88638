"""The ``trustserve`` command. Each area registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from trustserve.logs import setup as setup_logging

# Each module has ``register(subparsers)`` (returning the groups it owns that others may
# add to, if any) and may name in ``EXTENDS`` a function adding its subcommands to such a
# group; a subcommand sets ``func(args) -> int``.
COMMAND_MODULES = (
    "trustserve.stack.cli",
    "trustserve.models.cli",
    "trustserve.attestation.cli",
    "trustserve.kms.cli",
    "trustserve.kms.declare",
    "trustserve.client.cli",
    "trustserve.stack.redis_setup",
    "trustserve.stack.torchserve",
    "trustserve.transparency.cli",
    "trustserve.transparency.log_cli",
)

# the commands whose start-up time users wait on: parsing them imports their module only
# (not the model tools' onnx and PIL, nor the client SDK)
FAST_COMMANDS = {
    "up": COMMAND_MODULES[0],
    "serve": COMMAND_MODULES[0],
    "worker": COMMAND_MODULES[0],
}


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trustserve", description="Privacy-preserving, attested model serving."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, the Python traceback too (also accepted after the command)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    loaded = []
    groups: dict[str, Any] = {}  # command groups that other areas add subcommands to
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        groups.update(module.register(sub) or {})
        loaded.append(module)
    for module in loaded:  # e.g. the KMS's ``model encrypt``: arrows point down, from here
        for group, function in getattr(module, "EXTENDS", {}).items():
            if group in groups:
                function(groups[group])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in words  # a global flag: wherever it is written
    words = [w for w in words if w != "--debug"]
    command = next((w for w in words if not w.startswith("-")), None)
    fast = FAST_COMMANDS.get(command or "")
    parser = build_parser((fast,) if fast else COMMAND_MODULES)
    args = parser.parse_args(words)
    setup_logging(args.verbose)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every failure: one line, the traceback only when asked
        if debug:
            traceback.print_exc()
        from trustserve.cli_errors import one_line

        print(f"trustserve: error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
