"""A strict parser of the Prometheus text exposition format (0.0.4), for tests.

Stricter than Prometheus itself where the contract asks more: every family has exactly one
``# HELP`` and one ``# TYPE``, both before its samples; a family's samples are contiguous;
no series appears twice; a histogram's buckets are cumulative and its ``+Inf`` bucket equals
its ``_count``. Anything else raises ``ExpositionError`` naming the line.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
_SAMPLE = re.compile(rf"^(?P<name>{_NAME})(?:\{{(?P<labels>(?:{_LABEL})(?:,{_LABEL})*)?\}})? (?P<value>\S+)(?: -?\d+)?$")
_LABEL_RE = re.compile(_LABEL)
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


class ExpositionError(ValueError):
    pass


@dataclass
class Family:
    name: str
    help: str | None = None
    type: str | None = None
    # (sample name, ((label, value), ...)) -> value
    samples: dict[tuple[str, tuple], float] = field(default_factory=dict)

    def series(self, sample_name: str | None = None) -> dict[tuple, float]:
        """{labels as a sorted tuple of pairs: value} of one sample name (the family's own by default)."""
        wanted = sample_name or self.name
        return {labels: v for (name, labels), v in self.samples.items() if name == wanted}

    def by(self, label: str, sample_name: str | None = None) -> dict[str, float]:
        """{value of ``label``: sample value}, for a family with that one label."""
        return {dict(labels)[label]: v for labels, v in self.series(sample_name).items()}


def parse(text: str) -> dict[str, Family]:
    families: dict[str, Family] = {}
    finished: set[str] = set()     # families whose samples are over (a family must be contiguous)
    current: str | None = None
    if not text.endswith("\n"):
        raise ExpositionError("the exposition must end with a newline")
    for number, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {number}: {line!r}"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not re.fullmatch(_NAME, name):
                    raise ExpositionError(f"{where}: bad metric name")
                family = families.setdefault(name, Family(name))
                if name in finished or (family.samples and current != name):
                    raise ExpositionError(f"{where}: {parts[1]} after the family's samples")
                if current is not None and current != name:
                    finished.add(current)
                current = name
                value = parts[3] if len(parts) == 4 else ""
                if parts[1] == "HELP":
                    if family.help is not None:
                        raise ExpositionError(f"{where}: second HELP")
                    family.help = value
                else:
                    if family.type is not None:
                        raise ExpositionError(f"{where}: second TYPE")
                    if value not in _TYPES:
                        raise ExpositionError(f"{where}: unknown type")
                    family.type = value
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ExpositionError(f"{where}: not a sample")
        sample_name, label_text, value_text = m.group("name"), m.group("labels"), m.group("value")
        family = _family_of(families, sample_name)
        if family is None or family.help is None or family.type is None:
            raise ExpositionError(f"{where}: sample before its family's HELP and TYPE")
        if family.name != current:
            raise ExpositionError(f"{where}: the samples of {family.name} are not together")
        labels = tuple(sorted((k, _unescape(v)) for k, v in _LABEL_RE.findall(label_text or "")))
        if len({k for k, _ in labels}) != len(labels):
            raise ExpositionError(f"{where}: a label twice")
        key = (sample_name, labels)
        if key in family.samples:
            raise ExpositionError(f"{where}: series repeated")
        family.samples[key] = _value(value_text, where)
    for family in families.values():
        if family.help is None or family.type is None:
            raise ExpositionError(f"{family.name}: HELP and TYPE are both required")
        if family.type == "histogram":
            _check_histogram(family)
    return families


def _family_of(families: dict[str, Family], sample_name: str) -> Family | None:
    family = families.get(sample_name)
    if family is not None and family.type not in _SUFFIXES:
        return family
    for suffix in ("_bucket", "_sum", "_count"):
        if sample_name.endswith(suffix):
            family = families.get(sample_name[: -len(suffix)])
            if family is not None and suffix in _SUFFIXES.get(family.type, ()):
                return family
    return None


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _value(text: str, where: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    try:
        return float(text)
    except ValueError:
        raise ExpositionError(f"{where}: bad value") from None


def _check_histogram(family: Family) -> None:
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for labels, value in family.series(family.name + "_bucket").items():
        le = dict(labels).get("le")
        if le is None:
            raise ExpositionError(f"{family.name}: a bucket without le")
        rest = tuple(p for p in labels if p[0] != "le")
        groups.setdefault(rest, []).append((_value(le, family.name), value))
    counts = family.series(family.name + "_count")
    for rest, buckets in groups.items():
        buckets.sort()
        if buckets[-1][0] != math.inf:
            raise ExpositionError(f"{family.name}{dict(rest)}: no +Inf bucket")
        if any(a[1] > b[1] for a, b in zip(buckets, buckets[1:])):
            raise ExpositionError(f"{family.name}{dict(rest)}: buckets are not cumulative")
        if counts.get(rest) != buckets[-1][1]:
            raise ExpositionError(f"{family.name}{dict(rest)}: _count differs from the +Inf bucket")
