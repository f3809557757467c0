"""``python -m bench.instructions --functions``: a worker's cachegrind file read into instructions by
function, and the functions whose count grew most between two runs, per request. (The counting
itself needs valgrind, which the suite does not install; these read files in cachegrind's format.)
And ``--at-once``'s mock: nginx answering with what the Python mock streams, in one piece."""
import http.client
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parent.parent))   # the bench package (after the installed fastinfer)
from bench.instructions import Requests, costliest_functions, function_instructions, start_mock, to_markdown
from bench.nginx import nginx_binary
from bench.run import request_body
from conftest import without_ids


def _cachegrind(*functions) -> str:
    """A cachegrind output file: (source file, function, [(line, count), ...]) in order."""
    lines = ["desc: I1 cache: 32768 B, 64 B, 8-way associative", "cmd: python -m fastinfer serve", "events: Ir"]
    source = None
    for file, function, counts in functions:
        if file != source:
            lines.append(f"fl={file}")
            source = file
        lines.append(f"fn={function}")
        lines += [f"{line} {count}" for line, count in counts]
    total = sum(count for *_, counts in functions for _, count in counts)
    return "\n".join(lines + [f"summary: {total}", ""])


def test_a_cachegrind_file_is_counted_by_function_and_source_file():
    text = _cachegrind(("ceval.c", "_PyEval_EvalFrameDefault", [(10, 400), (11, 100)]),
                       ("ceval.c", "initialize_locals", [(90, 7)]),
                       ("sha256.h", "fi_sha256_block", [(3, 50)]),
                       ("other.c", "_PyEval_EvalFrameDefault", [(1, 2)]))    # same name, another file
    assert function_instructions(text) == {("ceval.c", "_PyEval_EvalFrameDefault"): 500,
                                           ("ceval.c", "initialize_locals"): 7,
                                           ("sha256.h", "fi_sha256_block"): 50,
                                           ("other.c", "_PyEval_EvalFrameDefault"): 2}


def test_the_costliest_functions_are_what_grew_between_the_runs_per_request():
    fewer = function_instructions(_cachegrind(("ceval.c", "eval", [(1, 1000)]), ("lines.c", "_line", [(1, 0)]),
                                              ("init.c", "start_up", [(1, 9999)])))
    more = function_instructions(_cachegrind(("ceval.c", "eval", [(1, 5000)]), ("lines.c", "_line", [(1, 600)]),
                                             ("init.c", "start_up", [(1, 9999)]),     # start-up: cancels out
                                             ("sha256.h", "block", [(1, 2000)])))     # only in the longer run
    top = costliest_functions(fewer, more, requests=100, most=2)
    assert top == [{"function": "eval", "file": "ceval.c", "per_request": 40},
                   {"function": "block", "file": "sha256.h", "per_request": 20}]
    assert [f["function"] for f in costliest_functions(fewer, more, 100, 10)] == ["eval", "block", "_line"]
    table = to_markdown({"rows": [{"path": "gateway-full", "per_request": 210_000, "functions": top}]})
    assert "| `eval` | ceval.c | 40 |" in table and "Costliest functions of gateway-full" in table


def _post(port: int, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 200
        return resp.read()


@pytest.mark.skipif(nginx_binary() is None, reason="needs nginx (.ci/run installs it)")
def test_at_once_counts_against_nginx_serving_the_python_mocks_stream_in_one_piece():
    requests = Requests(stream=True)
    # nginx's workers run unprivileged: a directory straight under /tmp, as the bench's (pytest's
    # tmp_path lies under a directory only root may enter)
    tmp_path = Path(tempfile.mkdtemp(prefix="fastinfer-test-at-once-"))
    (tmp_path / "python").mkdir()
    paced = start_mock(tmp_path / "python", requests, 8, at_once=False)
    try:
        assert paced.kind == "python"
        expected = _post(paced.port, request_body(True))
    finally:
        paced.stop()
    at_once = start_mock(tmp_path, requests, 8, at_once=True)
    try:
        assert at_once.kind == "nginx"
        answer = _post(at_once.port, request_body(True))
    finally:
        at_once.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)
    # the same 8 events (role, 6 tokens, finish) and the end, as the Python mock streams them
    assert answer.count(b"data: {") == 8 and answer.rstrip().endswith(b"data: [DONE]")
    assert without_ids(answer) == without_ids(expected)


def test_paced_the_python_mock_sends_each_event_of_a_stream_in_a_read_of_its_own(tmp_path):
    """``--paced-itl-ms``: the events come apart, each a read of its own (what a model server's token
    stream costs a relay), where unpaced they may come together."""
    requests = Requests(stream=True)
    mock = start_mock(tmp_path, requests, 8, at_once=False, paced_itl_ms=100.0)
    try:
        body = request_body(True)
        with socket.create_connection(("127.0.0.1", mock.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
            reads = []
            while not reads or b"[DONE]" not in reads[-1]:
                data = sock.recv(65536)
                assert data, "the mock closed the stream before its end"
                reads.append(data)
    finally:
        mock.stop()
    with_events = [r for r in reads if b"data: {" in r]
    assert len(with_events) == 8 and all(r.count(b"data: {") == 1 for r in with_events)
