"""The configuration schema and its validator.

Each section is a frozen dataclass; a field's ``metadata`` carries its
constraints (``min``, ``max``, ``choices``). One generic builder walks the raw
TOML tables against the dataclasses, so every section is validated the same
way and every error names the full key path (``deployments[2].retry.base_ms``).
All errors are collected before the config is rejected.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._core.constants import MAX_REPLICAS, MAX_SPAN_NS, PRIORITY_NAMES
from .envvars import expand_env
from ..providers import PROVIDERS as PROVIDER_KINDS
from ..redact import mask_url
from .secrets import SOURCES, Secret

PRIORITIES = PRIORITY_NAMES
# the provider table is the providers package's: adding a provider does not touch the config
PROVIDERS = tuple(PROVIDER_KINDS)
#: the fastest a limit's bucket refills (1e9 a second): the shared segment's token buckets keep time in
#: nanoseconds per token
MAX_PER_MINUTE = 60_000_000_000
ROUTINGS = ("round_robin", "least_loaded", "power_of_two", "latency", "prefix", "sticky")
DEFAULT_BASE_URLS = {name: kind.default_base_url for name, kind in PROVIDER_KINDS.items() if kind.default_base_url}
NEEDS_CREDENTIAL = tuple(name for name, kind in PROVIDER_KINDS.items() if kind.needs_credential)


class ConfigError(Exception):
    """Raised with every problem found; ``problems`` holds ``key.path: what`` lines."""

    def __init__(self, problems: list[str], source: str = "<config>"):
        self.problems = problems
        self.source = source
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def _c(default: Any = dataclasses.MISSING, **constraints: Any) -> Any:
    """A field with constraints; mutable defaults are copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=constraints)
    return field(default=default, metadata=constraints)


@dataclass(frozen=True)
class ServerConfig:
    host: str = _c("127.0.0.1", listen_host=True)
    port: int = _c(8000, min=0, max=65535)
    # a separate listener for /admin/*, /dashboard and /metrics (gone from the public one)
    admin_host: str | None = _c(None, listen_host=True)
    admin_port: int | None = _c(None, min=0, max=65535)
    workers: int = _c(0, min=0, max=512)
    max_body_bytes: int = _c(8 * 1024 * 1024, min=1024)
    admin_key: Secret | None = None
    drain_grace_s: float = _c(30.0, min=0)
    # on a stop, keep serving this long with /readyz at 503 before the listener closes
    drain_delay_s: float = _c(0.0, min=0)
    client_body_timeout_s: float = _c(30.0, min=0.1)    # the request body must arrive within this (408)
    # an idle keep-alive connection closes after this, and so does one that has not sent a
    # complete request head in this time (a slow or half-open client cannot hold a socket)
    keepalive_timeout_s: float = _c(75.0, min=0.1)
    # session affinity bindings the host keeps (sticky routing), least recently used evicted first
    max_sessions: int = _c(65_536, min=1, max=1 << 26)
    # spend and bucket levels kept across restarts (SQLite; one server per directory); unset: none kept
    state_dir: str | None = None


@dataclass(frozen=True)
class LoggingConfig:
    level: str = _c("info", choices=("debug", "info", "warning", "error"))
    format: str = _c("text", choices=("text", "json"))
    access_log: bool = True           # one line per answered request, whatever ``level`` says


@dataclass(frozen=True)
class TelemetryConfig:
    """OpenTelemetry traces over OTLP/HTTP; the table's presence turns them on."""

    otlp_endpoint: str = _c("http://127.0.0.1:4318", url=True)   # the collector's base URL
    service_name: str = _c("fastinfer", nonempty=True)
    sample_ratio: float = _c(1.0, min=0, max=1)


BUDGET_PERIODS = ("day", "week", "month", "total")


@dataclass(frozen=True)
class BudgetConfig:
    usd: float = _c(min=0)
    period: str = _c("month", choices=BUDGET_PERIODS)


@dataclass(frozen=True)
class GatewayKeyConfig:
    name: str
    key: Secret | None = None                       # the raw key's source; or key_sha256 (exactly one)
    key_sha256: str | None = _c(None, hexdigest=True)
    models: list[str] = _c([])                      # globs of deployment names; empty: every deployment
    rpm: int | None = _c(None, min=1, max=MAX_PER_MINUTE)
    tpm: int | None = _c(None, min=1, max=MAX_PER_MINUTE)
    max_concurrency: int | None = _c(None, min=1, max=1_000_000)
    priority: str = _c("normal", choices=PRIORITIES)
    max_priority: str = _c("critical", choices=PRIORITIES)
    budget: BudgetConfig | None = None


CLUSTER_MODES = ("approximate", "strict")
ON_REDIS_DOWN = ("local_share", "fail_open", "fail_closed")


@dataclass(frozen=True)
class ClusterConfig:
    redis_url: str
    node_id: str = "gw-1"
    sync_interval_ms: int = _c(100, min=5, max=60_000)
    mode: str = _c("approximate", choices=CLUSTER_MODES)
    on_redis_down: str = _c("local_share", choices=ON_REDIS_DOWN)
    # a Redis call slower than this counts as Redis being down (never a request hanging on it)
    timeout_ms: int = _c(250, min=10, max=10_000)
    # prefix of every key this cluster writes: several clusters may share one Redis
    key_prefix: str = "fastinfer"


@dataclass(frozen=True)
class PriceConfig:
    input_per_mtok: float = _c(0.0, min=0)
    output_per_mtok: float = _c(0.0, min=0)
    cached_input_per_mtok: float | None = _c(None, min=0)


@dataclass(frozen=True)
class RateLimitConfig:
    rpm: int | None = _c(None, min=1, max=MAX_PER_MINUTE)
    tpm: int | None = _c(None, min=1, max=MAX_PER_MINUTE)
    burst: int | None = _c(None, min=1)     # capacity of the requests bucket; default rpm
    strict: bool = False


@dataclass(frozen=True)
class CircuitBreakerConfig:
    failure_threshold: int = _c(5, min=1, max=1_000_000)
    open_s: float = _c(30.0, min=0.001)
    max_open_s: float = _c(300.0, min=0.001)
    half_open_probes: int = _c(1, min=1, max=1000)


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = _c(3, min=1, max=20)
    base_ms: int = _c(200, min=0)
    max_ms: int = _c(8000, min=0)
    jitter: str = _c("full", choices=("none", "equal", "full"))
    respect_retry_after: bool = True


@dataclass(frozen=True)
class TimeoutsConfig:
    connect_s: float = _c(5.0, min=0.001)
    first_byte_s: float = _c(60.0, min=0.001)
    idle_s: float = _c(30.0, min=0.001)
    total_s: float = _c(600.0, min=0.001)


@dataclass(frozen=True)
class SessionConfig:
    affinity_ttl_s: float = _c(300.0, min=0)
    backend_sessions: bool = False
    capacity: int = _c(65_536, min=1, max=2**31 - 1)   # the backend's capacity_of_str_len


@dataclass(frozen=True)
class HealthCheckConfig:
    """Active health checks: ``GET {server root}{path}``, one prober per host."""

    path: str = "/health"
    interval_s: float = _c(5.0, min=0.05, max=86_400)
    timeout_s: float = _c(2.0, min=0.001)
    unhealthy_after: int = _c(2, min=1, max=1000)
    healthy_after: int = _c(1, min=1, max=1000)


@dataclass(frozen=True)
class MockConfig:
    """Knobs of the built-in ``mock`` provider (no network involved)."""

    tokens: int = _c(16, min=0, max=1_000_000)
    ttft_ms: float = _c(0.0, min=0)
    itl_ms: float = _c(0.0, min=0)
    text: str = "echo"  # "echo": repeat the last user message; anything else: that text


@dataclass(frozen=True)
class ReplicaConfig:
    base_url: str | None = _c(None, url=True)     # checked with the other fields: every problem at once
    credential: Secret | None = None
    weight: int = _c(1, min=1, max=1000)
    name: str | None = None
    api_version: str | None = None  # azure_openai


@dataclass(frozen=True)
class DeploymentConfig:
    name: str
    provider: str = _c(choices=PROVIDERS)
    model: str | None = None
    routing: str = _c("least_loaded", choices=ROUTINGS)
    max_concurrency: int = _c(64, min=1, max=1_000_000)
    queue_capacity: int = _c(1024, min=0, max=1_000_000)
    on_capacity_exhausted: str = _c("queue", choices=("queue", "reject", "fallback"))
    queue_timeout_s: float = _c(30.0, min=0)
    fallbacks: list[str] = _c([])
    context_window_fallbacks: list[str] = _c([])
    price: PriceConfig | None = None    # unset: the package's price table for public models, else free
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    circuit_breaker: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    health_check: HealthCheckConfig | None = None
    aliases: list[str] = _c([])
    mock: MockConfig = field(default_factory=MockConfig)
    default_max_tokens: int = _c(4096, min=1)  # anthropic requires max_tokens
    # a parameter the upstream's API has no place for is left out of a translated request, not refused
    drop_params: bool = False
    # who answers Anthropic's count_tokens: the upstream, or the gateway's estimate; unset: the upstream
    # where its API has a count (anthropic, gemini), else the estimate (``ProviderKind.counts_tokens``)
    count_tokens: str | None = _c(None, choices=("upstream", "estimate"))
    replicas: list[ReplicaConfig] = _c([])

    def __post_init__(self) -> None:
        # Read on every request, so set once as plain instance attributes (not fields: no config key,
        # no repr). Not functools.cached_property: it writes the instance's __dict__ itself, which
        # makes CPython 3.11 build that dict, and then no attribute read of this config is
        # specialized (each goes through the generic lookup, ~10x the instructions).
        # ``upstream_model``: the model id the upstream is asked for.
        object.__setattr__(self, "upstream_model", self.model or self.name)
        # ``takes_every_param``: its upstream takes any parameter a request carries
        # (``ProviderKind.takes_every_param``; False for a provider the checks will refuse).
        kind = PROVIDER_KINDS.get(self.provider)
        object.__setattr__(self, "takes_every_param", kind is not None and kind.takes_every_param)

    @property
    def wildcard_prefix(self) -> str | None:
        """``"openai/"`` for a deployment named ``openai/*`` (it serves any ``openai/<model>``)."""
        return self.name[:-1] if self.name.endswith("/*") else None


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    telemetry: TelemetryConfig | None = None
    keys: list[GatewayKeyConfig] = _c([])
    cluster: ClusterConfig | None = None
    deployments: list[DeploymentConfig] = _c([])
    source: str = field(default="<builtin>", metadata={"internal": True})

    def deployment(self, name: str) -> DeploymentConfig | None:
        for d in self.deployments:
            if d.name == name:
                return d
        return None


# ---------------------------------------------------------------- the builder

class _Problems(list):
    def add(self, path: str, what: str) -> None:
        self.append(f"{path}: {what}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is Secret:
        return "credential table ({env|file|command|value = ...})"
    if dataclasses.is_dataclass(tp):
        return "table"
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, str(tp))


def _build_secret(raw: Any, path: str, problems: _Problems) -> Secret | None:
    if isinstance(raw, str):
        return Secret("value", raw)
    if not isinstance(raw, dict):
        problems.add(path, "expected a credential table like { env = \"NAME\" }")
        return None
    given = [s for s in SOURCES if s in raw]
    extra = set(raw) - set(SOURCES) - {"ttl_s"}
    for k in sorted(extra):
        problems.add(f"{path}.{k}", "unknown key")
    if len(given) != 1:
        problems.add(path, f"exactly one of {', '.join(SOURCES)} is required")
        return None
    source = given[0]
    ref = raw[source]
    ttl = raw.get("ttl_s", 300.0)
    if "ttl_s" in raw and source != "command":
        problems.add(f"{path}.ttl_s", "only applies to a command credential")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl < 0:
        problems.add(f"{path}.ttl_s", "expected a number >= 0")
        return None
    if source == "command":
        if isinstance(ref, str):
            ref = [ref]
        if not (isinstance(ref, list) and ref and all(isinstance(a, str) for a in ref)):
            problems.add(f"{path}.command", "expected a non-empty list of strings")
            return None
        return Secret("command", tuple(ref), float(ttl))
    if not isinstance(ref, str) or not ref:
        problems.add(f"{path}.{source}", "expected a non-empty string")
        return None
    return Secret(source, ref)


def _build_value(tp: Any, raw: Any, path: str, meta: dict, problems: _Problems) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw is None:
            return None
        return _build_value(args[0], raw, path, meta, problems)
    if tp is Secret:
        return _build_secret(raw, path, problems)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, raw, path, problems)
    if origin is list:
        if not isinstance(raw, list):
            problems.add(path, f"expected {_type_name(tp)}, got {type(raw).__name__}")
            return []
        (item_tp,) = typing.get_args(tp)
        return [_build_value(item_tp, item, f"{path}[{i}]", {}, problems) for i, item in enumerate(raw)]
    ok = (
        (tp is bool and isinstance(raw, bool))
        or (tp is int and isinstance(raw, int) and not isinstance(raw, bool))
        or (tp is float and isinstance(raw, (int, float)) and not isinstance(raw, bool))
        or (tp is str and isinstance(raw, str))
    )
    if not ok:
        problems.add(path, f"expected {_type_name(tp)}, got {type(raw).__name__} {raw!r}")
        return None
    value = float(raw) if tp is float else raw
    if tp is float and not math.isfinite(value):
        # TOML and YAML spell inf and nan; no setting means "no limit" by them (that is leaving it out)
        problems.add(path, f"must be a finite number, got {raw!r}")
        return None
    if "min" in meta and value < meta["min"]:
        problems.add(path, f"must be >= {meta['min']}, got {raw!r}")
    if "max" in meta and value > meta["max"]:
        problems.add(path, f"must be <= {meta['max']}, got {raw!r}")
    if "choices" in meta and value not in meta["choices"]:
        problems.add(path, f"must be one of {', '.join(meta['choices'])}, got {raw!r}")
    if meta.get("listen_host") and not is_listen_host(value):
        problems.add(path, f"expected an IP address or a host name to listen on, got {raw!r}")
    if meta.get("url") and (problem := base_url_problem(value)):
        problems.add(path, problem)
    if meta.get("nonempty") and not value.strip():
        problems.add(path, "must not be empty")
    if meta.get("hexdigest") and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower())):
        problems.add(path, "expected a 64-character hex SHA-256 digest")
    return value


def _build_dataclass(cls: type, raw: Any, path: str, problems: _Problems) -> Any:
    if not isinstance(raw, dict):
        problems.add(path or "<root>", f"expected a table, got {type(raw).__name__}")
        raw = {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in fields:
            problems.add(f"{path}.{key}" if path else key, "unknown key")
    kwargs = {}
    for name, f in fields.items():
        key_path = f"{path}.{name}" if path else name
        if name in raw:
            value = _build_value(hints[name], raw[name], key_path, dict(f.metadata), problems)
            if value is not None or raw[name] is None:
                kwargs[name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.add(key_path, "is required")
    try:
        return cls(**kwargs)
    except TypeError:
        return None  # a required field was missing; already reported


def is_listen_host(host: str) -> bool:
    """An IPv4/IPv6 literal or a DNS name: what a listening socket can be bound to."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return 0 < len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def check_field(cls: type, name: str, value: Any, label: str) -> list[str]:
    """``label: problem`` lines for ``value`` as field ``name`` of ``cls`` (e.g. a CLI flag
    overriding ``ServerConfig.port``): the same type and range checks as the config file."""
    problems = _Problems()
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    _build_value(typing.get_type_hints(cls)[name], value, label, dict(f.metadata), problems)
    return list(problems)


# ------------------------------------------------------------ cross-checks

def _check_references(cfg: Config, problems: _Problems) -> None:
    names = [d.name for d in cfg.deployments]
    wildcards = {d.name for d in cfg.deployments if d.wildcard_prefix}
    seen: set[str] = set()
    for i, d in enumerate(cfg.deployments):
        path = f"deployments[{i}]"
        if d.name in seen:
            problems.add(f"{path}.name", f"duplicate deployment name {d.name!r}")
        seen.add(d.name)
        for key in ("fallbacks", "context_window_fallbacks"):
            for j, target in enumerate(getattr(d, key)):
                if target not in names:
                    problems.add(f"{path}.{key}[{j}]", f"names no deployment: {target!r}")
                elif target == d.name:
                    problems.add(f"{path}.{key}[{j}]", "a deployment cannot fall back to itself")
                elif target in wildcards:
                    problems.add(f"{path}.{key}[{j}]", f"{target!r} serves many models and none of its own: "
                                                       "it cannot be a fallback")
        _check_routing(d, path, problems)
        _check_drop_params(d, path, problems)
        _check_count_tokens(d, path, problems)
        if d.circuit_breaker.max_open_s < d.circuit_breaker.open_s:
            problems.add(f"{path}.circuit_breaker.max_open_s", "must be >= open_s")
        if d.retry.max_ms < d.retry.base_ms:
            problems.add(f"{path}.retry.max_ms", "must be >= base_ms")
        kind = PROVIDER_KINDS[d.provider]
        if not kind.in_process and not d.replicas:
            if d.provider in DEFAULT_BASE_URLS:
                continue  # a default replica on the official endpoint is added below
            problems.add(f"{path}.replicas", f"provider {d.provider} needs at least one replica with base_url")
        replica_names: set[str] = set()
        for j, r in enumerate(d.replicas):
            rpath = f"{path}.replicas[{j}]"
            if r.base_url is None and d.provider not in DEFAULT_BASE_URLS and not kind.in_process:
                problems.add(f"{rpath}.base_url", "is required for this provider")
            if r.name is not None:
                if not _printable_name(r.name):
                    problems.add(f"{rpath}.name", f"a replica name is printable text without control characters "
                                                  f"(it is sent in the x-fastinfer-replica header), got {r.name!r}")
                elif r.name in replica_names:
                    problems.add(f"{rpath}.name", f"duplicate replica name {r.name!r}")
                replica_names.add(r.name)
            for setting in kind.replica_requires:
                if not getattr(r, setting):
                    problems.add(f"{rpath}.{setting}", f"is required for {d.provider}")
    server = cfg.server
    if server.admin_host is not None and server.admin_port is None:
        problems.add("server.admin_host", "needs server.admin_port (the admin listener's port)")
    if (server.admin_port is not None and server.admin_port == server.port != 0
            and (server.admin_host or "127.0.0.1") == server.host):
        problems.add("server.admin_port", "must differ from server.port: the admin listener is a separate socket")
    _check_keys(cfg, problems)
    _check_model_names(cfg, problems)


def _check_keys(cfg: Config, problems: _Problems) -> None:
    """Gateway keys: unique names and hashes, one key source each, globs that match something."""
    names = [d.name for d in cfg.deployments]
    seen_names: set[str] = set()
    seen_hashes: dict[str, str] = {}
    for i, k in enumerate(cfg.keys):
        path = f"keys[{i}]"
        if not _printable_name(k.name):
            problems.add(f"{path}.name", f"a key name is printable text without control characters, got {k.name!r}")
        elif k.name in seen_names:
            problems.add(f"{path}.name", f"duplicate key name {k.name!r}")
        seen_names.add(k.name)
        if (k.key is None) == (k.key_sha256 is None):
            problems.add(path, "exactly one of key (a secret source) or key_sha256 is required")
        elif k.key_sha256 is not None:
            digest = k.key_sha256.lower()
            if digest in seen_hashes:
                problems.add(f"{path}.key_sha256", f"the same key as key {seen_hashes[digest]!r}")
            seen_hashes.setdefault(digest, k.name)
        for j, pattern in enumerate(k.models):
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                problems.add(f"{path}.models[{j}]", f"{pattern!r} matches no deployment")
        if PRIORITIES.index(k.priority) < PRIORITIES.index(k.max_priority):
            problems.add(f"{path}.priority", f"{k.priority!r} is above max_priority {k.max_priority!r}")
    for i, d in enumerate(cfg.deployments):
        if d.rate_limit.burst is not None and d.rate_limit.rpm is None:
            problems.add(f"deployments[{i}].rate_limit.burst", "needs rpm (burst is the requests bucket's size)")
        elif d.rate_limit.burst is not None and d.rate_limit.burst * 60e9 / d.rate_limit.rpm > MAX_SPAN_NS:
            problems.add(f"deployments[{i}].rate_limit.burst",
                         f"at rpm = {d.rate_limit.rpm} a bucket of {d.rate_limit.burst} takes more than 36 years to fill")
        if d.rate_limit.strict and (cfg.cluster is None or cfg.cluster.mode != "strict"):
            problems.add(f"deployments[{i}].rate_limit.strict",
                         'exact limits across hosts need [cluster] with mode = "strict"')
    if cfg.cluster is not None:
        _check_cluster(cfg.cluster, problems)


_NODE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _check_cluster(cluster: ClusterConfig, problems: _Problems) -> None:
    """A Redis URL redis-py can open, a node id that is safe inside a Redis key."""
    shown = repr(mask_url(cluster.redis_url))
    try:
        parts = urlsplit(cluster.redis_url)
        parts.port
    except ValueError:
        problems.add("cluster.redis_url", f"has a port that is not a number from 1 to 65535, got {shown}")
        return
    if parts.scheme not in ("redis", "rediss", "unix"):
        problems.add("cluster.redis_url", f"must start with redis://, rediss:// or unix://, got {shown}")
    elif parts.scheme != "unix" and not parts.hostname:
        problems.add("cluster.redis_url", f"has no host, got {shown}")
    elif parts.scheme == "unix" and not parts.path:
        problems.add("cluster.redis_url", f"has no socket path, got {shown}")
    elif parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        problems.add("cluster.redis_url", f"the path must be a database number (/0), got {shown}")
    if not _NODE_ID.fullmatch(cluster.node_id):
        problems.add("cluster.node_id", "must be 1 to 64 letters, digits or _ . : - "
                     f"(it names this host's keys in Redis), got {cluster.node_id!r}")
    if not _NODE_ID.fullmatch(cluster.key_prefix):
        problems.add("cluster.key_prefix", f"must be 1 to 64 letters, digits or _ . : -, got {cluster.key_prefix!r}")


def _printable_name(name: str) -> bool:
    """A name shown in headers, metric labels and log lines: not empty, no control characters."""
    return bool(name) and name.isprintable()


def _check_model_names(cfg: Config, problems: _Problems) -> None:
    """Every name a client may send resolves to one deployment: names, aliases and
    ``PROVIDER/*`` wildcards never collide, and only wildcards hold a ``*``."""
    owner: dict[str, str] = {d.name: f"deployments[{i}].name" for i, d in enumerate(cfg.deployments)}
    for i, d in enumerate(cfg.deployments):
        path = f"deployments[{i}]"
        if not _printable_name(d.name):
            problems.add(f"{path}.name", f"a deployment name is printable text without control characters, "
                                         f"got {d.name!r}")
        prefix = d.wildcard_prefix
        if "*" in d.name and (prefix is None or "*" in prefix or prefix in ("/", "")):
            problems.add(f"{path}.name", f"a wildcard deployment is named PROVIDER/* (e.g. \"openai/*\"), "
                                         f"got {d.name!r}")
        if prefix is not None and d.model is not None:
            problems.add(f"{path}.model", "a PROVIDER/* deployment takes the upstream model from the request; "
                                          "remove model")
        if prefix is not None and d.aliases:
            problems.add(f"{path}.aliases", "a PROVIDER/* deployment cannot have aliases")
        for j, alias in enumerate(d.aliases):
            apath = f"{path}.aliases[{j}]"
            if not alias or "*" in alias or any(c.isspace() or not c.isprintable() for c in alias):
                problems.add(apath, f"an alias is a model name without spaces, control characters or '*', "
                                    f"got {alias!r}")
            elif alias in owner:
                problems.add(apath, f"{alias!r} is already taken by {owner[alias]}")
            else:
                owner[alias] = apath


def _check_drop_params(d: DeploymentConfig, path: str, problems: _Problems) -> None:
    if d.drop_params and d.takes_every_param:
        problems.add(f"{path}.drop_params", f"provider {d.provider} takes every parameter a request carries: "
                                            "there is nothing to drop")


def _check_count_tokens(d: DeploymentConfig, path: str, problems: _Problems) -> None:
    if d.count_tokens == "upstream" and PROVIDER_KINDS[d.provider].token_count is None:
        problems.add(f"{path}.count_tokens", f"provider {d.provider}'s API has no token count to ask: "
                                             'remove it, or set "estimate"')


def _check_routing(d: DeploymentConfig, path: str, problems: _Problems) -> None:
    """What replica choice, backend sessions and health checks need of a deployment."""
    if len(d.replicas) > MAX_REPLICAS:
        problems.add(f"{path}.replicas", f"at most {MAX_REPLICAS} replicas per deployment, got {len(d.replicas)}")
    in_process = PROVIDER_KINDS[d.provider].in_process
    if d.session.backend_sessions:
        if d.routing != "sticky":
            problems.add(f"{path}.session.backend_sessions", 'needs routing = "sticky": a backend session '
                                                             "lives on the replica its session is bound to")
        if in_process:
            problems.add(f"{path}.session.backend_sessions", f"needs replicas on the network, not {d.provider}")
    check = d.health_check
    if check is not None:
        if in_process:
            problems.add(f"{path}.health_check", f"needs replicas on the network, not {d.provider}")
        if not check.path.startswith("/") or any(c.isspace() or not c.isprintable() for c in check.path):
            problems.add(f"{path}.health_check.path", f"a path starting with / without spaces, got {check.path!r}")


def base_url_problem(url: str) -> str | None:
    """What is wrong with a replica's ``base_url``, or None: http(s), a host, a port in range,
    no spaces or control characters, no query or fragment (paths are appended to it)."""
    shown = repr(mask_url(url))
    if any(c.isspace() or not c.isprintable() for c in url):
        return f"must not contain spaces or control characters, got {shown}"
    if not url.startswith(("http://", "https://")):
        return f"must start with http:// or https://, got {shown}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"has a port that is not a number from 1 to 65535, got {shown}"
    if not parts.hostname:
        return f"has no host, got {shown}"
    if port == 0:
        return f"has a port that is not a number from 1 to 65535, got {shown}"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return f"must not have a query or fragment (request paths are appended to it), got {shown}"
    return None


def missing_credentials(cfg: Config) -> list[str]:
    """Replicas of hosted APIs configured without a credential: every request to them will be refused."""
    return [f"deployments[{i}].replicas[{j}].credential: none set; {d.provider} upstreams refuse requests without one"
            for i, d in enumerate(cfg.deployments) if d.provider in NEEDS_CREDENTIAL
            for j, r in enumerate(d.replicas) if r.credential is None]


def _with_replica_defaults(d: DeploymentConfig) -> DeploymentConfig:
    """Give every replica a stable name and a base_url; add the official endpoint if none."""
    replicas = list(d.replicas) or [ReplicaConfig()]
    named = []
    for j, r in enumerate(replicas):
        base_url = r.base_url or DEFAULT_BASE_URLS.get(d.provider) or "mock://local"
        named.append(dataclasses.replace(r, base_url=base_url.rstrip("/"), name=r.name or f"r{j}"))
    return dataclasses.replace(d, replicas=named)


def parse_config(raw: dict, source: str = "<config>", environ: typing.Mapping[str, str] | None = None) -> Config:
    """Validate a raw config tree; strings may hold ``${VAR}`` / ``${VAR:-default}`` from ``environ``."""
    raw, unset = expand_env(raw, os.environ if environ is None else environ)
    problems = _Problems(unset)
    cfg = _build_dataclass(Config, raw, "", problems)
    if cfg is not None and not problems:
        _check_references(cfg, problems)
    if problems:
        raise ConfigError(list(problems), source)
    cfg = dataclasses.replace(
        cfg, source=source, deployments=[_with_replica_defaults(d) for d in cfg.deployments]
    )
    if not cfg.deployments:
        raise ConfigError(["deployments: at least one deployment is required"], source)
    return cfg


def load_config(path: str | os.PathLike) -> Config:
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as e:
        raise ConfigError([f"cannot read file: {e.strerror}"], str(p)) from None
    try:
        if p.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(["YAML config needs PyYAML: pip install 'fastinfer[yaml]'"], str(p)) from None
            raw = yaml.safe_load(text) or {}
        else:
            raw = tomllib.loads(text.decode("utf-8"))
    except ConfigError:
        raise
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError
        raise ConfigError([f"not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'TOML'}: {e}"], str(p)) from None
    return parse_config(raw, str(p))


def default_config() -> Config:
    """What ``serve`` offers with no --config: the echo mock, plus real providers whose keys are set."""
    deployments: list[dict] = [{"name": "echo", "provider": "mock"}]
    if os.environ.get("OPENAI_API_KEY"):
        deployments.append({
            "name": "gpt-4o-mini", "provider": "openai",
            "replicas": [{"credential": {"env": "OPENAI_API_KEY"}}],
        })
    if os.environ.get("ANTHROPIC_API_KEY"):
        deployments.append({
            "name": "claude-3-5-haiku", "provider": "anthropic", "model": "claude-3-5-haiku-latest",
            "replicas": [{"credential": {"env": "ANTHROPIC_API_KEY"}}],
        })
    return parse_config({"deployments": deployments}, "<builtin>")
