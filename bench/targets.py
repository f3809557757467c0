"""The paths a bench run measures, all in front of the same mock upstream.

Owns: which paths run (``--targets``), starting each on the CPUs the layout gives gateways, and
what the run should know about each (its config, its features, how many workers, why a peer was
left out). The paths, by label:

- ``direct``: the mock itself — the floor every other path is compared with;
- ``gateway``: fastinfer bare (no keys, no limits, no access log), plus ``--gateway-config``'s settings;
- ``gateway-full``: fastinfer with every feature on (``gateway_configs.FEATURES``);
- ``gateway-limits``: fastinfer with a gateway key and every limit on, none binding, no access log
  (``gateway_configs.limits_config``; only when ``--targets`` asks for it);
- ``baseline``: fastinfer bare from another source tree (``--baseline-tree``);
- ``baseline-full``: fastinfer with every feature on from that tree, when ``gateway-full`` runs too;
- a ``--variant``'s label: fastinfer bare of this tree plus the variant's settings, measured
  against ``gateway``;
- ``nginx``: Debian's nginx as a plain keep-alive reverse proxy — the proxy floor;
- ``vllm-router``: the Rust router from PyPI, round robin over the one mock;
- ``uvloop-floor``: a relay on uvloop that passes bytes through untouched (``relay_floor.py``) —
  what a Python gateway's event loop and the kernel cost before it does anything (only when
  ``--targets`` asks for it).

Must not touch: the scenarios and their figures (``run.py``), the mock (``upstream.py``).
"""
from __future__ import annotations

from pathlib import Path

from .gateway_configs import accepted_config, accepted_features_config, bare_config, limits_config, with_settings
from .nginx import nginx_binary, start_nginx_proxy
from .proctree import CpuLayout, threads_of
from .services import Service, fastinfer_tree, start_relay_floor
from .vllm_router import RUNTIME_THREADS, start_vllm_router

ALL_TARGETS = ("direct", "gateway", "gateway-full", "gateway-limits", "nginx", "vllm-router", "uvloop-floor")
FASTINFER_TARGETS = ("gateway", "gateway-full", "gateway-limits", "baseline", "baseline-full")
OPT_IN_TARGETS = ("gateway-limits", "uvloop-floor")     # run only when --targets names them
RESERVED_LABELS = ALL_TARGETS + ("baseline", "baseline-full")   # what a --variant may not be called


def baseline_labels(labels: list[str]) -> list[str]:
    """The baseline tree's paths: bare, and with every feature on when this tree's runs so."""
    return ["baseline"] + (["baseline-full"] if "gateway-full" in labels else [])


def wanted_targets(asked: list[str] | None, vllm_router: str | None) -> tuple[list[str], dict[str, str]]:
    """The labels to run, in order, and why any of ``ALL_TARGETS`` is left out. Asked-for peers that
    are not installed are an error; by default each peer runs when it is installed."""
    skipped = {}
    available = {"nginx": nginx_binary() is not None, "vllm-router": vllm_router is not None}
    if asked:
        unknown = set(asked) - set(ALL_TARGETS)
        if unknown:
            raise SystemExit(f"--targets: unknown {sorted(unknown)}; known: {', '.join(ALL_TARGETS)}")
        for peer, ok in available.items():
            if peer in asked and not ok:
                raise SystemExit(f"--targets {peer}: not installed (see bench/README.md)")
        labels = ["direct"] + [t for t in ALL_TARGETS if t in asked and t != "direct"]
    else:
        labels = [t for t in ALL_TARGETS if available.get(t, True) and t not in OPT_IN_TARGETS]
    for t in ALL_TARGETS:
        if t not in labels:
            skipped[t] = "not installed" if not available.get(t, True) else "not in --targets"
    return labels, skipped


def start_targets(labels: list[str], upstream, workdir: str, workers: int, layout: CpuLayout,
                  vllm_router: str | None, baseline_tree: Path | None, gateway_settings: dict | None = None,
                  variants: dict[str, dict] | None = None) -> tuple[list[tuple[str, object]], dict]:
    """Start every path; (label, service) in run order, and what the report says about them.
    ``gateway_settings`` go on the ``gateway`` path's bare config, each of ``variants`` (label ->
    settings) is one more path: this tree's bare config with its settings. On failure the ones
    already started are stopped."""
    started: list[tuple[str, object]] = [("direct", upstream)]
    info: dict = {"workers": {}}
    preexec = layout.gateway_preexec()
    variants = variants or {}
    baselines = baseline_labels(labels) if baseline_tree else []
    try:
        for label in labels[1:] + baselines + list(variants):
            if label in FASTINFER_TARGETS or label in variants:
                tree = baseline_tree if label in baselines else fastinfer_tree()
                path = Path(workdir, f"{label}.toml")
                settings = gateway_settings if label == "gateway" else variants.get(label)
                features = write_gateway_config(label, upstream.port, path, tree, settings)
                if features is not None:
                    info["features"] = features
                service = Service(["serve", "--config", str(path), "--port", "0", "--workers", str(workers)],
                                  workdir, tree=tree, preexec=preexec, log=Path(workdir, f"{label}.log"))
                service.metrics_path = "/metrics"
                info["workers"][label] = f"{workers} worker processes"
            elif label == "nginx":
                service = start_nginx_proxy(Path(workdir), upstream.port, workers, preexec=preexec)
                info["workers"][label] = f"{workers} worker processes"
            elif label == "uvloop-floor":
                service = start_relay_floor(Path(workdir), upstream.port, upstream.health_path, workers,
                                            preexec=preexec)
                info["workers"][label] = f"{workers} worker processes"
            elif label == "vllm-router":
                service = start_vllm_router(vllm_router, Path(workdir), upstream.port, upstream.health_path,
                                            preexec=preexec)
                runtime = [n for n in threads_of(service.proc.pid).values() if n.startswith(RUNTIME_THREADS)]
                info["workers"][label] = (f"1 process, {len(runtime)} tokio runtime threads (its default: one per "
                                          f"CPU it may use)")
            else:
                raise ValueError(label)
            started.append((label, service))
    except BaseException:
        for label, service in started[1:]:
            service.stop()
        raise
    # the baseline's paths run right after direct, as before: the order alternates round by round
    for _ in baselines:
        started.insert(1, started.pop(len(started) - len(variants) - 1))
    return started, info


def write_gateway_config(label: str, upstream_port: int, path: Path, tree: Path,
                         settings: dict | None = None) -> dict | None:
    """The config of fastinfer path ``label`` (``gateway``, ``gateway-full``, ``gateway-limits``,
    ``baseline``, ``baseline-full`` or a variant with its ``settings``) written to ``path`` as
    ``tree``'s check-config accepts it; for ``gateway-full``, which features are on and why any is off."""
    if label == "gateway-full":
        return accepted_features_config(upstream_port, path, tree)[1]
    if label == "baseline-full":
        accepted_features_config(upstream_port, path, tree)
        return None
    if label == "gateway-limits":
        accepted_config(limits_config(upstream_port), path, tree)
    elif label == "baseline":
        accepted_config(bare_config(upstream_port), path, tree)
    else:
        _settings_config(label, settings or {}, upstream_port, path, tree)
    return None


def _settings_config(label: str, settings: dict, upstream_port: int, path: Path, tree: Path) -> None:
    """This tree's bare config with ``settings`` on it, written to ``path``. Unlike the features
    config nothing the user asked for is dropped: a setting check-config refuses stops the run."""
    bare, _, _ = accepted_config(bare_config(upstream_port), path, tree)
    if not settings:
        return
    _, refused, _ = accepted_config(with_settings(bare, settings), path, tree)
    if refused:
        option = "--gateway-config" if label == "gateway" else f"--variant {label}"
        raise SystemExit(f"{option}: fastinfer check-config refuses " + "; ".join(refused))
