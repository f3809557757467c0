"""Three real mock replicas behind one deployment, for the routing, session and health tests.

``three_replicas`` is a module-scoped fixture (import it into a test module): three
``mock-upstream`` processes, reset before each test that uses them through ``replicas``.
``replicas_config`` writes a deployment ``m`` over them (replicas ``r0``, ``r1``, ``r2``) with
an admin key; ``chat`` sends one request with ``http_json`` and answers (status, replica, body).
"""
from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request

import pytest

from procs import http_json, start_mock

ADMIN_KEY = "adm-routing-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
NAMES = ("r0", "r1", "r2")


@pytest.fixture(scope="module")
def three_replicas(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("replicas")
    mocks = []
    with contextlib.ExitStack() as stack:
        for _ in NAMES:
            mock = start_mock(workdir)
            stack.callback(mock.kill)
            mocks.append(mock)
        yield mocks


@pytest.fixture
def replicas(three_replicas):
    """The three mocks, each reset (stats, scripts, sessions) and with default knobs."""
    for mock in three_replicas:
        mock.reset()
        mock.control(latency_ms=0, open_session_status=200, open_session_latency_ms=0, close_session_status=200, close_session_failures=0,
                     health_status=200, strict_sessions=True)
    return three_replicas


def replicas_config(mocks, routing: str = "least_loaded", *, server: str = "", deployment: str = "",
                    weights=(1, 1, 1), name: str = "m", bases=None) -> str:
    """A deployment ``name`` on the mocks (``bases`` overrides their URLs), with ``routing``;
    ``deployment`` adds keys to it, ``server`` to [server]."""
    replicas = "".join(f"""
        [[deployments.replicas]]
        name = "{replica}"
        base_url = "{base}/v1"
        credential = {{ value = "sk-{replica}-secret" }}
        weight = {weight}
    """ for replica, base, weight in zip(NAMES, bases or [m.base for m in mocks], weights))
    return f"""
        [server]
        drain_grace_s = 10
        admin_key = {{ value = "{ADMIN_KEY}" }}
        {server}

        [[deployments]]
        name = "{name}"
        provider = "openai_compatible"
        model = "mock-model"
        routing = "{routing}"
        {deployment}
        {replicas}
    """


def chat(base: str, content: str = "hi", *, session: str | None = None, close: bool = False,
         model: str = "m", messages: list | None = None, headers: dict | None = None, stream: bool = False,
         timeout: float = 30):
    """(status, the replica that answered, body) of one chat completion."""
    sent = {"connection": "close", **(headers or {})}
    if session is not None:
        sent["x-session-id"] = session
    if close:
        sent["x-session-close"] = "true"
    body = {"model": model, "messages": messages or [{"role": "user", "content": content}], "stream": stream}
    if stream:
        status, answer_headers, answer = _stream(base, body, sent, timeout)
    else:
        status, answer_headers, answer = http_json("POST", base + "/v1/chat/completions", body, headers=sent,
                                                   timeout=timeout)
    return status, {k.lower(): v for k, v in answer_headers.items()}.get("x-fastinfer-replica"), answer


def _stream(base: str, body: dict, headers: dict, timeout: float):
    """A streamed chat completion read to its end: (status, headers, the raw SSE text)."""
    req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def force_open(gw, replica: str, duration_s: float = 600, deployment: str = "m"):
    return http_json("POST", f"{gw.base}/admin/circuits/{deployment}/{replica}",
                     {"action": "force_open", "duration_s": duration_s}, headers=ADMIN)


def reset_circuit(gw, replica: str, deployment: str = "m"):
    return http_json("POST", f"{gw.base}/admin/circuits/{deployment}/{replica}", {"action": "reset"}, headers=ADMIN)


def admin_state(gw) -> dict:
    status, _, state = http_json("GET", gw.base + "/admin/state", headers=ADMIN)
    assert status == 200, state
    return state


def served(mocks) -> list[int]:
    """Chat completions each mock has received."""
    return [sum(1 for e in m.received() if e["path"].endswith("/chat/completions")) for m in mocks]
