"""``${VAR}`` and ``${VAR:-default}`` in config strings, filled from the environment.

Owns: expanding the raw (just parsed TOML or YAML) tree before the schema sees
it, and naming the key path of every variable that is unset and has no default.
Only strings are expanded, wherever they sit (tables, lists, credential
values); ``$${`` stands for a literal ``${``. A bare ``$NAME`` is left alone, so
a value that merely contains a dollar sign means what it says.

Must not touch: the schema's types or ranges (a ``port = "${PORT}"`` is still a
string where an integer belongs), files, secrets' sources.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

# $${ (an escaped literal), or ${NAME} / ${NAME:-default} (default: anything but "}")
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_UNCLOSED = re.compile(r"(?<!\$)\$\{(?![A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\})")


def expand_env(raw: Any, environ: Mapping[str, str], path: str = "") -> tuple[Any, list[str]]:
    """``raw`` with every string expanded, and ``key.path: problem`` lines for what could not be."""
    problems: list[str] = []
    return _expand(raw, environ, path, problems), problems


def _expand(raw: Any, environ: Mapping[str, str], path: str, problems: list[str]) -> Any:
    if isinstance(raw, str):
        return _expand_string(raw, environ, path or "<root>", problems)
    if isinstance(raw, dict):
        return {k: _expand(v, environ, f"{path}.{k}" if path else str(k), problems) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_expand(v, environ, f"{path}[{i}]", problems) for i, v in enumerate(raw)]
    return raw


def _expand_string(text: str, environ: Mapping[str, str], path: str, problems: list[str]) -> str:
    if "${" not in text:
        return text
    if _UNCLOSED.search(text.replace("$${", "")):
        problems.append(f"{path}: malformed ${{...}} reference; write ${{NAME}} or ${{NAME:-default}} "
                        "(and $${ for a literal ${)")
        return text

    def substitute(m: re.Match) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        value = environ.get(name)
        if value is not None and (value or default is None):
            return value        # like the shell's :-, an empty variable takes the default
        if default is not None:
            return default
        problems.append(f"{path}: environment variable {name} is not set "
                        f"(write ${{{name}:-default}} to give it a default)")
        return ""

    return _REFERENCE.sub(substitute, text)
