"""``python -m bench.opcodes``: a real worker's bytecodes per request, by Python function, counted
between two signals. Counted twice over different request counts, a request's opcodes in the
attempt loop come out the same: the count is per request, the warm-up and start-up left out."""
import os
import sys
import tempfile
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))   # the bench package (after the installed fastinfer)
from bench.instructions import Requests, start_mock
from bench.opcodes import _CALLS, _COUNTS_ENV, _FAMILIES, count_path, to_markdown
from bench.services import fastinfer_tree


def test_a_workers_opcodes_are_counted_per_request_by_function():
    tree = fastinfer_tree()
    workdir = Path(tempfile.mkdtemp(prefix="fastinfer-test-opcodes-"))
    requests = Requests()
    mock = start_mock(workdir, requests, 10, False)
    try:
        (workdir / "a").mkdir()
        (workdir / "b").mkdir()
        fewer = count_path("gateway", tree, workdir / "a", mock.port, requests, 20, 10, False)
        more = count_path("gateway", tree, workdir / "b", mock.port, requests, 20, 30, False)
    finally:
        mock.stop()

    def attempt_loop(row) -> float:
        (count,) = [n for (file, _, name), n in row["functions"].items()
                    if file.endswith("fastinfer/engine/engine.py") and name == "_attempt_loop"]
        return count

    assert attempt_loop(fewer) == attempt_loop(more) > 20        # the same code a request, whatever the count
    assert 300 < fewer["per_request"] < 5000
    assert _COUNTS_ENV not in os.environ                          # set for the gateway only, not left behind
    assert not any(name in ("_launch", "_count_in_child") for _, _, name in fewer["functions"])
    table = to_markdown({"tree": str(tree), "rows": [fewer]}, 5)
    assert "| gateway |" in table and "fastinfer/engine/engine.py:" in table and str(tree) not in table


def test_the_reads_a_request_leaves_unspecialized_are_listed_and_the_configs_are_not_among_them():
    """``--unspecialized``: the attribute and global reads a warm worker still runs generically, per
    request. A deployment's config is read on every request (its name, retry, timeouts...): none of
    those reads may be among them (a ``functools.cached_property`` on it made them all generic)."""
    tree = fastinfer_tree()
    workdir = Path(tempfile.mkdtemp(prefix="fastinfer-test-opcodes-"))
    requests = Requests()
    mock = start_mock(workdir, requests, 10, False)
    try:
        row = count_path("gateway-full", tree, workdir, mock.port, requests, 100, 20, False, unspecialized=True)
    finally:
        mock.stop()
    reads = row["functions"]
    assert reads and all(any(read.split()[0] in family for family in _FAMILIES.values()) for _, _, _, read in reads)
    # and the calls: the gateway's overhead clock (``time.perf_counter``, a builtin without arguments,
    # which 3.11 does not specialize) is one, on every request
    calls = {(file.rsplit("fastinfer/", 1)[-1], name) for file, _, name, read in reads if read.split()[0] in _CALLS}
    assert ("gateway/app.py", "_serve") in calls, calls
    # and the operations: a request's record is a subscript of a dict subclass (``DirectRequest``),
    # which 3.11 does not specialize
    subscripts = {file.rsplit("fastinfer/", 1)[-1] for file, _, _, read in reads if read.startswith("BINARY_SUBSCR ")}
    assert "gateway/app.py" in subscripts, subscripts
    engine_reads = {read.split()[1] for file, _, _, read in reads if file.endswith("fastinfer/engine/engine.py")}
    assert not engine_reads & {"name", "retry", "timeouts", "queue_timeout_s", "upstream_model"}, engine_reads
    table = to_markdown({"tree": str(tree), "unspecialized": True, "rows": [row]}, 100)
    assert all(f"unspecialized {name} per request" in table for name in ("reads", "calls", "operations"))
    assert "| `LOAD_" in table and f"| `{_CALLS[0]} " in table
