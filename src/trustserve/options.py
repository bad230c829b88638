"""Options defined once: a dataclass field whose metadata says how a user sets it.

``option(30.0, flag=Flag("--timeout", "request deadline in seconds", {"type": float}),
key="limits.timeout_s", parse=number)`` declares a field's default, its command-line flag
and help, its key in ``trustserve.yaml`` and so its environment variable
(``TRUSTSERVE_LIMITS_TIMEOUT_S``). ``WorkerOptions`` and the stack's ``Settings`` are made
of such fields; argparse, the configuration file's schema, ``trustserve config show`` and
the table in docs/configuration.md are generated from them (``options_of``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "TRUSTSERVE_"


class DeprecatedFlag(argparse.Action):
    """An old spelling: stores like the new one, and says on stderr which one to use."""

    def __init__(self, option_strings: Sequence[str], dest: str, use: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, **kw)
        self.use = use

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"trustserve: warning: {option_string} is deprecated, use {self.use}",
            file=sys.stderr,
            flush=True,
        )
        setattr(namespace, self.dest, values)


@dataclass(frozen=True)
class Flag:
    """One command-line option: its spelling, help and argparse settings."""

    flag: str
    help: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # add_argument's others
    deprecated: tuple[str, ...] = ()  # old spellings: still accepted, with a warning

    def add_to(self, parser: argparse.ArgumentParser, dest: str, default: Any = None) -> None:
        self.add_with_help(parser, dest, default, self.help)

    def add_with_help(
        self, parser: argparse.ArgumentParser, dest: str, default: Any, help: str
    ) -> None:
        parser.add_argument(self.flag, dest=dest, default=default, help=help, **self.kwargs)
        for old in self.deprecated:
            parser.add_argument(
                old,
                dest=dest,
                default=default,
                help=argparse.SUPPRESS,
                action=DeprecatedFlag,
                use=self.flag,
                **{k: v for k, v in self.kwargs.items() if k != "action"},
            )


Show = Callable[[Any, Any], Any]  # (the value, the whole settings) -> what config show prints


@dataclass(frozen=True)
class Spec:
    """What a field's metadata holds: how users set it (any of these may be absent)."""

    flag: Flag | None = None
    key: str | None = None  # dotted, in trustserve.yaml
    parse: Callable[[Any], Any] | None = None  # a value from the file or the environment
    dest: str | None = None  # the argparse destination, when not the field's name
    default_text: str | None = None  # the default as users read it, when not the value
    show: Show | None = None
    help: str | None = None  # for an option with no flag (the flag's help otherwise)


def option(
    default: Any = MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    flag: Flag | None = None,
    key: str | None = None,
    parse: Callable[[Any], Any] | None = None,
    dest: str | None = None,
    default_text: str | None = None,
    show: Show | None = None,
    help: str | None = None,
) -> Any:
    """A dataclass field with its ``Spec``."""
    meta = {"option": Spec(flag, key, parse, dest, default_text, show, help)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Option:
    """One field of ``owner`` seen as a user-settable option."""

    owner: type
    name: str  # the field's
    spec: Spec
    default: Any

    @property
    def dest(self) -> str:
        return self.spec.dest or self.name

    @property
    def key(self) -> str | None:
        return self.spec.key

    @property
    def env(self) -> str | None:
        return None if self.key is None else ENV_PREFIX + self.key.upper().replace(".", "_")

    @property
    def flag(self) -> str | None:
        return None if self.spec.flag is None else self.spec.flag.flag

    @property
    def default_text(self) -> str:
        """The default as the help and the docs say it ("" for none worth saying)."""
        if self.spec.default_text is not None:
            return self.spec.default_text
        return format_value(self.default)

    @property
    def meaning(self) -> str:
        return self.spec.flag.help if self.spec.flag is not None else self.spec.help or ""

    @property
    def help(self) -> str:
        """The flag's help with the default."""
        text, default = self.meaning, self.default_text
        if not default or isinstance(self.default, bool):
            return text
        return f"{text} (default {default})"

    def add_to(self, parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
        """The flag; with ``defaults=False`` one not given stays None (the environment, the
        file or the default decides)."""
        if self.spec.flag is not None:
            default = self.default if defaults else None
            self.spec.flag.add_with_help(parser, self.dest, default, self.help)

    def parse(self, value: Any) -> Any:
        return value if self.spec.parse is None else self.spec.parse(value)

    def shown(self, value: Any, settings: Any) -> Any:
        return value if self.spec.show is None else self.spec.show(value, settings)


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    return str(value)


def options_of(cls: type, only: Iterable[str] | None = None) -> list[Option]:
    """The options of dataclass ``cls`` (of ``only`` these fields), in field order."""
    wanted = None if only is None else set(only)
    found = []
    for f in fields(cls):
        spec = f.metadata.get("option")
        if spec is None or (wanted is not None and f.name not in wanted):
            continue
        default = f.default
        if default is MISSING:
            default = None if f.default_factory is MISSING else f.default_factory()
        found.append(Option(cls, f.name, spec, default))
    return found


# values from the file or the environment (a string there), checked by type


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no"):
        return value.lower() in ("1", "true", "yes", "on")
    raise ValueError("expected true or false")


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("expected an integer")
    return int(value)


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a number")
    return float(value)


def text(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError("expected a string")
    return str(value)


def path(value: Any) -> Path:
    return Path(text(value)).expanduser()


def names(value: Any) -> tuple[str, ...]:
    """A list of names in the file, ``a,b`` in the environment."""
    if isinstance(value, str):
        return tuple(n.strip() for n in value.split(",") if n.strip())
    if isinstance(value, list | tuple):
        return tuple(text(v) for v in value)
    raise ValueError("expected a list of names")


def counts(value: Any) -> tuple[str, ...]:
    """Worker counts by model, as ``name=N`` (or ``name:version=N``): a mapping in the file,
    ``a=2,b:1=1`` in the environment."""
    if isinstance(value, Mapping):
        items = [(text(k), v) for k, v in value.items()]
    elif isinstance(value, str):
        items = [(p.rpartition("=")[0], p.rpartition("=")[2]) for p in value.split(",")]
    else:
        raise ValueError("expected a mapping of model: worker count")
    found = []
    for name, count in items:
        name = str(name).strip()
        try:
            n = integer(count.strip() if isinstance(count, str) else count)
        except ValueError:
            n = -1
        if not name or not 0 <= n <= 64:
            raise ValueError(f"{name or 'a model'}: expected a worker count from 0 to 64")
        found.append(f"{name}={n}")
    return tuple(found)


def pairs(value: Any) -> tuple[str, ...]:
    """Provider options: a mapping in the file, ``K=V;K=V`` in the environment."""
    if isinstance(value, Mapping):
        return tuple(f"{k}={text(v)}" for k, v in value.items())
    if isinstance(value, str):
        return tuple(p for p in value.split(";") if p)
    if isinstance(value, list | tuple):
        return tuple(text(v) for v in value)
    raise ValueError("expected a mapping of option: value")
