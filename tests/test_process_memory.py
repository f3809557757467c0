"""The tree stays small. The supervisor loads neither aiohttp (the workers' web layer) nor numpy,
which a fork would otherwise make resident in every process of the tree; the workers load no numpy
even to answer a metrics scrape, and no Redis client (nor what it brings: OpenTelemetry,
cryptography) when no [cluster] is configured."""
from __future__ import annotations

from procs import children_of, http_json, metrics_text, wait_for


def mapped_files(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[-1] for line in f if "/" in line}


def loaded(files: set[str], package: str) -> bool:
    return any(f"/{package}/" in path for path in files)


def test_the_supervisor_loads_no_web_layer_nor_numpy_and_its_workers_serve(start_gateway):
    gw = start_gateway(workers=2)
    assert http_json("GET", gw.base + "/v1/models", headers={"connection": "close"})[0] == 200
    assert wait_for(lambda: len(children_of(gw.pid)) == 2)
    supervisor = mapped_files(gw.pid)
    workers = [mapped_files(pid) for pid in children_of(gw.pid)]
    # the workers have the compiled parts of aiohttp mapped: what the supervisor must not have
    assert all(loaded(files, "aiohttp") for files in workers)
    assert not loaded(supervisor, "aiohttp")
    assert not loaded(supervisor, "numpy")
    assert loaded(supervisor, "_core")       # the shared segment's module: the check sees loaded code


def test_workers_scraped_for_metrics_load_neither_numpy_nor_redis_without_a_cluster(start_gateway):
    gw = start_gateway(workers=2)
    assert wait_for(lambda: len(children_of(gw.pid)) == 2)
    for _ in range(8):      # each on a new connection: the workers' listeners share them out
        assert "fastinfer_requests_total" in metrics_text(gw)
    workers = [mapped_files(pid) for pid in children_of(gw.pid)]
    assert all(loaded(files, "aiohttp") for files in workers)   # the check sees what a worker loads
    assert not any(loaded(files, "numpy") for files in workers)
    assert not any(loaded(files, "hiredis") or loaded(files, "cryptography") for files in workers)
