"""The named constants: one module (constants.py) whose values the C core (atomics.h),
the compiled module, its reference and the Python packages all use."""
import re
from pathlib import Path

from fastinfer._core import constants, shm
from fastinfer._core.ref import shm as reference
from fastinfer.breaker import breakers
from fastinfer.limits import admission


def test_atomics_h_agrees_with_constants_py():
    c_values = shm._c_constants()
    assert c_values, "no C constants exported"
    assert {k: getattr(constants, k) for k in c_values} == c_values


def test_every_fi_macro_mirroring_a_python_name_is_checked():
    """A constant added to atomics.h under a Python name must be added to the check too."""
    header = (Path(shm.__file__).parent / "atomics.h").read_text()
    macros = set(re.findall(r"#define FI_([A-Z_0-9]+)\s", header))
    python_names = {k for k in constants.__all__ if isinstance(getattr(constants, k), int)}
    mirrored = macros & python_names
    assert mirrored <= set(shm._c_constants()), mirrored - set(shm._c_constants())
    assert len(mirrored) >= 30


def test_one_set_of_values_everywhere():
    for name in ("GRANTED_NOW", "QUEUE_FULL", "CLOSED", "OPEN", "HALF_OPEN", "ALLOWED", "REJECTED",
                 "PROBE", "CRITICAL", "HIGH", "NORMAL", "BACKGROUND"):
        assert getattr(shm, name) == getattr(reference, name) == getattr(constants, name), name
    assert (breakers.ALLOWED, breakers.REJECTED, breakers.PROBE) == (
        constants.ALLOWED, constants.REJECTED, constants.PROBE)
    assert (admission.GRANTED_NOW, admission.QUEUE_FULL) == (constants.GRANTED_NOW, constants.QUEUE_FULL)


def test_groups_are_distinct_and_named():
    groups = [
        (constants.CRITICAL, constants.HIGH, constants.NORMAL, constants.BACKGROUND),
        (constants.CLOSED, constants.OPEN, constants.HALF_OPEN),
        (constants.ALLOWED, constants.REJECTED, constants.PROBE),
        (constants.SESSION_NONE, constants.SESSION_OPENING, constants.SESSION_OPEN, constants.SESSION_CLOSING),
        tuple(constants.ROUTING_POLICIES.values()),
        (constants.LEASE_SESSION_REAPER, constants.LEASE_HEALTH_PROBER, constants.LEASE_CLUSTER_SYNC,
         constants.LEASE_STATE_FLUSH),
    ]
    for g in groups:
        assert sorted(g) == list(range(len(g))), g
    assert len(constants.PRIORITY_NAMES) == 4 and len(constants.BREAKER_STATE_NAMES) == 3
    assert len(constants.SESSION_STATE_NAMES) == 4 and len(constants.LEASE_NAMES) <= constants.N_LEASES
    assert constants.GRANTED_NOW < 0 and constants.QUEUE_FULL < 0 != constants.GRANTED_NOW
