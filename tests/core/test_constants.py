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


# ---------------------------------------------------------------- no literal copies in Python
_NAME_GROUPS = {"BREAKER_STATE_NAMES": constants.BREAKER_STATE_NAMES, "PRIORITY_NAMES": constants.PRIORITY_NAMES,
                "SESSION_STATE_NAMES": constants.SESSION_STATE_NAMES, "LEASE_NAMES": constants.LEASE_NAMES}
_STATE_ATTRS = {"state", "_state"}


def _literal_copies(tree) -> list[str]:
    """What in ``tree`` spells out a value constants.py names: a tuple/list/set of one group's
    names, a dict keyed by them, a ``.state`` compared with a number, a priority written as one."""
    import ast
    found = []
    for node in ast.walk(tree):
        strings = None
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            strings = [e.value for e in node.elts if isinstance(e, ast.Constant)]
        elif isinstance(node, ast.Dict):
            strings = [k.value for k in node.keys if isinstance(k, ast.Constant)]
        if strings and len(strings) > 1:
            for group, names in _NAME_GROUPS.items():
                if tuple(strings) == names:
                    found.append(f"line {node.lineno}: the names of {group} spelled out")
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if (any(isinstance(s, ast.Attribute) and s.attr in _STATE_ATTRS for s in sides)
                    and any(isinstance(s, ast.Constant) and type(s.value) is int for s in sides)):
                found.append(f"line {node.lineno}: a state compared with a bare number")
        if isinstance(node, (ast.AnnAssign, ast.Assign, ast.keyword)):
            targets = ([node.target] if isinstance(node, ast.AnnAssign) else
                       node.targets if isinstance(node, ast.Assign) else [])
            named = [t.id if isinstance(t, ast.Name) else getattr(t, "attr", None) for t in targets]
            if isinstance(node, ast.keyword):
                named = [node.arg]
            if "priority" in named and isinstance(node.value, ast.Constant) and type(node.value.value) is int:
                found.append(f"line {node.lineno}: a priority written as a number")
    return found


def test_python_code_uses_the_names_not_copies_of_their_values():
    """Every module but constants.py takes breaker states, priorities, session states and lease
    names from constants.py: a re-introduced ``("closed", "open", "half_open")``,
    ``{"critical": 0, ...}``, ``b.state != 1`` or ``priority: int = 2`` fails here."""
    import ast
    package = Path(constants.__file__).parent.parent
    offenders = {}
    for path in sorted(package.rglob("*.py")):
        if path == Path(constants.__file__):
            continue
        found = _literal_copies(ast.parse(path.read_text(), str(path)))
        if found:
            offenders[str(path.relative_to(package))] = found
    assert not offenders, offenders


def test_the_scan_finds_each_kind_of_copy():
    """The scan above would see each shape it is meant to catch (so its silence means something)."""
    import ast
    source = '''
STATES = ("closed", "open", "half_open")
LEVELS = {"critical": 0, "high": 1, "normal": 2, "background": 3}
ready = b.state != 1
class R:
    priority: int = 2
f(priority=3)
fine = (CLOSED, OPEN) and x.state == OPEN and ("closed", "open")
'''
    found = _literal_copies(ast.parse(source))
    assert [line.split(":")[0] for line in found] == ["line 2", "line 3", "line 4", "line 6", "line 7"], found
