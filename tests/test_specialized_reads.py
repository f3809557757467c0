"""The request path's attribute reads stay ones the interpreter can specialize.

CPython 3.11 turns a warm ``obj.name`` into a specialized instruction (a slot's or an inline
value's read, a few machine instructions) only for some objects. Two ways to lose it, both found on
the request path (``python -m bench.opcodes --unspecialized``) and each costing ~350 instructions a
read (``python -m bench.instructions``):

- an instance whose ``__dict__`` was built: ``functools.cached_property`` writes the dict itself,
  which made every read of a ``DeploymentConfig`` (its name, retry, timeouts, ...) generic;
- a class attribute read through an instance without a ``__dict__`` (a ``__slots__`` class):
  ``DeploymentRouter.session_key`` and ``needs_claim``, read by the engine on every request, and
  ``WrittenAnswer.prepared``, read by the gateway on every answer it wrote;
- a compiled class's field, which Cython reads through a getset descriptor (``GatewayKey.name``):
  ``_core/slots.h`` makes it a member, read as a ``__slots__`` field is.

And a call into the compiled core, which 3.11 specializes only when the core is built with
``binding=False`` (its functions then builtin functions and method descriptors).

Each case reads the attributes the way the engine does, warm, and asserts the read was specialized.
Without the fixes these fail on 3.11 (the instruction stays ``LOAD_ATTR_ADAPTIVE``).
"""
from __future__ import annotations

import dataclasses
import dis
import sys
import types
import uuid

import pytest

from fastinfer._core import heads, keys, shm
from fastinfer.config import parse_config
from fastinfer.gateway.answer import WrittenAnswer, new_written_answer
from fastinfer.metrics import MetricsLayout
from fastinfer.process.hostwide import plan
from fastinfer.routing import DeploymentRouter

pytestmark = pytest.mark.skipif(sys.implementation.name != "cpython" or sys.version_info < (3, 11),
                                reason="the specializing interpreter is CPython 3.11's and later")

_UNSPECIALIZED = {"LOAD_ATTR", "LOAD_ATTR_ADAPTIVE"}
_WARM_CALLS = 1000      # far past the interpreter's warm-up (8 runs in 3.11, 53 in 3.12)


def attribute_reads(obj, names: tuple[str, ...]) -> dict[str, str]:
    """Each of ``names`` read off ``obj`` in a function run warm: the instruction each read became."""
    source = "def read(o):\n" + "".join(f"    o.{name}\n" for name in names)
    scope: dict = {}
    exec(compile(source, f"<reads of {type(obj).__name__}>", "exec"), scope)
    read = scope["read"]
    for _ in range(_WARM_CALLS):
        read(obj)
    loads = [ins for ins in dis.get_instructions(read, adaptive=True) if ins.opname.startswith("LOAD_ATTR")]
    return {ins.argval: ins.opname for ins in loads}


def config():
    return parse_config({"deployments": [{
        "name": "m", "provider": "openai_compatible", "model": "served-as",
        "replicas": [{"base_url": "http://127.0.0.1:9000/v1"}]}]})


def test_a_deployment_config_keeps_its_reads_specialized():
    dep = config().deployments[0]
    reads = attribute_reads(dep, ("name", "retry", "timeouts", "queue_timeout_s", "upstream_model",
                                  "takes_every_param"))
    assert not {name for name, op in reads.items() if op in _UNSPECIALIZED}, reads


def test_the_derived_values_of_a_deployment_config_follow_its_fields():
    dep = config().deployments[0]
    assert dep.upstream_model == "served-as" and dep.takes_every_param
    # a PROVIDER/* deployment serving a model is made with dataclasses.replace: derived anew
    assert dataclasses.replace(dep, model="other").upstream_model == "other"
    assert dataclasses.replace(dep, model=None).upstream_model == "m"
    assert not dataclasses.replace(dep, provider="openai").takes_every_param
    # derived, not configured: no field, so no config key, repr or comparison carries them
    assert {"upstream_model", "takes_every_param"}.isdisjoint(f.name for f in dataclasses.fields(dep))
    assert "upstream_model" not in repr(dep)


def test_a_router_as_its_own_route_keeps_its_reads_specialized():
    cfg = config()
    layout, _ = plan(cfg, 1, MetricsLayout(cfg))
    segment = shm.Segment.create(f"reads-test-{uuid.uuid4().hex[:10]}", layout)
    try:
        router = DeploymentRouter(segment, 0, 0, cfg.deployments[0])
        assert router.route(object()) is router and router.session_key is None and router.needs_claim is False
        reads = attribute_reads(router, ("session_key", "needs_claim"))
        assert not {name for name, op in reads.items() if op in _UNSPECIALIZED}, reads
    finally:
        segment.unlink()
        segment.close()


@pytest.mark.parametrize("make", [WrittenAnswer, new_written_answer], ids=["class", "maker"])
def test_a_written_answer_keeps_its_reads_specialized(make):
    """As the class makes it and as the gateway does (its record maker: no ``__init__`` run)."""
    writer = object()
    answer = make(200, True, writer)
    assert (type(answer), answer.prepared, answer.status, answer.keep_alive, answer._writer) == (
        WrittenAnswer, True, 200, True, writer)
    assert answer != make(200, True, writer)        # compared by identity, as aiohttp's responses
    reads = attribute_reads(answer, ("prepared", "keep_alive", "status"))
    assert not {name for name, op in reads.items() if op in _UNSPECIALIZED}, reads


def test_a_gateway_key_keeps_its_reads_specialized_and_is_counted_where_it_is_told():
    """A compiled class's field is a getset descriptor, never specialized, unless ``slots.h`` made it a
    member: the gateway reads a key's ``name`` and ``series`` on every keyed request."""
    key = keys.GatewayKey("team-a", bytes(32), ("gpt-*",), 1, 0)
    assert key.series is None
    key.counted_in(series := object())
    assert key.name == "team-a" and key.series is series
    reads = attribute_reads(key, ("name", "series"))
    assert not {name for name, op in reads.items() if op in _UNSPECIALIZED}, reads
    with pytest.raises(AttributeError):
        key.series = None       # read-only from Python: ``counted_in`` sets it


def test_the_cores_functions_are_ones_whose_calls_the_interpreter_specializes():
    """Built with ``binding=False`` (``setup.py``): a compiled function is a builtin function and a
    compiled class's method a method descriptor, whose calls 3.11 specializes; Cython's own function
    type (its default) it never does. A call made warm from Python becomes a specialized one."""
    assert type(heads.answer_head) is types.BuiltinFunctionType
    assert type(shm.Grant.__dict__["settle_answered"]) is types.MethodDescriptorType
    scope: dict = {"answer_head": heads.answer_head}
    exec("def call():\n    answer_head(b'HTTP/1.1 200 OK\\r\\n', {}, b'', 0, True, (), (), True)\n", scope)
    for _ in range(_WARM_CALLS):
        scope["call"]()
    # 3.11 specializes the PRECALL (its CALL stays adaptive, skipped); 3.12 and later the CALL itself
    calls = [ins.opname for ins in dis.get_instructions(scope["call"], adaptive=True)
             if ins.opname.startswith(("PRECALL", "CALL"))]
    assert any(op not in ("PRECALL", "PRECALL_ADAPTIVE", "CALL", "CALL_ADAPTIVE") for op in calls), calls
