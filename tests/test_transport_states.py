"""The upstream connection's transition table (_core/states.py): the only legal paths are a
keep-alive exchange and a failure from anywhere; every other step is a ``ProtocolStateError``."""
from __future__ import annotations

import itertools

import pytest

from fastinfer._core import states
from fastinfer._core.states import (AWAITING_HEAD, CLOSED, DONE, END, FAIL, HEAD, IDLE, RECEIVING_BODY,
                                        RELEASE, SEND, TRANSITIONS, ProtocolStateError)

ALL_STATES = [v for v in vars(states).values() if isinstance(v, states.State)]
ALL_EVENTS = [v for v in vars(states).values() if isinstance(v, states.Event)]

#: written out here on purpose: a change to the table must be a change to this test too
LEGAL = {
    (IDLE, SEND): AWAITING_HEAD, (AWAITING_HEAD, HEAD): RECEIVING_BODY, (RECEIVING_BODY, END): DONE,
    (DONE, RELEASE): IDLE,
    **{(state, FAIL): CLOSED for state in (IDLE, AWAITING_HEAD, RECEIVING_BODY, DONE, CLOSED)},
}


def test_the_module_names_five_states_and_five_events():
    assert {s.name for s in ALL_STATES} == {"IDLE", "AWAITING_HEAD", "RECEIVING_BODY", "DONE", "CLOSED"}
    assert {e.name for e in ALL_EVENTS} == {"SEND", "HEAD", "END", "RELEASE", "FAIL"}


def test_a_keep_alive_connection_walks_the_exchange_path_again_and_again():
    state = IDLE
    for _ in range(3):
        for event, expected in ((SEND, AWAITING_HEAD), (HEAD, RECEIVING_BODY), (END, DONE), (RELEASE, IDLE)):
            state = state.moves[event]
            assert state is expected, (event, state)


@pytest.mark.parametrize("state", [IDLE, AWAITING_HEAD, RECEIVING_BODY, DONE, CLOSED], ids=repr)
def test_a_failure_closes_from_any_state_and_closed_is_final(state):
    assert state.moves[FAIL] is CLOSED
    for event in (SEND, HEAD, END, RELEASE):
        with pytest.raises(ProtocolStateError):
            CLOSED.moves[event]


@pytest.mark.parametrize("state, event", [(s, e) for s, e in itertools.product(ALL_STATES, ALL_EVENTS)
                                          if (s, e) not in LEGAL], ids=repr)
def test_every_other_step_is_a_protocol_state_error_naming_it(state, event):
    with pytest.raises(ProtocolStateError, match=f"^{event.name} is not allowed in {state.name}$"):
        state.moves[event]


def test_the_table_is_exactly_the_legal_steps():
    assert TRANSITIONS == LEGAL
    assert len(ALL_STATES) * len(ALL_EVENTS) - len(LEGAL) == 16   # the illegal steps tested above


def test_a_states_moves_are_its_row_of_the_table_and_cannot_be_changed_apart_from_it():
    for state in ALL_STATES:
        assert dict(state.moves) == {event: after for (s, event), after in LEGAL.items() if s is state}
    with pytest.raises(TypeError):
        IDLE.moves[HEAD] = DONE
    with pytest.raises(ProtocolStateError, match="^HEAD is not allowed in IDLE$"):
        IDLE.moves[HEAD]
