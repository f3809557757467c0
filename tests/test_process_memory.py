"""The tree stays small. The supervisor loads neither aiohttp (the workers' web layer), the wire formats
nor numpy, nor
asyncio, ssl and hashlib (it runs no event loop and checks no key), which a fork would otherwise make
resident in every process of the tree, and creating the shared segment leaves its admission pool's
pages untouched (they are resident only where a queue reaches them); the workers load no numpy
even to answer a metrics scrape, and no Redis client (nor what it brings: OpenTelemetry,
cryptography) when no [cluster] is configured; nor does any process load SQLite without a state_dir,
or ctypes, and a worker runs one thread and no C++ runtime."""
from __future__ import annotations

import os

from conftest import upstream_config
from procs import children_of, http_json, metrics_text, wait_for


def mapped_files(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[-1] for line in f if "/" in line}


def loaded(files: set[str], package: str) -> bool:
    return any(f"/{package}/" in path for path in files)


def extension_loaded(files: set[str], module: str) -> bool:
    """Whether the compiled module ``module`` (``_asyncio``, ``_ssl``) is mapped."""
    return any(path.rsplit("/", 1)[-1].startswith(module + ".") for path in files)


def shared_segment_rss_kb(pid: int) -> int:
    """Resident kB of ``pid``'s mappings of a fastinfer shared segment (its name is unlinked: "(deleted)")."""
    rss, inside = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if "-" in line.split(" ", 1)[0]:        # a mapping's header line
                inside = "/dev/shm/fastinfer-" in line
            elif inside and line.startswith("Rss:"):
                rss += int(line.split()[1])
    return rss


def test_the_supervisor_runs_without_asyncio_nor_openssl_and_leaves_the_admission_pool_unmapped(start_gateway):
    # max_concurrency 100 000: 6.4 MB of admission entries (64 bytes each) in the segment
    gw = start_gateway(upstream_config("http://127.0.0.1:9", max_concurrency=100000), workers=2)
    assert http_json("GET", gw.base + "/v1/models", headers={"connection": "close"})[0] == 200
    assert wait_for(lambda: len(children_of(gw.pid)) == 2)
    supervisor = mapped_files(gw.pid)
    workers = [mapped_files(pid) for pid in children_of(gw.pid)]
    assert all(extension_loaded(files, "_asyncio") for files in workers)   # the check sees asyncio
    assert not extension_loaded(supervisor, "_asyncio")
    assert not extension_loaded(supervisor, "_ssl")
    assert not extension_loaded(supervisor, "_hashlib")   # OpenSSL's libcrypto: the workers' to load
    assert 0 < shared_segment_rss_kb(gw.pid) < 1024


def test_the_supervisor_loads_no_web_layer_nor_numpy_and_its_workers_serve(start_gateway):
    gw = start_gateway(workers=2)
    assert http_json("GET", gw.base + "/v1/models", headers={"connection": "close"})[0] == 200
    assert wait_for(lambda: len(children_of(gw.pid)) == 2)
    wire = ("sse", "bodies", "access")      # the wire formats: the SSE parser, the body readers, the access buffer

    def workers_loaded() -> bool:
        # one worker answered; the other may still be importing (slower in a fresh virtualenv, compiling .pyc)
        return all(loaded(files, "aiohttp") and all(extension_loaded(files, m) for m in wire)
                   for files in map(mapped_files, children_of(gw.pid)))

    # the workers have the compiled parts of aiohttp and the wire formats mapped: what the supervisor must not have
    assert wait_for(workers_loaded)
    supervisor = mapped_files(gw.pid)
    assert not loaded(supervisor, "aiohttp")
    assert not loaded(supervisor, "numpy")
    assert loaded(supervisor, "_core")       # the shared segment's module: the check sees loaded code
    for module in wire:
        assert not extension_loaded(supervisor, module), module


def test_workers_scraped_for_metrics_load_neither_numpy_nor_redis_without_a_cluster(start_gateway):
    gw = start_gateway(workers=2)
    assert wait_for(lambda: len(children_of(gw.pid)) == 2)
    for _ in range(8):      # each on a new connection: the workers' listeners share them out
        assert "fastinfer_requests_total" in metrics_text(gw)
    workers = [mapped_files(pid) for pid in children_of(gw.pid)]
    assert all(loaded(files, "aiohttp") for files in workers)   # the check sees what a worker loads
    assert not any(loaded(files, "numpy") for files in workers)
    assert not any(loaded(files, "hiredis") or loaded(files, "cryptography") for files in workers)


def test_no_process_loads_sqlite_without_a_state_dir_nor_ctypes_nor_starts_a_thread(start_gateway, tmp_path):
    gw = start_gateway(workers=2)
    assert http_json("GET", gw.base + "/v1/models", headers={"connection": "close"})[0] == 200
    assert wait_for(lambda: len(children_of(gw.pid)) == 2)
    tree = [mapped_files(gw.pid)] + [mapped_files(pid) for pid in children_of(gw.pid)]
    assert all(extension_loaded(files, "orjson") for files in tree)    # the check sees extensions
    assert not any(extension_loaded(files, "_sqlite3") for files in tree)
    assert not any(extension_loaded(files, "_ctypes") for files in tree)   # prctl comes from _core.proc
    # the admin key (this run's one-time token) is read in place: no executor thread for it
    assert all(len(os.listdir(f"/proc/{pid}/task")) == 1 for pid in children_of(gw.pid))
    with_state = start_gateway(upstream_config("http://127.0.0.1:9").replace(
        "[server]", f'[server]\n        state_dir = "{tmp_path}"', 1), workers=1)
    assert wait_for(lambda: len(children_of(with_state.pid)) == 1)
    assert extension_loaded(mapped_files(with_state.pid), "_sqlite3")   # it saves the limits there


def test_a_worker_loads_no_cpp_runtime_for_aiohttps_frozen_lists(start_gateway):
    """frozenlist's compiled module is C++: it would map libstdc++ into each worker (~1 MiB resident)
    for aiohttp's signal lists, which the data path never touches; the workers use its Python."""
    gw = start_gateway(workers=2)
    assert http_json("GET", gw.base + "/v1/models", headers={"connection": "close"})[0] == 200
    assert wait_for(lambda: len(children_of(gw.pid)) == 2)
    workers = [mapped_files(pid) for pid in children_of(gw.pid)]
    assert all(loaded(files, "aiohttp") and loaded(files, "multidict") for files in workers)  # the check sees them
    assert not any(extension_loaded(files, "_frozenlist") for files in workers)
    assert not any("libstdc++" in path for files in workers for path in files)
