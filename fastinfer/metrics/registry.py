"""Series layout, recording and Prometheus rendering over the shared segment.

Counters and the per-worker gauges live in the segment's counter words (a gauge is a
word its one writer sets, a counter one every process adds to), histograms in its
histogram slots; the host-wide gauges of admission and breakers are read from those
structures at scrape time. The request path records through each deployment's and key's
series (the segment's ``RequestSeries``), whose slots are looked up once, not per record.
"""
from __future__ import annotations

import itertools
import math

from ..cluster.state import cluster_gauges, cluster_words
from .._core.constants import COST_SCALE, OPEN
from ..config import Config

# one bucket set for every histogram: 10 µs (the gateway's own time at 1 connection, its
# x-fastinfer-overhead-ms, had a p50 of 15-22 µs: a first bucket of 25 µs held nearly every request
# at low load) up to 5 min (long streams)
BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
CODES = ("200", "202", "304", "400", "401", "403", "404", "405", "408", "413", "422", "429", "499",
         "500", "502", "503", "504", "other")
OUTCOMES = ("success", "client_error", "rate_limited", "server_error", "timeout", "network_error",
            "auth_error", "content_filter", "context_window")
# rate_limited: a deployment's rate_limit; key_*, budget_exceeded: a gateway key's own limits
REJECT_REASONS = ("queue_full", "queue_timeout", "capacity", "circuit_open", "rate_limited", "client_gone",
                  "key_rate_limited", "key_concurrency", "budget_exceeded")
TOKEN_DIRECTIONS = ("input", "output", "cached")
REBUILD_CAUSES = ("auth", "admin", "reload", "file_changed")
BACKEND_SESSION_CALLS = ("open", "close")
CALL_RESULTS = ("ok", "failed")
# counter words that are gauges: moved up and down, rendered as gauges, carried over a reload
GAUGE_WORDS = ("backend_sessions",)
HISTOGRAMS = ("request_duration_seconds", "ttft_seconds", "overhead_seconds")
# the operator's routes, counted apart from client traffic (fastinfer_operator_requests_total)
OPERATOR_ROUTES = ("healthz", "readyz", "metrics", "admin", "dashboard")
# per worker process: gauges each worker sets for itself (worker_probe), and its request counter
WORKER_GAUGES = ("worker_connections", "worker_resident_memory_bytes", "worker_open_fds",
                 "worker_event_loop_lag_seconds")
GAUGE_SCALE = {"worker_event_loop_lag_seconds": 1e6}   # kept in whole microseconds
# per worker process: its cyclic garbage collector's runs, and the objects they freed (reference
# cycles: a request path that leaves one behind shows here as a count that grows with the requests)
WORKER_GC_COUNTERS = ("worker_gc_collections_total", "worker_gc_collected_objects_total")
# why the supervisor replaced a worker: it died after it had served, or before it ever did
RESTART_REASONS = ("died", "failed_to_start")
ADMIN_AUTH_SLOTS = 256    # control words for throttling failed admin authentications
UNKNOWN_DEPLOYMENT = ""   # requests naming no deployment share one label value
METRICS_LIVE = ("_metrics_live", ())


class MetricsLayout:
    """Which slot each series lives in; identical in every process for one config."""

    def __init__(self, config: Config, n_workers: int = 1):
        deployments = [UNKNOWN_DEPLOYMENT] + [d.name for d in config.deployments]
        self.deployments = deployments
        self.replicas = {d.name: [r.name for r in d.replicas] for d in config.deployments}
        self.fallback_pairs = [(d.name, t) for d in config.deployments
                               for t in dict.fromkeys(d.fallbacks + d.context_window_fallbacks)]
        keys = []
        keys += [("requests_total", (d, c)) for d in deployments for c in CODES]
        keys += [("upstream_requests_total", (d, r, o)) for d in self.replicas
                 for r in self.replicas[d] for o in OUTCOMES]
        keys += [("retries_total", (d,)) for d in self.replicas]
        keys += [("fallbacks_total", pair) for pair in self.fallback_pairs]
        keys += [("rejected_total", (d, r)) for d in self.replicas for r in REJECT_REASONS]
        keys += [("tokens_total", (d, t)) for d in self.replicas for t in TOKEN_DIRECTIONS]
        keys += [("cost_usd_total", (d,)) for d in self.replicas]
        keys += [("usage_estimated_total", (d,)) for d in self.replicas]
        keys += [("session_rebuilds_total", (d, c)) for d in self.replicas for c in REBUILD_CAUSES]
        self.keys = [k.name for k in config.keys]
        keys += [("key_requests_total", (k, c)) for k in self.keys for c in CODES]
        keys += [("key_tokens_total", (k, t)) for k in self.keys for t in TOKEN_DIRECTIONS]
        keys += [("key_cost_usd_total", (k,)) for k in self.keys]
        keys += [("session_repins_total", (d,)) for d in self.replicas]
        keys += [("session_evictions_total", (d,)) for d in self.replicas]
        keys += [("backend_sessions", (d,)) for d in self.replicas]
        keys += [("backend_session_calls_total", (d, c, r)) for d in self.replicas
                 for c in BACKEND_SESSION_CALLS for r in CALL_RESULTS]
        keys += [("operator_requests_total", (r, c)) for r in OPERATOR_ROUTES for c in CODES]
        self.workers = [str(i) for i in range(n_workers)]
        keys += [("worker_requests_total", (w,)) for w in self.workers]
        keys += [("worker_connections_rebalanced_total", (w,)) for w in self.workers]
        keys += [(c, (w,)) for c in WORKER_GC_COUNTERS for w in self.workers]
        keys += [(g, (w,)) for g in WORKER_GAUGES for w in self.workers]
        keys += [("worker_restarts_total", (w, r)) for w in self.workers for r in RESTART_REASONS]
        # control words: 1 while that worker of this segment accepts connections (a reload
        # retires the old generation only once the new one is up)
        keys += [("_worker_serving", (w,)) for w in self.workers]
        # control word: 1 while /metrics answers from this segment (a reload's new segment is 0 until
        # the supervisor hands the counts over to it, and the old one 0 from then: ``HostState``)
        keys += [METRICS_LIVE]
        # control words, not metrics: bumped by an admin request, watched by every worker
        keys += [("_session_generation", (d,)) for d in self.replicas]
        # failed admin authentications per client-address slot (ops.auth.FailureThrottle)
        keys += [("_admin_auth_failures", (str(i),)) for i in range(ADMIN_AUTH_SLOTS)]
        if config.cluster is not None:      # the host's view of the cluster (cluster.state)
            keys += cluster_words(config)
        self.counter_keys = keys
        self.counter_index = {k: i for i, k in enumerate(keys)}
        # per configured deployment: a request that names none is counted, never rendered in a histogram
        self.histogram_keys = [(h, d) for h in HISTOGRAMS for d in self.replicas]
        self.histogram_index = {k: i for i, k in enumerate(self.histogram_keys)}

    @staticmethod
    def carried(key) -> bool:
        """Whether a reload adds this word of the old segment into the new one: the counters'
        totals do; control words and gauges (each worker sets its own) do not."""
        return not key[0].startswith("_") and key[0] not in WORKER_GAUGES

    @property
    def n_counters(self) -> int:
        return len(self.counter_keys)

    @property
    def n_histograms(self) -> int:
        return len(self.histogram_keys)


class Metrics:
    """Recording calls for the request path; each is a dict lookup and one atomic add."""

    def __init__(self, layout: MetricsLayout, segment, admissions: dict | None = None,
                 breakers: dict | None = None, buckets: dict | None = None):
        self.layout = layout
        self.segment = segment
        self.counters = segment.counters
        self.histograms = segment.histograms
        self._admissions = admissions or {}   # deployment name -> shm Admission
        self._breakers = breakers or {}       # deployment name -> [shm Breaker per replica]
        self._buckets = buckets or {}         # (scope, name, kind) -> shm TokenBucket
        self._c = layout.counter_index
        self._h = layout.histogram_index
        # one series per deployment ("": requests that name none); any other name is counted as ""
        self._series = {d: deployment_series(self, d) for d in layout.deployments}
        self._unnamed = self._series[UNKNOWN_DEPLOYMENT]
        self._keys = {k: key_series(self, k) for k in layout.keys}     # a name not configured: not counted
        # a reload's new worker: the previous generation's metrics (and its config), which /metrics
        # and /admin/stats show until this segment takes over (``live_source``)
        self.predecessor: Metrics | None = None
        self.config: Config | None = None

    @property
    def live(self) -> bool:
        """Whether /metrics answers from this segment now. During a reload one generation's segment
        answers at a time, so that two scrapes never see two generations' totals (a counter going
        down, which Prometheus reads as a reset): the old one until the new one serves, then the new
        one with the old one's counts added (``HostState.hand_metrics_over_from``)."""
        return self.counters.get(self._c[METRICS_LIVE]) == 1

    def live_source(self) -> Metrics | None:
        """Whose totals /metrics and /admin/stats show: this segment's when it answers for them, the
        previous generation's while it still does (a reload under way), None in the moment the
        counts move from one to the other (or in a retired worker). A reader checks ``live`` again
        once it has read: then what it read was the live totals, never a total a later read lacks."""
        for source in (self, self.predecessor):
            if source is not None and source.live:
                return source
        return None

    def live_render(self) -> str | None:
        """The /metrics text of ``live_source``, or None (see there)."""
        source = self.live_source()
        if source is None:
            return None
        text = source.render()
        return text if source.live else None

    def series(self, deployment: str):
        """``deployment``'s series for the request path; a name the config does not have (a
        client's unknown model) gets the one of ``""``, so client names cannot grow anything."""
        return self._series.get(deployment, self._unnamed)

    def admission(self, deployment: str):
        """The host-wide admission structure of ``deployment`` (in_flight, queue_depth), or None."""
        return self._admissions.get(deployment)

    def breakers(self, deployment: str) -> list:
        """The host-wide circuit breakers of ``deployment``'s replicas, in config order."""
        return self._breakers.get(deployment, [])

    def _add(self, key, n: int = 1) -> None:
        index = self._c.get(key)
        if index is not None:
            self.counters.add(index, n)

    def request(self, deployment: str, status: int) -> None:
        self.series(deployment).request(status)

    def operator_request(self, route: str, status: int) -> None:
        """An answer of an operator route (``OPERATOR_ROUTES``): probes, scrapes, admin, dashboard."""
        key = ("operator_requests_total", (route, str(status)))
        self._add(key if key in self._c else ("operator_requests_total", (route, "other")))

    def worker(self, index: int) -> "WorkerSeries":
        """The series worker ``index`` writes about itself."""
        return WorkerSeries(self, str(index))

    def worker_restarted(self, index: int, served: bool, n: int = 1) -> None:
        """The supervisor replaced worker ``index`` (``n`` times), which had served (``died``) or had
        not (``failed_to_start``)."""
        self._add(("worker_restarts_total", (str(index), RESTART_REASONS[0 if served else 1])), n)

    def workers_serving(self) -> int:
        """How many workers of this segment accept connections (see ``WorkerSeries.serving``)."""
        return sum(self.counters.get(self._c[("_worker_serving", (w,))]) for w in self.layout.workers)

    def serving_worker_connections(self) -> list[int]:
        """The open client connections each worker that accepts connections last published."""
        get, c = self.counters.get, self._c
        return [get(c[("worker_connections", (w,))]) for w in self.layout.workers
                if get(c[("_worker_serving", (w,))])]

    def retry(self, deployment: str) -> None:
        self._add(("retries_total", (deployment,)))

    def fallback(self, deployment: str, to: str) -> None:
        self._add(("fallbacks_total", (deployment, to)))

    def rejected(self, deployment: str, reason: str) -> None:
        self._add(("rejected_total", (deployment, reason)))

    def session_rebuild(self, deployment: str, cause: str) -> None:
        self._add(("session_rebuilds_total", (deployment, cause)))

    def bump_session_generation(self, deployment: str) -> None:
        self._add(("_session_generation", (deployment,)))

    def key_series(self, key: str):
        """Gateway key ``key``'s series (``RequestSeries``: its answers by code, its tokens and cost),
        None for a name the layout does not have. The gateway counts a keyed answer into it directly, a grant
        the answer's tokens and cost (``limits.quota.KeyLimits.series``)."""
        return self._keys.get(key)

    def session_repin(self, deployment: str) -> None:
        self._add(("session_repins_total", (deployment,)))

    def session_evicted(self, deployment: str) -> None:
        self._add(("session_evictions_total", (deployment,)))

    def backend_session_call(self, deployment: str, call: str, ok: bool) -> None:
        """An ``open_session`` / ``close_session`` call and whether it succeeded; a session opened
        or closed moves the ``backend_sessions`` gauge."""
        self._add(("backend_session_calls_total", (deployment, call, "ok" if ok else "failed")))
        if call == "open" and ok:
            self._add(("backend_sessions", (deployment,)))

    def backend_session_gone(self, deployment: str) -> None:
        """An open backend session was closed (or given up on after its close failed)."""
        self._add(("backend_sessions", (deployment,)), -1)

    def backend_sessions_open(self, deployment: str) -> int:
        index = self._c.get(("backend_sessions", (deployment,)))
        return 0 if index is None else self.counters.get(index)

    # ---------------------------------------------------------------- render

    def render(self) -> bytes:
        """Prometheus text exposition (version 0.0.4) of the host's totals."""
        values = self.counters.snapshot()
        out: list[str] = []
        by_metric = itertools.groupby(enumerate(self.layout.counter_keys), key=lambda e: e[1][0])
        for metric, entries in by_metric:
            if metric.startswith("_"):
                continue
            name = f"fastinfer_{metric}"
            _family(out, name, "gauge" if metric in WORKER_GAUGES or metric in GAUGE_WORDS else "counter")
            labels = _LABELS[metric]
            scale = GAUGE_SCALE.get(metric, COST_SCALE if metric in _COST_METRICS else None)
            for index, (_, values_of_labels) in entries:
                value = values[index]
                text = str(value) if scale is None else repr(value / scale)
                out.append(f"{name}{{{_label_text(labels, values_of_labels)}}} {text}")
        self._render_gauges(out)
        self._render_routing_gauges(out)
        self._render_histograms(out)
        return ("\n".join(out) + "\n").encode()

    def _render_gauges(self, out: list[str]) -> None:
        _family(out, "fastinfer_queue_depth", "gauge")
        out += [f'fastinfer_queue_depth{{deployment="{_esc(d)}"}} {a.queue_depth}'
                for d, a in self._admissions.items()]
        _family(out, "fastinfer_in_flight", "gauge")
        out += [f'fastinfer_in_flight{{deployment="{_esc(d)}"}} {a.in_flight}'
                for d, a in self._admissions.items()]
        _family(out, "fastinfer_circuit_state", "gauge")
        for d, breakers in self._breakers.items():
            for replica, b in zip(self.layout.replicas[d], breakers):
                out.append(f'fastinfer_circuit_state{{deployment="{_esc(d)}",replica="{_esc(replica)}"}} {b.state}')
        # whole tokens (or requests) left in each limit's bucket now; negative: in debt
        _family(out, "fastinfer_ratelimit_remaining", "gauge")
        out += [f'fastinfer_ratelimit_remaining{{{_label_text(("scope", "name", "kind"), name)}}} '
                f'{math.floor(bucket.available())}' for name, bucket in self._buckets.items()]
        for name, value in cluster_gauges(self.counters, self._c).items():
            _family(out, name, "gauge")
            out.append(f"{name} {value}")

    def replica_load(self, deployment: str):
        """The host-wide load and health of ``deployment``'s replicas (``ReplicaLoad``)."""
        return self.segment.replicas(self.layout.deployments.index(deployment) - 1)

    def replica_healthy(self, deployment: str, replica: int, load) -> bool:
        """The replica may get traffic: its health checks pass (or none run) and its circuit is not open."""
        breakers = self._breakers.get(deployment)
        return load.healthy(replica) and not (breakers and breakers[replica].state == OPEN)

    def _render_routing_gauges(self, out: list[str]) -> None:
        healthy, in_flight, index_bytes, index_entries = [], [], [], []
        for i, d in enumerate(self.layout.deployments[1:]):   # [0] is the unknown deployment's label
            load = self.segment.replicas(i)
            label = f'deployment="{_esc(d)}"'
            for r, name in enumerate(self.layout.replicas[d]):
                replica = f'{label},replica="{_esc(name)}"'
                healthy.append(f"fastinfer_replica_healthy{{{replica}}} {int(self.replica_healthy(d, r, load))}")
                in_flight.append(f"fastinfer_replica_in_flight{{{replica}}} {load.in_flight(r)}")
            prefix = self.segment.prefix(i)
            index_bytes.append(f"fastinfer_prefix_index_bytes{{{label}}} {prefix.nbytes}")
            index_entries.append(f"fastinfer_prefix_index_entries{{{label}}} {prefix.occupancy if prefix.capacity else 0}")
        table = self.segment.sessions
        for name, lines in (("replica_healthy", healthy), ("replica_in_flight", in_flight),
                            ("prefix_index_bytes", index_bytes), ("prefix_index_entries", index_entries),
                            ("session_bindings", [f"fastinfer_session_bindings {table.occupancy}"]),
                            ("session_capacity", [f"fastinfer_session_capacity {table.max_sessions}"])):
            _family(out, f"fastinfer_{name}", "gauge")
            out += lines

    def _render_histograms(self, out: list[str]) -> None:
        for histogram in HISTOGRAMS:
            name = f"fastinfer_{histogram}"
            _family(out, name, "histogram")
            for d in self.layout.replicas:
                cumulative, count, total = self.histograms.snapshot(self._h[(histogram, d)])
                label = f'deployment="{_esc(d)}"'
                for bound, c in zip(BUCKETS, cumulative):
                    out.append(f'{name}_bucket{{{label},le="{bound:g}"}} {c}')
                out.append(f'{name}_bucket{{{label},le="+Inf"}} {count}')
                out.append(f"{name}_sum{{{label}}} {total!r}")
                out.append(f"{name}_count{{{label}}} {count}")


def deployment_series(metrics: "Metrics", deployment: str):
    """``deployment``'s series for the request path, its words and slots looked up once: the segment's
    ``RequestSeries`` (``request``, ``answered``, ``upstream``, ``usage``, ``session_generation``), a
    record one compiled call. The series of ``""`` (requests that name no deployment) has request
    codes only."""
    counter, histogram = metrics._c, metrics._h
    timed = tuple(histogram.get((h, deployment), -1) for h in ("request_duration_seconds", "overhead_seconds",
                                                                "ttft_seconds"))
    return metrics.segment.request_series(
        _codes(counter, "requests_total", deployment), counter[("requests_total", (deployment, "other"))],
        timed=timed,
        tokens=tuple(counter.get(("tokens_total", (deployment, t)), -1) for t in TOKEN_DIRECTIONS),
        cost=counter.get(("cost_usd_total", (deployment,)), -1),
        estimated=counter.get(("usage_estimated_total", (deployment,)), -1),
        generation=counter.get(("_session_generation", (deployment,)), -1),
        attempts={(replica, outcome): counter[("upstream_requests_total", (deployment, replica, outcome))]
                  for replica in metrics.layout.replicas.get(deployment, ()) for outcome in OUTCOMES})


def key_series(metrics: "Metrics", key: str):
    """A gateway key's series (its answers by code, its tokens and cost): the segment's ``RequestSeries``."""
    counter = metrics._c
    return metrics.segment.request_series(
        _codes(counter, "key_requests_total", key), counter[("key_requests_total", (key, "other"))],
        tokens=tuple(counter[("key_tokens_total", (key, t))] for t in TOKEN_DIRECTIONS),
        cost=counter[("key_cost_usd_total", (key,))])


def _codes(counter: dict, name: str, label: str) -> dict[int, int]:
    return {int(code): counter[(name, (label, code))] for code in CODES if code != "other"}


class WorkerSeries:
    """One worker's own series: it alone writes them, so its gauges are plain stores."""

    __slots__ = ("_counters", "_requests", "_rebalanced", "_serving", "_gauges", "_gc")

    def __init__(self, metrics: Metrics, worker: str):
        index = metrics.layout.counter_index
        self._counters = metrics.counters
        self._requests = index[("worker_requests_total", (worker,))]
        self._rebalanced = index[("worker_connections_rebalanced_total", (worker,))]
        self._serving = index[("_worker_serving", (worker,))]
        self._gauges = {g: (index[(g, (worker,))], GAUGE_SCALE.get(g, 1)) for g in WORKER_GAUGES}
        self._gc = tuple(index[(c, (worker,))] for c in WORKER_GC_COUNTERS)

    def serving(self) -> None:
        """This worker accepts connections now."""
        self._counters.set(self._serving, 1)

    def stopped_accepting(self) -> None:
        """This worker drains: its listeners are closed (a reload's supervisor waits for it before
        handing the metrics over to the new generation)."""
        self._counters.set(self._serving, 0)

    def set(self, gauge: str, value: float) -> None:
        """Set ``gauge`` (one of ``WORKER_GAUGES``, in its unit: bytes, seconds, a count)."""
        word, scale = self._gauges[gauge]
        self._counters.set(word, round(value * scale))

    def add_requests(self, n: int) -> None:
        if n:
            self._counters.add(self._requests, n)

    def add_rebalanced(self, n: int) -> None:
        """``n`` connections let go to even out the workers' shares (``process.balance``)."""
        if n:
            self._counters.add(self._rebalanced, n)

    def add_gc(self, collections: int, collected: int) -> None:
        """The cyclic GC ran ``collections`` times since the last call and freed ``collected`` objects."""
        for word, n in zip(self._gc, (collections, collected)):
            if n:
                self._counters.add(word, n)

    def clear(self) -> None:
        """A worker that is gone: not serving; no connections, memory or lag."""
        self._counters.set(self._serving, 0)
        for word, _ in self._gauges.values():
            self._counters.set(word, 0)


_LABELS = {
    "requests_total": ("deployment", "code"),
    "upstream_requests_total": ("deployment", "replica", "outcome"),
    "retries_total": ("deployment",),
    "fallbacks_total": ("deployment", "to"),
    "rejected_total": ("deployment", "reason"),
    "tokens_total": ("deployment", "direction"),
    "cost_usd_total": ("deployment",),
    "usage_estimated_total": ("deployment",),
    "session_rebuilds_total": ("deployment", "cause"),
    "key_requests_total": ("key", "code"),
    "key_tokens_total": ("key", "direction"),
    "key_cost_usd_total": ("key",),
    "session_repins_total": ("deployment",),
    "session_evictions_total": ("deployment",),
    "backend_sessions": ("deployment",),
    "backend_session_calls_total": ("deployment", "call", "result"),
    "operator_requests_total": ("route", "code"),
    "worker_requests_total": ("worker",),
    "worker_connections_rebalanced_total": ("worker",),
    **{c: ("worker",) for c in WORKER_GC_COUNTERS},
    "worker_restarts_total": ("worker", "reason"),
    **{g: ("worker",) for g in WORKER_GAUGES},
}
_COST_METRICS = ("cost_usd_total", "key_cost_usd_total")

# every family /metrics renders, with its # HELP line
HELP = {
    "fastinfer_requests_total": "Answers to client API requests (/v1/* and unknown paths), by deployment and "
                                "HTTP status (499: the client left first).",
    "fastinfer_upstream_requests_total": "Upstream attempts by replica and outcome.",
    "fastinfer_retries_total": "Upstream attempts after the first.",
    "fastinfer_fallbacks_total": "Requests sent on to a fallback deployment.",
    "fastinfer_rejected_total": "Requests refused before an upstream attempt, by reason.",
    "fastinfer_tokens_total": "Tokens as the upstream reported them (cached is part of input).",
    "fastinfer_cost_usd_total": "Cost in US dollars from the deployment's price.",
    "fastinfer_usage_estimated_total": "Answers whose token usage the upstream did not report (estimated).",
    "fastinfer_session_rebuilds_total": "Upstream sessions rebuilt, by cause.",
    "fastinfer_session_repins_total": "Sticky sessions moved to another replica.",
    "fastinfer_session_evictions_total": "Live session bindings evicted from a full affinity table.",
    "fastinfer_backend_sessions": "Backend sessions (SGLang open_session) open now.",
    "fastinfer_backend_session_calls_total": "Backend session open and close calls, by result.",
    "fastinfer_replica_healthy": "1 when the replica gets traffic: health checks pass (or none run) and "
                                 "its circuit is not open.",
    "fastinfer_replica_in_flight": "Upstream attempts on the replica now, host-wide.",
    "fastinfer_prefix_index_bytes": "Fixed size of the deployment's prefix index in shared memory.",
    "fastinfer_prefix_index_entries": "Block chains the deployment's prefix index holds.",
    "fastinfer_session_bindings": "Session bindings the host's affinity table holds now.",
    "fastinfer_session_capacity": "Bindings the host's affinity table can hold (server.max_sessions).",
    "fastinfer_operator_requests_total": "Answers of the operator's routes (health, readiness, metrics, "
                                         "admin API, dashboard), by route and HTTP status.",
    "fastinfer_worker_requests_total": "HTTP requests each worker process received, every route and "
                                       "malformed ones included.",
    "fastinfer_worker_restarts_total": "Worker processes the supervisor replaced, by slot and reason (died: "
                                       "after it had served; failed_to_start: before it ever served).",
    "fastinfer_worker_connections": "Client connections each worker process holds open now.",
    "fastinfer_worker_connections_rebalanced_total": "Client connections a worker let go after an answer "
                                                     "(Connection: close) because it held more than its "
                                                     "share of the host's; their clients reconnect to any worker.",
    "fastinfer_worker_gc_collections_total": "Runs of each worker process's cyclic garbage collector (every "
                                             "generation) since it began serving.",
    "fastinfer_worker_gc_collected_objects_total": "Objects each worker's cyclic garbage collector freed: reference "
                                                   "cycles left behind (a count that grows with the requests is a leak "
                                                   "the collector keeps up with).",
    "fastinfer_worker_resident_memory_bytes": "Resident memory of each worker process.",
    "fastinfer_worker_open_fds": "Open file descriptors of each worker process.",
    "fastinfer_worker_event_loop_lag_seconds": "Longest delay of each worker's event loop behind its timers "
                                               "over the last second.",
    "fastinfer_key_requests_total": "Answers to a gateway key's requests, by HTTP status.",
    "fastinfer_key_tokens_total": "A gateway key's tokens as the upstream reported them (cached is part of input).",
    "fastinfer_key_cost_usd_total": "A gateway key's cost in US dollars since start.",
    "fastinfer_ratelimit_remaining": "Whole requests or tokens left in a limit's bucket now (negative: in debt).",
    "fastinfer_queue_depth": "Requests waiting for a slot or a deployment's rate limit, host-wide.",
    "fastinfer_in_flight": "Requests holding a slot, host-wide.",
    "fastinfer_circuit_state": "Circuit state per replica: 0 closed, 1 open, 2 half-open.",
    "fastinfer_request_duration_seconds": "From request received to answer complete (streams: to the last byte).",
    "fastinfer_ttft_seconds": "Time to the first byte of a streamed answer.",
    "fastinfer_overhead_seconds": "Time spent in the gateway, upstream time excluded.",
    "fastinfer_cluster_redis_up": "With [cluster]: 1 while this host exchanges with Redis, 0 while Redis is "
                                  "unreachable or slow (limits follow on_redis_down).",
    "fastinfer_cluster_nodes": "With [cluster]: live nodes (unexpired heartbeats) when Redis was last seen.",
}


def _family(out: list[str], name: str, kind: str) -> None:
    out.append(f"# HELP {name} {HELP[name]}")
    out.append(f"# TYPE {name} {kind}")


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _label_text(names, values) -> str:
    return ",".join(f'{n}="{_esc(v)}"' for n, v in zip(names, values))
