"""The supervisor: binds the sockets, forks the workers, keeps them alive, drains.

It runs no event loop and serves no request. It binds the listening sockets (one
per worker slot, ``process.listeners``: worker i of every generation accepts on
slot i's; and the admin listener, with ``server.admin_port``), forks N workers
that inherit them, replaces a worker that dies, and on SIGTERM/SIGINT forwards the
stop to every worker, lets go of its own copy of the sockets, waits for the
workers' drains (``process.drain``: ``drain_delay_s`` then ``drain_grace_s``;
a worker still alive shortly after that is killed) and removes what it
created. On SIGHUP (or ``POST /admin/reload``, which a worker turns into a
SIGHUP) it re-reads the config and rolls: a new generation of workers with
their own host state starts on the same socket and, once it serves, the old
generation is retired (SIGUSR1: it drains without delay). The host's state
(circuit states, bucket levels, spend, session bindings) carries over by name
(``HostState.carry_state_from``), at the roll and again with what the old
generation did while it drained. The counters and histograms go over when the
new generation serves (``HostState.hand_metrics_over_from``): until then every
worker, new ones too, shows the old generation's totals on /metrics, and from
then the new one's, so that no scrape sees a counter go down.

A worker that dies after it served is replaced at once; one that dies before it
served (its start-up error is in the log) is replaced after a delay that doubles
with each such death of its slot. When no worker of the current generation
serves and its workers have died at start ``_GIVE_UP_AFTER`` times in a row, a
reload is abandoned (the generation it was replacing stays current), and
otherwise the supervisor stops and ``serve`` exits 1: a server none of whose
workers can start closes its listeners rather than leave clients waiting. While another worker
serves, a slot whose worker dies at start twice in a row is parked (``listeners.park_slot``): new
connections go to the workers that serve. Every replacement is counted
(``fastinfer_worker_restarts_total``).
"""
from __future__ import annotations

import gc
import logging
import math
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable

from .._core.proc import die_with_parent, release_free_memory
from ..config import Config, ConfigError
from ..metrics import Metrics
from .hostwide import HostState
from .listeners import ListenError, bind_slots, bind_socket, keep_only, park_slot, url_host
from .signals import RETIRE_SIGNAL, STOP_SIGNALS

log = logging.getLogger("fastinfer.supervisor")
_RESTART_BACKOFF_S = 0.1   # a crash loop must not spin the CPU
# a worker that died before it served is replaced after _RESTART_BACKOFF_S, doubled at each such death
# of its slot up to this: a broken install or dependency fails the same way every time
_MAX_START_BACKOFF_S = 3.2
# deaths at start in a row, none of the generation serving, after which it is given up
_GIVE_UP_AFTER = 5
# a slot whose worker died at start this many times in a row, while another serves, is parked
# (``listeners.park_slot``): its new connections go to the workers that serve. Not at the first
# death: a replacement 0.1 s later would have served what waited in its queue
_PARK_AFTER = 2
_POLL_S = 0.05
# a worker past its drain (drain_delay_s + drain_grace_s) has this long to close up before it is killed;
# it needs a few milliseconds (process.drain: WRAP_UP_S and aiohttp's cleanup, then exit)
_KILL_MARGIN_S = 0.7
# a reload retires the old generation once every new worker serves, or after this with at least one
_NEW_GENERATION_WAIT_S = 10.0


class Generation:
    """Workers started from one config, sharing one host state."""

    def __init__(self, number: int, config: Config, host: HostState):
        self.number = number
        self.config = config
        self.host = host
        self.pids: dict[int, int] = {}   # pid -> worker index
        self.carried = None              # state already carried to the next generation (at the roll)
        self.counted = None              # counters and histograms already handed over to it (once it serves)
        # the generation it replaced, whose requests in flight it counts in its concurrency limits, and
        # what it counts of them now (``HostState.settle_in_flight``)
        self.in_flight_of: tuple[Generation, dict] | None = None
        self.started_at = time.monotonic()
        self.kill_at: float | None = None  # once retired: when workers still draining are killed
        self.overdue_logged = False
        self.respawn_at: dict[int, float] = {}     # worker index -> when its dead worker is replaced
        self.failed_starts: dict[int, int] = {}    # worker index -> its deaths at start since one served
        self.deaths_at_start = 0                   # of any slot, since a worker of this generation served
        self.last_death = 0                        # the wait status of the last worker that died
        self.abandoned = False                     # a reload given up: its state is not carried back
        self.restarts: Counter[tuple[int, bool]] = Counter()   # workers it replaced, by (index, had served)

    def serving(self) -> int:
        """How many of this generation's workers accept connections (each counts itself)."""
        return Metrics(self.host.metrics_layout, self.host.segment).workers_serving()

    def served(self, index: int) -> bool:
        """Whether worker ``index`` got as far as serving (read before its series is cleared)."""
        metrics = Metrics(self.host.metrics_layout, self.host.segment)
        return bool(metrics.counters.get(metrics.layout.counter_index[("_worker_serving", (str(index),))]))

    def cannot_start(self) -> bool:
        """Its workers died at start too many times in a row, and none serves."""
        return self.deaths_at_start >= _GIVE_UP_AFTER and not self.serving()

    def signal_all(self, sig: int) -> None:
        for pid in self.pids:
            _signal(pid, sig)


class Supervisor:
    """Forks, watches and drains workers; on SIGHUP rolls them onto a re-read config."""

    def __init__(self, config: Config, n_workers: int, reload_config: Callable[[], Config] | None = None,
                 one_time_token: str | None = None, state_dir=None,
                 apply_logging: Callable[[Config], None] | None = None):
        self.config = config
        self.state_dir = state_dir               # limits.StateDir (locked) when server.state_dir is set
        self.n_workers = n_workers
        self.reload_config = reload_config
        # the config's [logging] made this process's: workers are forked with it (a reload's new
        # config before its workers start; the running one again when that reload is abandoned)
        self.apply_logging = apply_logging or (lambda config: None)
        self.one_time_token = one_time_token     # the admin key of this run when none is configured
        self.slots: list[socket.socket] = []        # the public listener: one socket per worker slot
        self.admin_sock: socket.socket | None = None   # server.admin_port: the operator's own listener
        self.current: Generation | None = None
        self.retiring: list[Generation] = []     # replaced by a reload: draining, or waiting to be retired
        self._generations = 0                     # numbers the generations (in the log)
        self._stopping = False
        self._reload = False

    def run(self) -> int:
        server = self.config.server
        self.slots = bind_slots(server.host, server.port, self.n_workers)
        if server.admin_port is not None:
            try:
                self.admin_sock = bind_socket(server.admin_host or "127.0.0.1", server.admin_port)
            except ListenError:
                self._close_sockets()
                raise
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        self.current = Generation(0, self.config, HostState.create(self.config, self.n_workers, self.state_dir))
        self.current.host.restore_limits(self.config)
        try:
            for index in range(self.n_workers):
                self._spawn(self.current, index)
            print(self._announcement(), flush=True)
            code = self._watch()
            self._drain()
            self.current.host.save_limits(self.config)   # every worker is gone: the final state
            return code
        finally:
            self._close_sockets()
            for generation in [self.current, *self.retiring]:
                generation.host.close()

    def _close_sockets(self) -> None:
        for sock in self.slots:
            sock.close()
        if self.admin_sock is not None:
            self.admin_sock.close()

    def _announcement(self) -> str:
        """What ``serve`` prints once listening. The first line is the one scripts and tests wait
        for (its port is real even with --port 0); the one-time admin token is printed here
        and nowhere else."""
        host, port = self.slots[0].getsockname()[:2]
        lines = [(f"fastinfer serving on http://{url_host(host)}:{port} with {self.n_workers} workers "
                  f"(pid {os.getpid()})")]
        operator = f"http://{_browsable(host)}:{port}"
        if self.admin_sock is not None:
            admin_host, admin_port = self.admin_sock.getsockname()[:2]
            operator = f"http://{_browsable(admin_host)}:{admin_port}"
            lines.append(f"admin API, dashboard and metrics on {operator} (not on the public listener)")
        if self.one_time_token:
            lines.append(f"dashboard: {operator}/dashboard#token={self.one_time_token} "
                         "(a one-time admin token for this run; set server.admin_key to choose one)")
        else:
            lines.append(f"dashboard: {operator}/dashboard (admin key: server.admin_key)")
        return "\n".join(lines)

    def _on_stop(self, signum, frame) -> None:
        self._stopping = True

    def _on_reload(self, signum, frame) -> None:
        self._reload = True

    def _spawn(self, generation: Generation, index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        # a stop signal landing between fork and the worker's own handlers would hit the
        # supervisor's handler in the child and be lost: hold signals across the fork
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        # what the supervisor built is never collected in a worker: keep the collector off its
        # pages, which would otherwise be copied into every worker the first time it runs
        gc.freeze()
        # and the heap's free pages go back before the fork: resident here, they would be resident
        # (and counted) in every worker too
        release_free_memory()
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                # before the imports (a second or two): a supervisor that dies meanwhile leaves no
                # orphan. Asked after a death already happened, the kernel would never send it
                die_with_parent(signal.SIGTERM)
                if os.getppid() != supervisor:
                    return
                # nor may a stop kill the worker while it starts (SIG_DFL did): its slot's queue
                # already holds connections, which the socket's close would reset. It is kept, with
                # when it came, and the worker drains once it serves (process.drain)
                stops: list[float] = []
                for sig in STOP_SIGNALS:
                    signal.signal(sig, lambda signum, frame: stops.append(time.monotonic()))
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
                # imported here, not by the supervisor: it needs no aiohttp, gateway or engine, and
                # a module imported before the fork is resident in every process of the tree
                _frozenlist_in_python()
                from .worker import run_worker
                code = run_worker(index, generation.config, keep_only(self.slots, index), generation.host,
                                  self.admin_sock, stops, self._metrics_predecessor(generation))
            except Exception:
                # raised before the worker's own handler (a dependency that fails to import): without
                # this line the log would show only the supervisor's "died (exit 1)"
                log.exception("worker %d (pid %d) could not start", index, os.getpid())
                _flush_logs()
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        generation.pids[pid] = index
        log.debug("worker %d of generation %d started as pid %d", index, generation.number, pid)

    def _metrics_predecessor(self, generation: Generation) -> tuple[Config, HostState] | None:
        """The generation that answers /metrics while ``generation``, a reload's, has not taken over:
        the newest retiring one that still does (its workers show its totals; so do the new ones)."""
        if generation.host.metrics_live:
            return None
        answering = [g for g in self.retiring if g.host.metrics_live and g.host is not generation.host]
        return (answering[-1].config, answering[-1].host) if answering else None

    def _all_generations(self) -> list[Generation]:
        return [self.current, *self.retiring]

    def _reap(self) -> list[tuple[Generation, int, int, int]]:
        """(generation, pid, index, status) of every worker that has exited since the last call."""
        dead = []
        while any(g.pids for g in self._all_generations()):
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            for generation in self._all_generations():
                index = generation.pids.pop(pid, None)
                if index is not None:
                    dead.append((generation, pid, index, status))
                    break
        for generation in list(self.retiring):
            if not generation.pids:  # every retired worker has drained: its state can go
                self._settle_in_flight(of=generation)
                if not generation.abandoned:
                    self.current.host.carry_state_from(generation.host, since=generation.carried)
                    # what it counted while it drained (all it counted, if a stop came before the hand-over)
                    self.current.host.hand_metrics_over_from(generation.host, since=generation.counted)
                generation.host.close()
                self.retiring.remove(generation)
        return dead

    def _watch(self) -> int:
        """Keep the workers alive until a stop (0), or until none of them can start (1)."""
        while not self._stopping:
            for generation, pid, index, status in self._reap():
                if generation is self.current:   # else a retired worker that finished draining
                    self._schedule_replacement(generation, pid, index, status)
            if self.current.cannot_start() and not self._abandon_roll():
                log.error("every worker died at start %d times in a row; the last one: %s; see its error "
                          "above; stopping", self.current.deaths_at_start, _describe(self.current.last_death))
                return 1
            if not self._stopping:   # a stop that came meanwhile starts no worker
                self._replace_due()
            if self._reload and not self._stopping:
                self._reload = False
                self._roll()
            self._retire_when_replaced()
            self._hand_metrics_over()
            self._settle_in_flight()
            self._kill_overdue()
            time.sleep(_POLL_S)
        return 0

    def _schedule_replacement(self, generation: Generation, pid: int, index: int, status: int) -> None:
        """A worker that served is replaced at once; one that died at start, later each time."""
        served = generation.served(index)
        reclaimed = generation.host.reclaim(index)
        metrics = Metrics(generation.host.metrics_layout, generation.host.segment)
        metrics.worker(index).clear()
        metrics.worker_restarted(index, served)     # what an operator alerts on: the log line says why
        generation.restarts[index, served] += 1
        generation.last_death = status
        if served:
            generation.failed_starts[index] = 0
            generation.deaths_at_start = 0
            delay, when = _RESTART_BACKOFF_S, ""
        else:
            failures = generation.failed_starts[index] = generation.failed_starts.get(index, 0) + 1
            generation.deaths_at_start += 1
            delay = min(_RESTART_BACKOFF_S * 2 ** (failures - 1), _MAX_START_BACKOFF_S)
            when = " at start"
        log.warning("worker %d (pid %d) died%s (%s); reclaimed %s; replacing it in %gs",
                    index, pid, when, _describe(status), reclaimed, delay)
        generation.respawn_at[index] = time.monotonic() + delay
        if not served and generation.failed_starts[index] >= _PARK_AFTER:
            self._park_unless_rolling(generation, index)

    def _park_unless_rolling(self, generation: Generation, index: int) -> None:
        """Slot ``index``'s worker keeps dying at start: park the slot while another worker serves.
        Not while a reload waits to retire the generation it replaces: its worker of the slot still
        accepts on the slot's socket (its own copy). Once retired, it stops accepting at once."""
        if any(g.kill_at is None for g in self.retiring) or not generation.serving():
            return
        if park_slot(self.slots, index, self.config.server.host):
            log.warning("worker slot %d parked: new connections go to the workers that serve until one "
                        "starts on it", index)

    def _replace_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.current.respawn_at.items()):
            if now >= when:
                del self.current.respawn_at[index]
                self._spawn(self.current, index)

    def _abandon_roll(self) -> bool:
        """Give up a reload whose workers cannot start: the generation it was replacing, still
        serving, is current again. False when there is none (no reload, or it is already retired)."""
        waiting = [g for g in self.retiring if g.kill_at is None]
        if not waiting:
            return False
        failed, previous = self.current, waiting[-1]
        self.apply_logging(previous.config)    # the line below and every later one as the running config says
        failed.abandoned = True
        failed.respawn_at.clear()
        self._retire(failed)   # those still starting: the listeners they hold stay open in the old workers
        self.retiring.remove(previous)
        self.retiring.append(failed)
        self.current, self.config = previous, previous.config
        previous.host.take_back_sessions(failed.host)
        # the given-up generation's segment goes, and its counts with it: its start failures are
        # what an operator must see (fastinfer_worker_restarts_total), so they are the running one's
        metrics = Metrics(previous.host.metrics_layout, previous.host.segment)
        for (index, served), n in failed.restarts.items():
            metrics.worker_restarted(index, served, n)
        # a slot whose worker died while the roll went on was left empty (retired workers are not replaced)
        running = set(previous.pids.values())
        for index in range(self.n_workers):
            if index not in running:
                previous.respawn_at.setdefault(index, time.monotonic())
        # said once the running generation has its state back: what the line announces is done
        log.error("reload failed: the new workers died at start %d times in a row (the last one: %s; see its "
                  "error above); the running config stays", failed.deaths_at_start, _describe(failed.last_death))
        return True

    def _roll(self) -> None:
        """Start workers on the re-read config; the old ones are retired once these serve."""
        try:
            config = self.reload_config() if self.reload_config else self.config
        except ConfigError as e:
            log.error("reload refused, the running config stays: %s", e)
            return
        old = self.current
        self.apply_logging(config)
        host = HostState.create(config, self.n_workers, self.state_dir, metrics_live=False)
        old.carried = host.carry_state_from(old.host)
        host.count_reload()
        self._generations += 1
        self.current = Generation(self._generations, config, host)
        self.config = config
        self.retiring.append(old)        # before the spawns: the new workers show its metrics until it is retired
        self.current.in_flight_of = (old, host.settle_in_flight(old.host))
        for index in range(self.n_workers):
            self._spawn(self.current, index)
        log.info("config reloaded: generation %d starting, generation %d retired once it serves",
                 self.current.number, old.number)

    def _retire_when_replaced(self) -> None:
        """Retire (SIGUSR1: drain now, no delay) the generations a reload replaced, once the current
        one accepts: until then they keep serving, so no connection waits on a listener nobody takes."""
        waiting = [g for g in self.retiring if g.kill_at is None]
        if not waiting:
            return
        serving = self.current.serving()
        waited = time.monotonic() - self.current.started_at
        if serving < self.n_workers and not (serving and waited > _NEW_GENERATION_WAIT_S):
            if not serving and waited > _NEW_GENERATION_WAIT_S and not self.current.overdue_logged:
                self.current.overdue_logged = True
                log.warning("no worker of generation %d serves after %gs: the previous generation keeps "
                            "serving until one does", self.current.number, _NEW_GENERATION_WAIT_S)
            return
        for generation in waiting:
            self._retire(generation)
            log.info("generation %d serving; generation %d draining", self.current.number, generation.number)

    def _settle_in_flight(self, of: Generation | None = None) -> None:
        """Each generation a reload started counts the requests its predecessor still has in flight
        in its concurrency limits (``HostState.settle_in_flight``): moved to their number now, or, for
        the predecessor ``of`` that has exited, given back (its segment goes)."""
        for generation in self._all_generations():
            if generation.in_flight_of is None:
                continue
            source, reserved = generation.in_flight_of
            if source is of or generation is of:
                if generation is not of:
                    generation.host.settle_in_flight(source.host, reserved, final=True)
                generation.in_flight_of = None
            elif of is None:
                generation.in_flight_of = (source, generation.host.settle_in_flight(source.host, reserved))

    def _hand_metrics_over(self) -> None:
        """/metrics answers from the new generation's segment, the old one's counts added into it, once
        every retired worker has closed its listeners: from then on no new connection reaches one, and
        until then every worker (the new ones too) shows the old generation's totals."""
        for generation in self.retiring:
            if (generation.kill_at is not None and generation.counted is None and not generation.abandoned
                    and not generation.serving()):
                generation.counted = self.current.host.hand_metrics_over_from(generation.host)

    @staticmethod
    def _retire(generation: Generation) -> None:
        generation.signal_all(RETIRE_SIGNAL)
        generation.kill_at = time.monotonic() + generation.config.server.drain_grace_s + _KILL_MARGIN_S

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for generation in self.retiring:
            if generation.kill_at is not None and now > generation.kill_at:
                _kill_stragglers(generation)
                generation.kill_at = math.inf   # once

    def _drain(self) -> None:
        server = self.config.server
        pids = [pid for g in self._all_generations() for pid in g.pids]
        log.info("stopping: draining %d workers (delay %gs, grace %gs)", len(pids), server.drain_delay_s,
                 server.drain_grace_s)
        for generation in self._all_generations():
            generation.signal_all(signal.SIGTERM)
        # the listeners close when the last worker stops accepting (after drain_delay_s), not before
        self._close_sockets()
        deadline = time.monotonic() + server.drain_delay_s + server.drain_grace_s + _KILL_MARGIN_S
        while any(g.pids for g in self._all_generations()) and time.monotonic() < deadline:
            self._reap()
            time.sleep(_POLL_S / 5)
        for g in self._all_generations():
            _kill_stragglers(g)
        while any(g.pids for g in self._all_generations()):
            self._reap()
            time.sleep(_POLL_S)
        log.debug("every worker has exited")


def _kill_stragglers(generation: Generation) -> None:
    for pid in generation.pids:
        log.warning("worker pid %d of generation %d did not drain in time; killing it", pid, generation.number)
        _signal(pid, signal.SIGKILL)


def _browsable(host: str) -> str:
    """An address a browser on this machine can open: the loopback one for a wildcard."""
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host) or url_host(host)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _flush_logs() -> None:
    """What this process logged goes out now: ``os._exit`` flushes nothing."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"


def _frozenlist_in_python() -> None:
    """aiohttp's frozen lists (its signals: never touched on the data path) in frozenlist's pure
    Python, unless the environment chose: its compiled module is C++ and loads ``libstdc++`` into the
    worker, ~1 MiB resident that nothing else there needs (issue 12's memory bar)."""
    os.environ.setdefault("FROZENLIST_NO_EXTENSIONS", "1")
