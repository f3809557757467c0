"""``python -m bench.opcodes``: the interpreter's work per request, by Python function, counted.

Why: ``bench.instructions`` shows that most of a request's instructions are the interpreter's
(libpython ran ~70 % of them in December 2026, with the features on) but not for which Python code;
py-spy samples time, which moves with the machine. This counts the bytecodes each Python function
(or line, ``--lines``) of a real worker executes per request: deterministic, so the same tree gives
the same figures run after run, and a change to the request path shows to the opcode.

How, per path (``gateway``, ``gateway-limits``, ``gateway-full``: the load bench's configs): the
gateway starts with one worker, its interpreter started by this file (``--launch``), which
arranges that every forked child turns opcode tracing (``sys.settrace`` with ``f_trace_opcodes``)
on and off at ``SIGPWR`` and writes its counts when it turns it off. One keep-alive client warms the
worker with ``--warm`` requests, the worker starts counting, ``--requests`` more are sent, it stops
and writes; the counts divided by the requests are the report. The mock is the Python mock, or nginx
with ``--at-once`` (as ``bench.instructions``'s). Compiled code (the core, uvloop, orjson) runs no
bytecode and is not counted: what is counted is what compiling could still remove.

With ``--unspecialized`` it lists instead the attribute and global reads (``LOAD_ATTR``,
``LOAD_METHOD``, ``STORE_ATTR``, ``LOAD_GLOBAL``) and the calls a request executes that the
interpreter left unspecialized after the warm-up: CPython 3.11 turns a warm read into a few machine
instructions only for some objects, and a read it cannot specialize costs ~350 (``bench.instructions``,
December 2026: an instance whose ``__dict__`` was built, a class attribute read through a
``__slots__`` instance, a compiled class's field, a callable kept on an instance and called as a
method). A call is specialized for Python functions, builtin functions and method descriptors
(the core's, built with ``binding=False``) and types with vectorcall; the rest (a Python class,
a builtin such as ``max`` or ``time.perf_counter``, a compiled class's instance) goes the generic
way, through a tuple of its arguments for one without vectorcall. On 3.11 that is the call's
``PRECALL`` (its ``CALL`` stays adaptive whenever ``PRECALL`` does the call, and under the tracing
that counts, every ``CALL`` runs: not a sign), on 3.12 and later the ``CALL``. And the operations
3.11 specializes for the common types (``BINARY_OP``, ``COMPARE_OP``, ``BINARY_SUBSCR``,
``STORE_SUBSCR``, ``UNPACK_SEQUENCE``): ``n + True`` or ``x * 1000`` with a float ``x`` is not one of them,
a subscript of a dict subclass (``DirectRequest``) neither; each costs less than a generic read.

What it is not: time. Opcodes differ in cost (a call costs more than a load), and tracing slows
the worker several-fold. Rank Python changes with it; judge them with ``bench.instructions`` and the
load bench.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOGGLE = signal.SIGPWR      # unused by the gateway; a worker's handlers are asyncio's (TERM, INT, HUP)
_COUNTS_ENV = "FASTINFER_BENCH_OPCODES_DIR"
_LINES_ENV = "FASTINFER_BENCH_OPCODES_LINES"
_UNSPECIALIZED_ENV = "FASTINFER_BENCH_OPCODES_UNSPECIALIZED"
_READS = ("LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "LOAD_GLOBAL")
_CALLS = ("PRECALL",) if sys.version_info < (3, 12) else ("CALL",)     # see the module's docstring
#: the other instructions 3.11 specializes: an operation on ints, floats or strs (``BINARY_OP_ADD_INT``),
#: a compare followed by a jump, a subscript of a list, tuple or dict, an unpacking of a tuple or list
_OPERATIONS = ("BINARY_OP", "COMPARE_OP", "BINARY_SUBSCR", "STORE_SUBSCR", "UNPACK_SEQUENCE")
_FAMILIES = {"reads": _READS, "calls": _CALLS, "operations": _OPERATIONS}
_SIGNAL_SETTLE_S = 0.3


# ---------------------------------------------------------------- inside the gateway's processes

def _count_in_child() -> None:
    """In a forked child: count opcodes between two ``TOGGLE`` signals, then write them."""
    counts: collections.Counter = collections.Counter()
    by_line = bool(os.environ.get(_LINES_ENV))
    by_instruction = bool(os.environ.get(_UNSPECIALIZED_ENV))
    tracing = [False]

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            if by_instruction:
                counts[(code, frame.f_lasti)] += 1
            else:
                counts[(code.co_filename, frame.f_lineno if by_line else code.co_firstlineno, code.co_name)] += 1
        return tracer

    def toggle(signum, frame) -> None:
        if not tracing[0]:
            counts.clear()
            sys.settrace(tracer)
            tracing[0] = True
            return
        sys.settrace(None)
        tracing[0] = False
        out = Path(os.environ[_COUNTS_ENV]) / f"{os.getpid()}.json"
        rows = _unspecialized(counts) if by_instruction else [[*key, n] for key, n in counts.items()]
        out.write_text(json.dumps(rows))

    signal.signal(TOGGLE, toggle)


def _unspecialized(counts: collections.Counter) -> list:
    """Of the executed instructions (``{(code, offset): times}``), the reads, calls and operations
    (``_FAMILIES``) still unspecialized, read as the interpreter has them now: ``[file, line, function,
    "OPNAME argument", times]`` (a call's argument: how many it passes)."""
    import dis
    by_code = collections.defaultdict(dict)
    for (code, offset), n in counts.items():
        by_code[code][offset] = n
    rows = []
    for code, executed in by_code.items():
        for ins in dis.get_instructions(code, adaptive=True):
            # 3.11 shows a read it could not specialize as OPNAME_ADAPTIVE, 3.12 as the plain OPNAME
            base = ins.opname.removesuffix("_ADAPTIVE")
            if ins.offset in executed and any(base in family for family in _FAMILIES.values()):
                rows.append([code.co_filename, ins.positions.lineno, code.co_name, f"{base} {ins.argval}",
                             executed[ins.offset]])
    return rows


def _launch(argv: list[str]) -> None:
    """``--launch PYTHON -m fastinfer ARGS``: run fastinfer in this interpreter, its forked children counting."""
    del sys.path[0]                  # this file's directory (bench/): none of its modules are fastinfer's
    os.register_at_fork(after_in_child=_count_in_child)
    module = argv[argv.index("-m") + 1]
    sys.argv = [module, *argv[argv.index("-m") + 2:]]
    import runpy
    runpy.run_module(module, run_name="__main__", alter_sys=True)


# ---------------------------------------------------------------- the bench's side

def count_path(label: str, tree: Path, workdir: Path, upstream_port: int, requests, warm: int, n: int,
               by_line: bool, unspecialized: bool = False) -> dict:
    """One path's opcodes per request: {(file, line, function): opcodes per request}, and the total;
    with ``unspecialized``, {(file, line, function, "OPNAME argument"): times per request} of the
    reads, calls and operations the interpreter did not specialize, and their total."""
    from .services import Service
    from .targets import write_gateway_config
    config = workdir / f"{label}.toml"
    write_gateway_config(label, upstream_port, config, tree, None)
    counts_dir = workdir / f"opcodes-{label}"
    counts_dir.mkdir()
    # the gateway's processes read these from the environment ``Service`` copies; the caller's stays as it was
    saved = {name: os.environ.get(name) for name in (_COUNTS_ENV, _LINES_ENV, _UNSPECIALIZED_ENV)}
    os.environ[_COUNTS_ENV] = str(counts_dir)
    os.environ[_LINES_ENV] = "1" if by_line else ""
    os.environ[_UNSPECIALIZED_ENV] = "1" if unspecialized else ""
    try:
        gateway = Service(["serve", "--config", str(config), "--port", "0", "--workers", "1"], str(workdir),
                          tree=tree, log=workdir / f"{label}.log",
                          wrapper=(sys.executable, str(Path(__file__).resolve()), "--launch"))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        requests.send(gateway.port, warm)
        workers = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(gateway.proc.pid)], capture_output=True,
                                                      text=True).stdout.split()]
        if len(workers) != 1:
            raise RuntimeError(f"expected one worker, found {workers}")
        os.kill(workers[0], TOGGLE)
        time.sleep(_SIGNAL_SETTLE_S)        # the idle worker's loop wakes and runs the handler
        requests.send(gateway.port, n)
        os.kill(workers[0], TOGGLE)
        written = _wait_for(counts_dir / f"{workers[0]}.json")
    finally:
        gateway.stop()
    rows = {tuple(key): count / n for *key, count in json.loads(written)}
    return {"path": label, "requests": n, "per_request": round(sum(rows.values()), 1), "functions": rows}


def _wait_for(path: Path, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if text.endswith("]"):
                return text
        time.sleep(0.05)
    raise RuntimeError(f"the worker wrote no counts to {path}")


def shown_file(file: str, tree: Path) -> str:
    """A source file as the report names it: relative to the tree or to the standard library."""
    for root in (str(tree) + os.sep, os.path.dirname(os.__file__) + os.sep):
        if file.startswith(root):
            return file[len(root):]
    return file


def to_markdown(report: dict, top: int) -> str:
    tree = Path(report["tree"])
    if report.get("unspecialized"):
        lines = ["| path | " + " | ".join(f"unspecialized {name} per request" for name in _FAMILIES) + " |",
                 "|---|" + "---|" * len(_FAMILIES)]
        lines += [f"| {row['path']} | " + " | ".join(f"{_total(row, family):,.0f}" for family in _FAMILIES.values())
                  + " |" for row in report["rows"]]
    else:
        lines = ["| path | opcodes per request |", "|---|---|"]
        lines += [f"| {row['path']} | {row['per_request']:,.0f} |" for row in report["rows"]]
    for row in report["rows"]:
        ranked = sorted(row["functions"].items(), key=lambda item: -item[1])[:top]
        if report.get("unspecialized"):
            lines += ["", f"Reads, calls and operations of {row['path']} left unspecialized (per request):", "",
                      "| instruction | function | where | times |", "|---|---|---|---|"]
            lines += [f"| `{read}` | `{name}` | {shown_file(file, tree)}:{line} | {count:,.1f} |"
                      for (file, line, name, read), count in ranked]
            continue
        lines += ["", f"Most opcodes of {row['path']} (per request):", "", "| function | where | opcodes |", "|---|---|---|"]
        lines += [f"| `{name}` | {shown_file(file, tree)}:{line} | {count:,.1f} |" for (file, line, name), count in ranked]
    return "\n".join(lines) + "\n"


def _total(row: dict, family: tuple) -> float:
    """Of ``--unspecialized``'s rows, how many a request of ``family`` (one of ``_FAMILIES``)."""
    return sum(times for (_, _, _, instruction), times in row["functions"].items() if instruction.split()[0] in family)


def main(argv: list[str] | None = None) -> int:
    from .instructions import PATHS, Requests, start_mock
    from .nginx import nginx_binary
    from .output import finish
    from .services import fastinfer_tree
    parser = argparse.ArgumentParser(prog="python -m bench.opcodes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", nargs="*", default=["gateway", "gateway-full"], choices=PATHS,
                        help="fastinfer paths to count (default: gateway gateway-full)")
    parser.add_argument("--tree", type=Path, help="the source tree (its core built in place) to count (default: this one)")
    parser.add_argument("--requests", type=int, default=1000, help="requests counted (default 1000)")
    parser.add_argument("--warm", type=int, default=300, help="requests before the count (default 300)")
    parser.add_argument("--stream", type=int, default=0, metavar="N", help="stream every answer in N events")
    parser.add_argument("--at-once", action="store_true", help="the mock is nginx, each answer in one write")
    parser.add_argument("--lines", action="store_true", help="count by source line, not by function")
    parser.add_argument("--unspecialized", action="store_true",
                        help="list the attribute and global reads, the calls and the operations the "
                             "interpreter left unspecialized instead")
    parser.add_argument("--top", type=int, default=30, help="list each path's TOP costliest (default 30)")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warm < 0 or args.top < 0:
        parser.error("--requests at least 1, --warm and --top at least 0")
    if args.stream and args.stream < 3:
        parser.error("--stream: at least 3 events (the role, a token, the finish)")
    if args.at_once and nginx_binary() is None:
        parser.error("--at-once needs nginx (Debian: apt-get install nginx)")
    tree = (args.tree or fastinfer_tree()).resolve()
    requests = Requests(stream=args.stream > 0)
    workdir = Path(tempfile.mkdtemp(prefix="fastinfer-bench-opcodes-"))
    mock = start_mock(workdir, requests, args.stream or 10, args.at_once)
    try:
        rows = [count_path(label, tree, workdir, mock.port, requests, args.warm, args.requests, args.lines,
                           args.unspecialized) for label in args.paths]
    finally:
        mock.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report = {"tree": str(tree), "stream_chunks": args.stream, "at_once": args.at_once, "by_line": args.lines,
              "unspecialized": args.unspecialized, "rows": rows}
    serial = {**report, "rows": [{**row, "functions": [[*key, count] for key, count in row["functions"].items()]}
                                 for row in rows]}
    return finish(to_markdown(report, args.top), serial, args.out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--launch"]:      # run as a file by the gateway's wrapper (``count_path``), never with -m
        _launch(sys.argv[2:])
    else:
        sys.exit(main())
