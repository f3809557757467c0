"""Every config key the schema accepts, as rows for ``docs/configuration.md``.

Owns: walking the schema's dataclasses into (key path, type, default, range)
rows. ``tests/test_docs.py`` compares these rows with the tables of
``docs/configuration.md``, so a key added to (or removed from) the schema
without its line in the documentation fails the suite, and so does a changed
default or range. ``python -m fastinfer.config.reference`` prints the rows
(meaning column empty) for whoever writes that line.

Must not touch: validation itself (``schema``), files other than stdout.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from .schema import Config
from .secrets import Secret


@dataclass(frozen=True)
class KeyRow:
    path: str       # deployments[].retry.max_attempts
    type: str       # integer
    default: str    # `3`, or "required", or "unset"
    range: str      # 1 … 20, ≥ 0, `a` | `b`, or ""

    def markdown(self, meaning: str = "") -> str:
        return f"| `{self.path}` | {self.type} | {self.default} | {self.range} | {meaning} |"


def key_rows(cls: type = Config, prefix: str = "") -> list[KeyRow]:
    """One row per leaf key; tables (and lists of tables) are walked into, not listed themselves."""
    rows: list[KeyRow] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        path = f"{prefix}{f.name}"
        tp = _unwrap_optional(hints[f.name])
        if tp is Secret:    # a dataclass too, but one value to the user: { env = ".." } and friends
            rows.append(KeyRow(path, "secret", _default(f), ""))
        elif dataclasses.is_dataclass(tp):
            rows += key_rows(tp, f"{path}.")
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            rows += key_rows(typing.get_args(tp)[0], f"{path}[].")
        else:
            rows.append(KeyRow(path, type_label(tp), _default(f), _range(f.metadata)))
    return rows


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def type_label(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return f"list of {type_label(typing.get_args(tp)[0])}s"
    return {int: "integer", float: "number", str: "string", bool: "boolean"}[tp]


def _default(f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:
        return f"`{_toml(f.default_factory())}`"
    if f.default is dataclasses.MISSING:
        return "required"
    if f.default is None:
        return "unset"
    return f"`{_toml(f.default)}`"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _range(meta: dict) -> str:
    if "choices" in meta:
        return " \\| ".join(f"`{c}`" for c in meta["choices"])
    low, high = meta.get("min"), meta.get("max")
    if low is not None and high is not None:
        return f"{_toml(low)} … {_toml(high)}"
    if low is not None:
        return f"≥ {_toml(low)}"
    if meta.get("hexdigest"):
        return "64 hex digits"
    if meta.get("listen_host"):
        return "IP address or host name"
    if meta.get("url"):
        return "http(s) URL"
    if meta.get("nonempty"):
        return "not empty"
    return ""


if __name__ == "__main__":
    print("| key | type | default | range | meaning |\n|---|---|---|---|---|")
    for row in key_rows():
        print(row.markdown())
