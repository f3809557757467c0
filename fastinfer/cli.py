"""The command line: ``serve``, ``check-config``, ``mock-upstream``, ``bench``.

Exit codes: 0 success, 2 bad config or bad arguments.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from dataclasses import fields

from . import __version__
from .config import Config, ConfigError, Secret, ServerConfig, missing_credentials
from .config.schema import LoggingConfig, check_field
from .config.servable import load_servable
from .observe import setup_logging
from .redact import mask_url

EXIT_CONFIG = 2
# serve's flags and the server.* keys they override (checked by the same rules as the file)
_SERVER_FLAGS = {"host": "--host", "port": "--port", "workers": "--workers"}
# fixed for the life of a run: a reload keeps the sockets, the workers and the one-time token
_FIXED_ACROSS_RELOAD = ("host", "port", "workers", "admin_host", "admin_port", "state_dir")


def unkept_state(config: Config) -> list[str]:
    """Budgets with nowhere to keep their spend: it starts from zero at every restart."""
    if config.server.state_dir is not None:
        return []
    return [f"keys[{i}].budget: server.state_dir is not set, so spend starts from zero at every restart"
            for i, k in enumerate(config.keys) if k.budget is not None]


def config_warnings(config: Config) -> list[str]:
    """What an operator hears before serving: budgets that a restart forgets, and replicas of hosted
    APIs with no credential (never replicas that need none: mock, self-hosted). Every setting of the
    contract is enforced or refused at start-up, so none is warned about as ignored."""
    return unkept_state(config) + missing_credentials(config)


def _report_config_error(e: ConfigError) -> int:
    for problem in e.problems:
        print(f"{e.source}: {problem}", file=sys.stderr)
    return EXIT_CONFIG


# ------------------------------------------------------------------ commands

def _server_overrides(args) -> dict:
    """serve's flags as server.* values, refused (ConfigError) when the config would refuse them."""
    overrides = {key: getattr(args, key) for key in _SERVER_FLAGS if getattr(args, key) is not None}
    problems = [p for key, value in overrides.items()
                for p in check_field(ServerConfig, key, value, _SERVER_FLAGS[key])]
    if args.log_level is not None:
        problems += check_field(LoggingConfig, "level", args.log_level, "--log-level")
    if problems:
        raise ConfigError(problems, "command line")
    return overrides


def _with_server(config: Config, **values) -> Config:
    return dataclasses.replace(config, server=dataclasses.replace(config.server, **values))


def _with_log_level(config: Config, level: str | None) -> Config:
    """``--log-level`` over ``logging.level``; it holds across reloads too."""
    if level is None:
        return config
    return dataclasses.replace(config, logging=dataclasses.replace(config.logging, level=level))


def _setup_logging(config: Config) -> None:
    setup_logging(config.logging.level, config.logging.format)


def cmd_serve(args) -> int:
    try:
        overrides = _server_overrides(args)
        config = load_servable(args.config)   # a key that cannot be read: exit 2
    except ConfigError as e:
        return _report_config_error(e)
    config = _with_log_level(_with_server(config, **overrides), args.log_level)
    _setup_logging(config)
    for note in config_warnings(config):
        logging.getLogger("fastinfer").warning("%s: %s", config.source, note)
    from .ops import one_time_token
    from .process import ListenError, Supervisor

    token = None
    if config.server.admin_key is None:
        token = one_time_token()
        config = _with_server(config, admin_key=Secret("value", token))

    def reload_config() -> Config:
        fresh = load_servable(args.config)
        fixed = {k: getattr(config.server, k) for k in _FIXED_ACROSS_RELOAD}
        if fresh.server.admin_key is None:
            fixed["admin_key"] = config.server.admin_key     # this run's one-time token
        return _with_log_level(_with_server(fresh, **fixed), args.log_level)

    state_dir = None
    if config.server.state_dir is not None:
        from .limits import StateDir, StateDirInUse     # only then: the limits package brings asyncio
        try:
            state_dir = StateDir(config.server.state_dir)
        except StateDirInUse as e:
            print(f"fastinfer: {e}", file=sys.stderr)
            return EXIT_CONFIG
    workers = config.server.workers or os.cpu_count() or 1
    try:
        code = Supervisor(config, workers, reload_config, one_time_token=token, state_dir=state_dir,
                          apply_logging=_setup_logging).run()
    except ListenError as e:
        print(f"fastinfer: {e} (see --host/--port, server.host/port, server.admin_host/admin_port)",
              file=sys.stderr)
        return EXIT_CONFIG
    finally:
        if state_dir is not None:
            state_dir.close()
    # Every worker has exited and the supervisor has removed what it created (and saved the state
    # dir). Skip the interpreter's teardown of every imported module (a few hundred milliseconds):
    # a stop ends when its drain does (drain_delay_s + drain_grace_s), not noticeably later.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_check_config(args) -> int:
    try:
        config = load_servable(args.path)    # what serve would refuse, keys that cannot be read too
    except ConfigError as e:
        return _report_config_error(e)
    print(describe_config(config))
    return 0


def describe_config(config: Config) -> str:
    """The resolved config, every secret shown by its source only."""
    s = config.server
    lines = [f"{config.source}: OK",
             f"server: {s.host}:{s.port} workers={s.workers or 'per-cpu'} max_body_bytes={s.max_body_bytes} "
             f"admin_key={s.admin_key.describe() if s.admin_key else 'unset (serve prints a one-time token)'}"]
    if s.admin_port is not None:
        lines.append(f"admin listener: {s.admin_host or '127.0.0.1'}:{s.admin_port} "
                     "(admin API, dashboard and metrics; not on the public listener)")
    log = config.logging
    lines.append(f"logging: level={log.level} format={log.format} access_log={str(log.access_log).lower()}")
    if config.telemetry is not None:
        t = config.telemetry
        lines.append(f"telemetry: traces to {mask_url(t.otlp_endpoint.rstrip('/'))}/v1/traces "
                     f"service_name={t.service_name} sample_ratio={t.sample_ratio:g}")
    if s.state_dir is not None:
        lines.append(f"state_dir: {s.state_dir} (limit levels and spend kept across restarts)")
    lines += [describe_key(k) for k in config.keys]
    if config.cluster:
        c = config.cluster
        lines.append(f"cluster: node {c.node_id} via {mask_url(c.redis_url)} mode={c.mode} "
                     f"sync_interval_ms={c.sync_interval_ms} on_redis_down={c.on_redis_down} timeout_ms={c.timeout_ms}")
    for d in config.deployments:
        model = f"<the request's, after {d.wildcard_prefix}>" if d.wildcard_prefix else d.upstream_model
        lines.append(
            f"deployment {d.name}: provider={d.provider} model={model} routing={d.routing} "
            f"max_concurrency={d.max_concurrency} queue_capacity={d.queue_capacity} "
            f"on_capacity_exhausted={d.on_capacity_exhausted} fallbacks={d.fallbacks or '[]'}"
            f"{describe_rate_limit(d.rate_limit)}")
        if d.aliases:
            lines.append(f"  aliases: {', '.join(d.aliases)}")
        if d.drop_params:
            lines.append("  drop_params: parameters the upstream's API has no place for are left out of "
                         "translated requests (not refused)")
        if d.count_tokens is not None:
            lines.append("  count_tokens: " + ("counted by the upstream" if d.count_tokens == "upstream"
                                               else "estimated by the gateway, no upstream asked"))
        if d.routing == "sticky":
            lines.append(f"  sessions: affinity_ttl_s={d.session.affinity_ttl_s:g} "
                         f"backend_sessions={str(d.session.backend_sessions).lower()} capacity={d.session.capacity}")
        if d.health_check:
            c = d.health_check
            lines.append(f"  health_check: GET {c.path} every {c.interval_s:g}s (timeout {c.timeout_s:g}s, unhealthy "
                         f"after {c.unhealthy_after} failures, healthy after {c.healthy_after} successes)")
        for r in d.replicas:
            cred = r.credential.describe() if r.credential else "none"
            lines.append(f"  replica {r.name}: {mask_url(r.base_url)} credential={cred} weight={r.weight}")
    lines += [f"warning: {note}" for note in config_warnings(config)]
    return "\n".join(lines)


def describe_rate_limit(r) -> str:
    """A deployment's upstream quota as check-config shows it ("" when it has none)."""
    limits = [f"{name}={value}" for name, value in (("rpm", r.rpm), ("tpm", r.tpm), ("burst", r.burst)) if value]
    return f" rate_limit={' '.join(limits)}" if limits else ""


def describe_key(k) -> str:
    """One key's line: its name, where it comes from, what it may use and its limits; never the key or its hash."""
    source = k.key.describe() if k.key is not None else "key_sha256"
    limits = [f"{name}={value}" for name, value in (("rpm", k.rpm), ("tpm", k.tpm),
                                                     ("max_concurrency", k.max_concurrency)) if value]
    budget = f" budget=${k.budget.usd:g}/{k.budget.period}" if k.budget is not None else ""
    return (f"key {k.name}: from {source} models={','.join(k.models) or '*'} "
            f"limits={' '.join(limits) or 'none'}{budget} priority={k.priority} max_priority={k.max_priority}")


def cmd_mock_upstream(args) -> int:
    import asyncio   # here, not at the top: ``serve``'s supervisor runs no loop and stays without it

    import uvloop

    from .mock_upstream import Chaos, serve
    chaos = Chaos(**{f.name: getattr(args, f.name) for f in fields(Chaos)})
    uvloop.install()
    try:
        asyncio.run(serve(args.host, args.port, chaos))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_bench(bench_args: list[str]) -> int:
    try:
        from bench.run import main as bench_main
    except ImportError:
        print("the benchmark suite lives in bench/ of the source tree: run this from a checkout",
              file=sys.stderr)
        return EXIT_CONFIG
    return bench_main(bench_args)


# -------------------------------------------------------------------- parser

def build_parser(with_mock_flags: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastinfer", description="An LLM inference gateway.")
    parser.add_argument("--version", action="version", version=f"fastinfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML (or YAML) config; default: the built-in echo deployment")
    serve.add_argument("--host", help="address to listen on (overrides server.host)")
    serve.add_argument("--port", type=int, help="port to listen on; 0 picks a free one (overrides server.port)")
    serve.add_argument("--workers", type=int,
                       help="worker processes, 0 to 512; 0 = one per CPU (overrides server.workers)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                       help="overrides logging.level")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config and print it with secrets masked")
    check.add_argument("path")
    check.set_defaults(func=cmd_check_config)

    mock = sub.add_parser("mock-upstream", help="run a fake OpenAI-compatible provider")
    if with_mock_flags:
        _add_mock_flags(mock)
    mock.set_defaults(func=cmd_mock_upstream)

    # listed for --help; its arguments are the bench's own (main() hands them over untouched)
    sub.add_parser("bench", help="run the benchmark suite (see bench/README.md)", add_help=False)
    return parser


def _add_mock_flags(mock: argparse.ArgumentParser) -> None:
    """The mock's flags, one per ``Chaos`` field. Only built for ``mock-upstream``: importing the mock
    loads aiohttp, and ``serve``'s supervisor would carry it (into every worker's RSS too)."""
    from .mock_upstream import Chaos
    mock.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    mock.add_argument("--port", type=int, default=9000, help="port; 0 picks a free one (default 9000)")
    for f in fields(Chaos):
        flag = "--" + f.name.replace("_", "-")
        kind = {"float": float, "int": int}.get(str(f.type).split(" ")[0], None)
        text = f.metadata["help"]
        if f.name == "api_key":
            mock.add_argument(flag, default=None, help=text)
        elif f.name == "api_keys":
            mock.add_argument(flag, nargs="+", default=None, metavar="KEY", help=text)
        elif f.name == "seed":
            mock.add_argument(flag, type=int, default=None, help=text)
        elif f.type == "bool":
            mock.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=text)
        else:
            mock.add_argument(flag, type=kind or float, default=f.default, help=f"{text} (default {f.default})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return cmd_bench(argv[1:])
    args = build_parser(with_mock_flags="mock-upstream" in argv).parse_args(argv)
    return args.func(args)
