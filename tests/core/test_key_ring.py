"""``_core.keys``: a request's gateway key found by its SHA-256 digest (computed in C, with the
SHA extensions where the CPU has them), and what the key may do. The compiled module and its
reference (``_core/ref/keys.py``, hashlib's digest) are checked the same way, and the digest
against hashlib."""
import hashlib

import pytest
from hypothesis import given, settings, strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from fastinfer._core import keys as compiled
from fastinfer._core.ref import keys as reference
from fastinfer.config import parse_config
from fastinfer.engine import PRIORITY_LEVELS, GatewayRequest
from fastinfer.errors import PermissionDenied, Unauthorized
from fastinfer.gateway.auth import key_ring, resolve_key_hashes
from fastinfer.gateway.anthropic_api import messages_request
from fastinfer.gateway.openai_api import chat_request

KEYS_CONFIG = {
    "keys": [
        {"name": "team-a", "key": {"value": "sk-team-a"}, "models": ["gpt-*"], "priority": "background",
         "max_priority": "high"},
        {"name": "team-b", "key_sha256": hashlib.sha256(b"sk-team-b").hexdigest()},
        {"name": "team-ü", "key": {"value": "sk-ünïcode-ключ"}},
    ],
    "deployments": [{"name": "gpt-4o", "provider": "mock", "aliases": ["fast"]}, {"name": "claude", "provider": "mock"}],
}

CORES = [compiled, reference]


@pytest.fixture(params=CORES, ids=["compiled", "reference"])
def ring(request):
    return key_ring(resolve_key_hashes(parse_config(KEYS_CONFIG)), request.param)


# ---------------------------------------------------------------- the digest

@pytest.mark.parametrize("portable", [False, True], ids=["sha-extensions", "portable"])
def test_the_digest_is_sha256_at_every_length_across_the_block_boundaries(portable):
    """Lengths 0..300 cross the one- and two-block paddings (55/56 and 119/120 bytes) and several
    whole blocks; a different byte at each position gives that position's digest."""
    for length in range(301):
        text = "".join(chr(97 + (i * 7 + length) % 26) for i in range(length))
        assert compiled.digest_of(text, portable) == hashlib.sha256(text.encode()).digest(), length


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_the_digest_of_any_text_is_sha256_of_its_utf8(text):
    expected = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    for portable in (False, True):
        try:
            assert compiled.digest_of(text, portable) == expected
        except UnicodeEncodeError:
            assert any(0xD800 <= ord(c) <= 0xDFFF for c in text)      # a lone surrogate has no UTF-8


def test_both_forms_are_checked_here():
    """On this machine's CPU the SHA extensions are used (so the first test ran both forms);
    a CPU without them would run the portable form twice."""
    flags = open("/proc/cpuinfo").read().split()
    assert compiled.SHA_EXTENSIONS == ("sha_ni" in flags and "sse4_1" in flags and "ssse3" in flags)


# ---------------------------------------------------------------- authentication

def headers(**fields):
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in fields.items()}))


def test_keys_are_found_by_their_hash_from_any_of_the_three_headers(ring):
    assert ring.authenticate(headers(Authorization="Bearer sk-team-a")).name == "team-a"
    assert ring.authenticate(headers(authorization="bearer   sk-team-b ")).name == "team-b"
    assert ring.authenticate(headers(Authorization="Bearer  sk-team-a")).name == "team-a"
    assert ring.authenticate(headers(Authorization="Bearer sk-team-b ")).name == "team-b"
    assert ring.authenticate(headers(x_api_key="sk-team-a")).name == "team-a"
    assert ring.authenticate(headers(api_key="sk-team-b")).name == "team-b"
    assert ring.authenticate(headers(Authorization="Bearer sk-ünïcode-ключ")).name == "team-ü"


@pytest.mark.parametrize("fields, message", [
    ({}, "Missing API key"),
    ({"Authorization": "Basic c2stdGVhbS1h"}, "Malformed Authorization header"),
    ({"Authorization": "Bearer"}, "Malformed Authorization header"),
    ({"Authorization": "Bearer "}, "Invalid API key"),
    ({"Authorization": "Bearer sk-team-c"}, "Invalid API key"),
    ({"Authorization": "Bearer sk-team-"}, "Invalid API key"),        # a prefix of a key
    ({"Authorization": "Bearer sk-team-aa"}, "Invalid API key"),      # a key and more
    ({"Authorization": "Bearer SK-TEAM-A"}, "Invalid API key"),       # keys are case-sensitive
    ({"Authorization": "Bearer sk-team-a\udcff"}, "Invalid API key"),  # bytes that were not UTF-8
    ({"Authorization": "Bearer sk-\udcff team-a"}, "Invalid API key"),
    ({"x-api-key": "sk-team-a\udcff"}, "Invalid API key"),
    ({"x-api-key": ""}, "Missing API key"),
    ({"x-api-key": "sk-team-"}, "Invalid API key"),
])
def test_a_missing_malformed_or_unknown_key_is_refused_with_why(ring, fields, message):
    with pytest.raises(Unauthorized) as refused:
        ring.authenticate(CIMultiDict(fields))
    assert refused.value.message.startswith(message)
    assert "sk-team" not in refused.value.message          # the key presented is never shown


def test_the_compiled_ring_answers_as_the_reference_does():
    rings = [key_ring(resolve_key_hashes(parse_config(KEYS_CONFIG)), core) for core in CORES]
    for value in ["Bearer sk-team-a", "Bearer sk-team-b", "Bearer\tsk-team-a", "bearer sk-team-a", "Bearer",
                  "Bearer sk-team-a ", " Bearer sk-team-a", "Bearer sk-team-a\x00", "Token sk-team-a", "Bearer x y"]:
        answers = []
        for ring in rings:
            try:
                answers.append(ring.authenticate(headers(authorization=value)).name)
            except Unauthorized as e:
                answers.append(e.message)
        assert answers[0] == answers[1], value


class Connection:
    """What the ring reads and writes of a client connection: its ``key_memo``."""
    key_memo = None


def test_a_connection_keeps_the_key_it_presented_and_trusts_only_that_key(ring):
    conn = Connection()
    assert ring.authenticate(headers(authorization="Bearer sk-team-a"), conn).name == "team-a"
    memo = conn.key_memo
    assert memo is not None and "sk-team" not in repr(memo)       # the memo never shows the key
    assert ring.authenticate(headers(authorization="Bearer sk-team-a"), conn).name == "team-a"
    assert conn.key_memo is memo                                   # found from the memo, not again
    assert ring.authenticate(headers(x_api_key="sk-team-a"), conn).name == "team-a"   # any header form
    assert conn.key_memo is memo
    # keys of the memo's length, its prefix, it and more, another case: none is it
    for wrong in ("sk-team-c", "sk-team-", "sk-team-aa", "SK-TEAM-A", "sk-team-a\x00", ""):
        with pytest.raises(Unauthorized):
            ring.authenticate(headers(authorization=f"Bearer {wrong}"), conn)
        assert conn.key_memo is memo                               # a refused key is never kept
    assert ring.authenticate(headers(authorization="Bearer sk-team-b"), conn).name == "team-b"
    assert conn.key_memo is not memo and conn.key_memo.key.name == "team-b"
    with pytest.raises(Unauthorized):
        ring.authenticate(headers(authorization="Bearer sk-team-a\udcff"), conn)  # not UTF-8
    assert ring.authenticate(headers(authorization="Bearer sk-ünïcode-ключ"), conn).name == "team-ü"
    assert ring.authenticate(headers(authorization="Bearer sk-ünïcode-ключ"), conn).name == "team-ü"


@pytest.mark.parametrize("core", CORES, ids=["compiled", "reference"])
def test_a_memo_is_trusted_only_by_the_ring_that_made_it(core):
    """A reload builds a new ring: a key it no longer has is refused on a connection that presented
    it before, and one it still has is found again (and kept against the new ring)."""
    before = key_ring(resolve_key_hashes(parse_config(KEYS_CONFIG)), core)
    conn = Connection()
    assert before.authenticate(headers(authorization="Bearer sk-team-a"), conn).name == "team-a"
    without_a = key_ring(resolve_key_hashes(parse_config({**KEYS_CONFIG, "keys": KEYS_CONFIG["keys"][1:]})), core)
    with pytest.raises(Unauthorized):
        without_a.authenticate(headers(authorization="Bearer sk-team-a"), conn)
    again = key_ring(resolve_key_hashes(parse_config(KEYS_CONFIG)), core)
    key = again.authenticate(headers(authorization="Bearer sk-team-a"), conn)
    assert key is again.keys[0] and conn.key_memo.key is key


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["Bearer sk-team-a", "Bearer sk-team-b", "Bearer sk-team-c", "Bearer sk-team-",
                                 "Bearer sk-team-aa", "Bearer sk-ünïcode-ключ", "bearer sk-team-b", "Bearer x y",
                                 "Bearer sk-team-b\x00", "Token sk-team-a"]), max_size=12))
def test_a_connections_answers_are_those_of_a_ring_without_memo(values):
    """Any sequence of keys on one connection is answered, key by key, as each alone would be."""
    for core in CORES:
        ring = key_ring(resolve_key_hashes(parse_config(KEYS_CONFIG)), core)
        conn = Connection()
        for value in values:
            answers = []
            for connection in (conn, None):
                try:
                    answers.append(ring.authenticate(headers(authorization=value), connection).name)
                except Unauthorized as e:
                    answers.append(e.message)
            assert answers[0] == answers[1], (core.__name__, values, value)


# ---------------------------------------------------------------- what a key may do

def request(model: str, priority: int = PRIORITY_LEVELS["normal"]) -> GatewayRequest:
    return GatewayRequest(api="openai", model=model, body={}, stream=False, request_id="r", received_at=0.0,
                          priority=priority)


def test_models_globs_and_the_models_body(ring):
    a, b = ring.keys[0], ring.keys[1]
    a.check_model("gpt-4o")
    a.check_model("fast", "gpt-4o")             # an alias: the deployment it names decides
    with pytest.raises(PermissionDenied) as refused:
        a.check_model("claude")
    assert refused.value.message == "The key team-a may not use the model `claude`."
    with pytest.raises(PermissionDenied):
        a.check_model("fast", None)             # a name that resolves to nothing and matches no glob
    assert b'"gpt-4o"' in a.models_body and b'"fast"' in a.models_body and b'"claude"' not in a.models_body
    assert b'"claude"' in b.models_body and b.globs == ("*",)


def test_the_answer_cache_holds_a_bounded_number_of_names(ring):
    a = ring.keys[0]
    for i in range(3000):                       # more names than it keeps answers for: still right
        assert a.may_use(f"gpt-{i}") and not a.may_use(f"claude-{i}")


def test_priority_default_and_ceiling(ring):
    a, b = ring.keys[0], ring.keys[1]
    assert a.priority_of(None) == PRIORITY_LEVELS["background"]       # the key's default
    assert a.priority_of(PRIORITY_LEVELS["critical"]) == PRIORITY_LEVELS["high"]    # lowered to the ceiling
    assert a.priority_of(PRIORITY_LEVELS["normal"]) == PRIORITY_LEVELS["normal"]
    assert b.priority_of(PRIORITY_LEVELS["critical"]) == PRIORITY_LEVELS["critical"]


@pytest.mark.parametrize("asked_in", ["header", "body", "both", "none"])
def test_a_keyed_request_runs_in_the_class_its_key_allows_whether_asked_in_the_head_or_the_body(ring, asked_in):
    a = ring.keys[0]
    fields = headers(x_priority="critical") if asked_in in ("header", "both") else headers()
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    if asked_in in ("body", "both"):
        body["priority"] = "normal" if asked_in == "both" else "critical"   # the head's wins over the body's
    req = chat_request(body, fields, "rid", 0.0, a)
    a.admit(req, "gpt-4o")
    assert req.key == "team-a" and "priority" not in req.body
    # asked: critical, lowered to the key's ceiling; not asked: the key's default, not the gateway's normal
    assert req.priority == (PRIORITY_LEVELS["high"] if asked_in != "none" else PRIORITY_LEVELS["background"])
    assert chat_request(dict(body, priority="normal"), headers(), "rid", 0.0, a).priority == PRIORITY_LEVELS["normal"]
    # an empty x-priority asks for nothing: the body's when it has one, else the key's default
    empty = chat_request({k: v for k, v in body.items() if k != "priority"}, headers(x_priority=""), "rid", 0.0, a)
    assert empty.priority == PRIORITY_LEVELS["background"]
    message = dict(body, max_tokens=5)
    if asked_in != "none":
        message["priority"] = "critical"
    assert messages_request(message, headers(), "rid", 0.0, a).priority == req.priority    # the Anthropic API alike


def test_admit_refuses_a_model_outside_the_globs_before_anything_is_set(ring):
    req = request("claude")
    with pytest.raises(PermissionDenied):
        ring.keys[0].admit(req, "claude")
    assert req.key is None and req.priority == PRIORITY_LEVELS["normal"]


@pytest.mark.parametrize("core", CORES, ids=["compiled", "reference"])
def test_a_digest_must_be_sha256_sized(core):
    with pytest.raises(ValueError):
        core.GatewayKey("k", b"\x00" * 31, (), 2, 0)
