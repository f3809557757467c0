"""The fastinfer configs a bench run serves: bare, with every feature on, and the user's variants.

Owns: the configs (``with_settings`` puts a ``--gateway-config`` or ``--variant`` on the bare one),
and finding which of the features this source tree supports. The features
config asks for everything a production gateway would run with — a gateway key (the load generator
sends ``Authorization: Bearer bench``), the key's rpm/tpm limits and the deployment's upstream
``rate_limit`` (all far above anything a bench sends, so they are checked on every request and
never bind), and the JSON access log — and keeps what ``fastinfer check-config`` accepts: a
setting it refuses is dropped (and reported), a setting it accepts with a warning that it is not
in force yet is reported as such. So the same bench runs on a tree from before a feature and
picks the feature up on the tree that adds it.
Must not touch: the gateway's code; the config schema (it only asks ``check-config``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

#: the key the load generator sends (loadgen.http_request and the wrk script)
BENCH_KEY = "bench"
_NEVER_BINDS = 10 ** 9    # per minute (16 M/s): no bench comes near it (the most a limit may be is 6e10)

#: feature -> the config paths that make it (``a.b[0].c``)
FEATURES = {
    "gateway key": ["keys[0].name", "keys[0].key_sha256"],
    "key rpm/tpm limit": ["keys[0].rpm", "keys[0].tpm"],
    "deployment rate_limit": ["deployments[0].rate_limit"],
    "JSON access log": ["logging.format", "logging.access_log"],
}


def bare_config(upstream_port: int) -> dict:
    """One deployment on the mock; no keys, no limits, no access log (where the tree has one); warnings
    and errors only (``server.log_level`` or ``logging.level``, whichever the tree has)."""
    return {
        "server": {"log_level": "warning"},
        "logging": {"level": "warning", "access_log": False},
        "deployments": [{
            "name": "bench", "provider": "openai_compatible", "model": "mock-model",
            "max_concurrency": 100000, "retry": {"max_attempts": 1},
            "replicas": [{"base_url": f"http://127.0.0.1:{upstream_port}/v1", "credential": {"value": "sk-bench"}}],
        }],
    }


def features_config(upstream_port: int) -> dict:
    """``bare_config`` plus every feature of ``FEATURES``, set so that none ever binds."""
    config = bare_config(upstream_port)
    del config["server"]["log_level"]   # the access log is written at info level
    config["logging"] = {"level": "info", "format": "json", "access_log": True}
    config["keys"] = [{"name": "bench", "key_sha256": hashlib.sha256(BENCH_KEY.encode()).hexdigest(),
                       "rpm": _NEVER_BINDS, "tpm": _NEVER_BINDS}]
    config["deployments"][0]["rate_limit"] = {"rpm": _NEVER_BINDS, "tpm": _NEVER_BINDS}
    return config


def with_settings(config: dict, settings: dict) -> dict:
    """``config`` with ``settings`` (a parsed ``--gateway-config`` or ``--variant``) laid over it: a
    table merges into the table of the same name, any other value (an array of tables too) replaces."""
    out = copy.deepcopy(config)
    for key, value in settings.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = with_settings(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out

def limits_config(upstream_port: int) -> dict:
    """``bare_config`` plus a gateway key with rpm, tpm, max_concurrency and a budget, and the
    deployment's rate_limit and price — every limit checked on every request, none binding, no access
    log: what keys and limits alone cost (``--targets gateway gateway-limits``)."""
    config = bare_config(upstream_port)
    config["keys"] = [{"name": "bench", "key_sha256": hashlib.sha256(BENCH_KEY.encode()).hexdigest(),
                       "rpm": _NEVER_BINDS, "tpm": _NEVER_BINDS, "max_concurrency": 1_000_000,
                       "budget": {"usd": 1e9, "period": "month"}}]
    config["deployments"][0]["rate_limit"] = {"rpm": _NEVER_BINDS, "tpm": _NEVER_BINDS}
    config["deployments"][0]["price"] = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
    return config


# ------------------------------------------------------------------ what the tree accepts

def accepted_config(config: dict, path: Path, tree: Path) -> tuple[dict, list[str], list[str]]:
    """Write ``config`` to ``path`` as TOML, dropping what ``check-config`` (of the fastinfer in
    ``tree``) refuses, one refusal at a time. Returns (the config written, refusals, warnings)."""
    config = copy.deepcopy(config)
    refused: list[str] = []
    for _ in range(50):
        path.write_text(to_toml(config))
        out = subprocess.run([sys.executable, "-m", "fastinfer", "check-config", str(path)], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(tree)})
        text = out.stdout + out.stderr
        if out.returncode == 0:
            warnings = [line[len("warning: "):] for line in text.splitlines() if line.startswith("warning: ")]
            return config, refused, warnings
        problems = [line[len(str(path)) + 2:] for line in text.splitlines() if line.startswith(f"{path}: ")]
        dropped = [p for p in problems if _drop(config, p.split(": ", 1)[0])]
        if not dropped:
            raise RuntimeError(f"check-config refuses the bench's config and nothing can be dropped:\n{text}")
        refused += dropped
    raise RuntimeError("check-config kept refusing the bench's config")


def accepted_features_config(upstream_port: int, path: Path, tree: Path) -> tuple[dict, dict[str, str]]:
    """``features_config`` as far as the tree accepts it, written to ``path``; and each feature's state.
    Where the tree has no ``logging.level`` the server's log level stays at warning, as in the bare
    config, so the two differ only by the features."""
    config, refused, warnings = accepted_config(features_config(upstream_port), path, tree)
    if _lookup(config, "logging.level") is None:
        config.setdefault("server", {})["log_level"] = "warning"
        config, more, warnings = accepted_config(config, path, tree)
        refused += more
    return config, feature_states(config, refused, warnings)


def feature_states(config: dict, refused: list[str], warnings: list[str]) -> dict[str, str]:
    """Per feature: "on", or why not (refused by check-config, or accepted with a warning)."""
    states = {}
    for feature, paths in FEATURES.items():
        why = [f"refused: {p}" for p in refused if any(_related(p.split(": ", 1)[0], q) for q in paths)]
        why += [f"check-config warns: {w}" for w in warnings if any(_related(w.split(": ", 1)[0], q) for q in paths)]
        missing = [q for q in paths if _lookup(config, q) is None]
        if missing and not why:
            why = [f"not in the config: {', '.join(missing)}"]
        states[feature] = "on" if not why else "; ".join(why)
    return states


_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> list:
    return [int(i) if i else name for name, i in _PART.findall(path)]


def _related(a: str, b: str) -> bool:
    """One path lies within the other (``keys`` and ``keys[0].rpm``)."""
    pa, pb = _parts(a), _parts(b)
    n = min(len(pa), len(pb))
    return n > 0 and pa[:n] == pb[:n]


def _lookup(config, path: str | list):
    node = config
    for part in _parts(path) if isinstance(path, str) else path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _drop(config: dict, path: str) -> bool:
    """Remove the deepest existing node on ``path``; whether anything was removed."""
    parts = _parts(path)
    while parts:
        parent, last = _lookup(config, parts[:-1]), parts[-1]
        if isinstance(parent, (dict, list)) and _lookup(parent, [last]) is not None:
            del parent[last]
            return True
        parts = parts[:-1]
    return False


# ------------------------------------------------------------------------- TOML

def to_toml(config: dict) -> str:
    """The config as TOML: plain values first, then tables, arrays of tables (nested ones too);
    a dict inside a table is an inline table."""
    return _table(config, "").lstrip()


def _table(node: dict, prefix: str) -> str:
    plain = {k: v for k, v in node.items() if _inline(v, top=not prefix)}
    lines = [f"{k} = {_value(v)}" for k, v in plain.items()]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in node.items():
        if k in plain:
            continue
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out += f"\n[{name}]\n" + _table(v, name)
        else:
            for item in v:
                out += f"\n[[{name}]]\n" + _table(item, name)
    return out


def _inline(v, top: bool) -> bool:
    """Values written in place: scalars, lists of scalars, and (below the top level) flat dicts."""
    if isinstance(v, list):
        return not any(isinstance(x, dict) for x in v)
    if isinstance(v, dict):
        return not top and all(not isinstance(x, (dict, list)) for x in v.values())
    return True


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
