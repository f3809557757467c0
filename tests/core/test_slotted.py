"""``_core.slotted``: the request path's records made in C must be, field for field, what the class's
own ``__init__`` makes (the reference, ``ref/slotted.py``), own exactly the references they hold, and
refuse a class whose construction does more than assign."""
from __future__ import annotations

import dataclasses
import gc
import operator
import sys

import pytest

from fastinfer._core import slotted
from fastinfer._core.ref import slotted as ref
from fastinfer.engine.request import EngineResult, GatewayRequest
from fastinfer.gateway.app import DataRequest

# distinct objects for every field, so a value written to the wrong slot shows
_VALUES = {
    GatewayRequest: ("anthropic", "model-a", {"model": "model-a"}, True, "req-1", 12.5, 3, "session-1", True, 99.0,
                     True, "completions", "key-a", {"prompt_tokens": 1}, 0.25, 4, "replica-2", "fallback-1", object()),
    EngineResult: (429, b"body", object(), "replica-1", 2, 0.5, 0.125, 0.0625, {"x-a": "1"}),
    DataRequest: (7.5, object(), "deployment-a", object(), "key-b", object(), object(), object()),
}


def _fields(record) -> tuple:
    return tuple(getattr(record, f.name) for f in dataclasses.fields(record))


@pytest.mark.parametrize("cls", list(_VALUES), ids=lambda cls: cls.__name__)
def test_a_record_is_what_the_classs_init_makes_for_every_number_of_values(cls):
    make, oracle = slotted.record_maker(cls), ref.record_maker(cls)
    values = _VALUES[cls]
    required = sum(1 for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    for given in range(required, len(values) + 1):
        made, expected = make(*values[:given]), oracle(*values[:given])
        assert type(made) is cls
        got, want = _fields(made), _fields(expected)
        for name, a, b in zip(make.names, got, want):
            assert a is b or (type(a) is dict and a == b), (given, name)


def test_a_default_factory_gives_each_record_its_own_value():
    make = slotted.record_maker(EngineResult)
    first, second = make(200), make(200)
    assert first.headers == {} and first.headers is not second.headers
    first.headers["x"] = "1"
    assert second.headers == {}


@pytest.mark.parametrize("cls", list(_VALUES), ids=lambda cls: cls.__name__)
def test_a_record_owns_one_reference_to_each_value_and_gives_it_back(cls):
    make = slotted.record_maker(cls)
    values = _VALUES[cls]
    # the values only these tests hold (True, small ints and the like are everyone's: their counts move)
    own = [i for i, v in enumerate(values) if sys.getrefcount(v) < 50]
    assert len(own) >= 4
    before = [sys.getrefcount(values[i]) for i in own]
    records = [make(*values) for _ in range(10)]
    assert [sys.getrefcount(values[i]) for i in own] == [b + 10 for b in before]
    assert all(sys.getrefcount(r) == 3 for r in records)      # the list's, the loop's name, the argument
    del records
    gc.collect()
    assert [sys.getrefcount(values[i]) for i in own] == before


_HAVE_VECTORCALL = 1 << 11      # Py_TPFLAGS_HAVE_VECTORCALL


def test_a_maker_is_called_through_vectorcall_and_owns_what_it_is_given_so():
    """No tuple made and unmade around the values on every call: the type says it has vectorcall,
    and a positional call (the request path's) leaves each value one reference more, per record."""
    make = slotted.record_maker(DataRequest)
    assert type(make).__flags__ & _HAVE_VECTORCALL
    trace, series = object(), object()
    before = sys.getrefcount(trace), sys.getrefcount(series)
    records = [make(1.5, trace, "d", series) for _ in range(5)]
    assert (sys.getrefcount(trace), sys.getrefcount(series)) == (before[0] + 5, before[1] + 5)
    assert _fields(records[0]) == _fields(DataRequest(1.5, trace, "d", series))
    del records
    assert (sys.getrefcount(trace), sys.getrefcount(series)) == before
    with pytest.raises(TypeError):
        make(1.5, trace, deployment="d")
    assert type(make).__call__(make, 1.5, trace).trace is trace      # tp_call, as PyObject_Call without vectorcall


def test_fields_stay_writable_and_deletable_as_any_slot():
    record = slotted.record_maker(GatewayRequest)("openai", "m", {}, False, "id", 1.0)
    record.attempts += 1
    record.replica = "r"
    assert (record.attempts, record.replica) == (1, "r")
    del record.trace
    with pytest.raises(AttributeError):
        record.trace


def test_too_few_or_too_many_values_and_keywords_are_refused():
    make = slotted.record_maker(GatewayRequest)
    with pytest.raises(TypeError):
        make("openai", "m", {}, False, "id")                 # received_at is required
    with pytest.raises(TypeError):
        make(*_VALUES[GatewayRequest], "one too many")
    with pytest.raises(TypeError):
        make("openai", "m", {}, False, "id", 1.0, priority=1)


@dataclasses.dataclass(slots=True)
class _Checked:
    value: int

    def __post_init__(self):
        if self.value < 0:
            raise ValueError("negative")


@dataclasses.dataclass
class _NoSlots:
    value: int


class _OwnNew:
    __slots__ = ("value",)

    def __new__(cls, *args):
        return super().__new__(cls)


@dataclasses.dataclass(slots=True)
class _KeywordOnly:
    value: int
    later: int = dataclasses.field(default=0, kw_only=True)


@dataclasses.dataclass(slots=True)
class _WithInitVar:
    value: int
    scale: dataclasses.InitVar[int] = 1


@pytest.mark.parametrize("cls", [_Checked, _NoSlots, _OwnNew, _KeywordOnly, _WithInitVar],
                         ids=lambda cls: cls.__name__)
def test_a_class_whose_construction_does_more_than_assign_is_refused(cls):
    with pytest.raises(TypeError):
        slotted.record_maker(cls)


def test_a_maker_must_name_exactly_the_classs_slots():
    with pytest.raises(TypeError):
        slotted.RecordMaker(EngineResult, ("status",), 1, (None,), (None,))
    names = tuple(f.name for f in dataclasses.fields(EngineResult))
    with pytest.raises(ValueError):
        slotted.RecordMaker(EngineResult, names, 1, (None,) * len(names), ())


# ``SlotFields``: a compiled attrgetter for records; the reference is ``operator.attrgetter``

class _Plain:
    """Fields in the instance's ``__dict__``: read with getattr."""

    def __init__(self, replica, attempts):
        self.replica, self.attempts = replica, attempts


@dataclasses.dataclass(slots=True)
class _Parent:
    replica: str = "the slot"
    attempts: int = 0


class _Shadowed(_Parent):
    """A subclass whose ``replica`` is a property over its parent's slot: the property wins, as in Python."""

    __slots__ = ()

    @property
    def replica(self):
        return "the property"


@pytest.mark.parametrize("cls", list(_VALUES), ids=lambda cls: cls.__name__)
def test_slot_fields_read_what_attrgetter_reads(cls):
    names = tuple(f.name for f in dataclasses.fields(cls))
    record = slotted.record_maker(cls)(*_VALUES[cls])
    fields = slotted.SlotFields(*names)
    assert fields.of(record) == fields(record) == operator.attrgetter(*names)(record)
    assert all(a is b for a, b in zip(fields.of(record), _VALUES[cls]))


def test_slot_fields_follow_the_type_they_are_given_and_fall_back_to_getattr():
    fields = slotted.SlotFields("replica", "attempts")
    request = slotted.record_maker(GatewayRequest)("openai", "m", {}, False, "id", 1.0)
    request.replica, request.attempts = "r1", 2
    result = slotted.record_maker(EngineResult)(200, b"", None, "r2", 3)
    # two slotted types in turn (each read at its own offsets), and a plain class (getattr)
    for _ in range(3):
        assert fields.of(request) == ("r1", 2)
        assert fields.of(result) == ("r2", 3)
        assert fields.of(_Plain("r3", 4)) == ("r3", 4)
    assert fields.of(_Parent("r4", 5)) == ("r4", 5)
    shadowed = _Shadowed.__new__(_Shadowed)     # (its parent's __init__ would set the property)
    shadowed.attempts = 6
    assert fields.of(shadowed) == ("the property", 6) == operator.attrgetter("replica", "attempts")(shadowed)


def test_slot_fields_raise_what_attrgetter_raises_and_own_what_they_return():
    fields = slotted.SlotFields("trace", "replica")
    request = slotted.record_maker(GatewayRequest)("openai", "m", {}, False, "id", 1.0)
    trace = request.trace = object()
    before = sys.getrefcount(trace)
    got = [fields.of(request) for _ in range(10)]
    assert sys.getrefcount(trace) == before + 10 and got[0] == (trace, None)
    del got
    assert sys.getrefcount(trace) == before
    del request.trace
    with pytest.raises(AttributeError):
        fields.of(request)
    with pytest.raises(AttributeError):
        fields.of(object())
    with pytest.raises(ValueError):
        slotted.SlotFields()
