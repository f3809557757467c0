"""What a process tree costs, read from /proc: CPU time, memory, its workers; and CPU pinning.

Owns: finding a process's descendants, their CPU time (whole tree and per worker), the tree's
RSS and PSS, and the bench's CPU layout (which CPUs the load side and the gateways run on).
Must not touch: the processes themselves (it only reads /proc and sets affinity at start).

Every figure is for the whole tree, because a gateway is a supervisor and its workers (fastinfer,
nginx) or one process with threads (vllm-router): a figure for one process would miss work the
others do. RSS counts a page once per process that maps it, so the workers' shared, forked heap is
counted once per worker; PSS divides each shared page among its sharers and sums to what the tree
really holds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(path: str) -> list[bytes] | None:
    """The fields of a /proc stat file after the command name (field 3 onwards), or None if gone."""
    try:
        stat = Path(path).read_bytes()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:].split()


def _children() -> dict[int, list[int]]:
    """Every live process's children, by parent pid."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(f"/proc/{entry}/stat")
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it, parents before children."""
    children = _children()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        tree.append(pid)
        todo.extend(sorted(children.get(pid, ())))
    return tree


def cpu_seconds_of(pid: int, task: int | None = None) -> float:
    """user + system CPU time of a process (or of one of its threads), 0 if it is gone."""
    fields = _stat_fields(f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat")
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK if fields else 0.0


def cpu_and_system_seconds_of(pid: int) -> tuple[float, float]:
    """A process's user + system CPU time and its system (kernel) part, from one read; 0s if it is gone."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    if not fields:
        return 0.0, 0.0
    system = int(fields[12])
    return (int(fields[11]) + system) / _CLK_TCK, system / _CLK_TCK


def threads_of(pid: int) -> dict[int, str]:
    """A process's threads: tid -> name (``comm``)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out[int(tid)] = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            pass
    return out


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB, from smaps_rollup (0, 0 if it is gone)."""
    rss = pss = 0
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    for line in text.splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


class ProcessTree:
    """Mixin for a service whose root process is ``self.proc`` (a ``subprocess.Popen``)."""

    proc = None            # set by the service
    worker_threads = None  # a single-process service: the name prefix of its worker threads

    def pids(self) -> list[int]:
        """The root process and everything below it (a gateway's supervisor and workers)."""
        return descendants(self.proc.pid)

    def cpu_seconds(self) -> float:
        """user + system CPU time of the whole tree (live processes)."""
        return sum(cpu_seconds_of(pid) for pid in self.pids())

    def cpu_and_system_seconds(self) -> tuple[float, float]:
        """``cpu_seconds`` and the kernel's part of it (system calls, and the loopback's delivery of
        what the tree sends: the sender's CPU runs the receiver's TCP input), read together."""
        each = [cpu_and_system_seconds_of(pid) for pid in self.pids()]
        return sum(c for c, _ in each), sum(s for _, s in each)

    def memory_mib(self) -> dict:
        """RSS and PSS of the whole tree, MiB, and each process's RSS (the root first)."""
        each = [_memory_kib(pid) for pid in self.pids()]
        return {"rss_mib": round(sum(r for r, _ in each) / 1024, 1), "pss_mib": round(sum(p for _, p in each) / 1024, 1),
                "rss_each_mib": [round(r / 1024, 1) for r, _ in each]}

    def worker_cpu(self) -> dict[str, float]:
        """CPU seconds per worker: the root's direct child processes when it has any (fastinfer's
        and nginx's workers), else the root's threads named ``worker_threads*`` (a single-process
        router's runtime threads)."""
        children = sorted(_children().get(self.proc.pid, ()))
        if children:
            return {f"pid {pid}": cpu_seconds_of(pid) for pid in children}
        return {f"thread {name} {tid}": cpu_seconds_of(self.proc.pid, tid)
                for tid, name in threads_of(self.proc.pid).items()
                if self.worker_threads and name.startswith(self.worker_threads)}


def worker_split(before: dict[str, float], after: dict[str, float]) -> dict:
    """Each worker's share of the workers' CPU between two ``worker_cpu`` readings.

    Workers that did nothing count (a worker idle while another does everything is the finding),
    those that started or ended in between are left out."""
    used = {w: after[w] - before[w] for w in after if w in before}
    total = sum(used.values())
    if total <= 0:
        return {"workers": len(used), "cpu_s": {}, "shares": [], "min_share": None, "max_share": None}
    shares = sorted((round(v / total, 3) for v in used.values()), reverse=True)
    return {"workers": len(used), "cpu_s": {w: round(v, 3) for w, v in used.items()}, "shares": shares,
            "min_share": shares[-1], "max_share": shares[0]}


# ----------------------------------------------------------------- CPU layout

def parse_cpus(text: str | None) -> set[int] | None:
    """'0,2-3' -> {0, 2, 3}; 'all' -> every CPU this process may use; '' or None -> None (no pinning)."""
    if not text:
        return None
    if text == "all":
        return set(os.sched_getaffinity(0))
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


@dataclass
class CpuLayout:
    """Where the bench's processes run. The load side (the load generator and the mock upstream)
    goes on ``load`` so the gateway under test has the other CPUs to itself as far as there are
    any; the gateways run on ``gateway``. None = not pinned."""

    load: set[int] | None
    gateway: set[int] | None

    @classmethod
    def default(cls) -> "CpuLayout":
        """On a machine with 2+ CPUs: load side on the last CPU, the gateways on all of them."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls(None, None)
        return cls({cpus[-1]}, set(cpus))

    @classmethod
    def from_options(cls, load_cpus: str | None, gateway_cpus: str | None) -> "CpuLayout":
        """The layout ``--load-cpus`` and ``--gateway-cpus`` ask for (``parse_cpus``' text; None: the
        option was not given), each side not given keeping ``default``'s: ``--gateway-cpus 0`` alone
        still pins the load side to the last CPU, as its help says."""
        default = cls.default()
        return cls(default.load if load_cpus is None else parse_cpus(load_cpus),
                   default.gateway if gateway_cpus is None else parse_cpus(gateway_cpus))

    def pin_load_side(self) -> None:
        """Pin this process (the asyncio load generator; wrk and the mock inherit it)."""
        if self.load:
            os.sched_setaffinity(0, self.load)

    def gateway_preexec(self):
        """A ``preexec_fn`` that moves a gateway onto its CPUs before it starts (its workers inherit)."""
        cpus = self.gateway
        return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None

    def describe(self) -> str:
        def show(cpus):
            return ",".join(map(str, sorted(cpus))) if cpus else "any"
        return (f"load generator and mock upstream on CPU {show(self.load)}, "
                f"gateways under test on CPU {show(self.gateway)}")
