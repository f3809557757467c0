"""Secrets never leave: an upstream that echoes the replica's credential reaches neither the
client nor the logs; URL passwords are masked by check-config and /admin/state."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import urllib.request

import pytest
from hypothesis import given, settings, strategies as st

import fastinfer.redact as redact_module
from fastinfer.redact import _trie_pattern, mask_url, redact, redact_unchecked, remember
from conftest import every_format_config
from procs import http_json, start_gateway_proc, write_config

CREDENTIAL = "sk-replica-echoed-credential-42"


# ---------------------------------------------------------------- the function

@pytest.mark.parametrize("text, leaked", [
    ("Incorrect API key provided: sk-proj-abcdefghijklmnop1234.", "abcdefghijklmnop1234"),
    ("invalid x-api-key sk-ant-api03-AbCdEf_GhIj-KlMn", "AbCdEf_GhIj-KlMn"),
    ("API key not valid: AIzaSyA1234567890abcdefghijklmnopqrs", "AIzaSyA1234567890abcdefghijklmnopqrs"),
    ("got header Authorization: Bearer eyJhbGciOi.J9.xyz", "eyJhbGciOi.J9.xyz"),
    ("proxy https://bob:hunter2pass@proxy.local:3128 refused", "hunter2pass"),
])
def test_key_shaped_tokens_are_removed(text, leaked):
    clean = redact(text)
    assert leaked not in clean and "****" in clean


def test_remembered_credentials_are_removed_whatever_their_shape():
    remember("plain-credential-without-a-prefix")
    remember("abc")   # too short to be a key: would mangle words
    assert redact("echo: plain-credential-without-a-prefix!") == "echo: ****!"
    assert redact("abc def") == "abc def"
    assert redact("no secrets, no keys, task-force risk-free") == "no secrets, no keys, task-force risk-free"


REMEMBERED = ["plain-credential-without-a-prefix", "Zq9!x(y)+[z]", "tok3n-\u00e9t\u00e9"]
# pieces that come close to a match, or are one: the text is made of them and of anything
PIECES = st.sampled_from(REMEMBERED + [
    "sk-", "sk-proj-abcdef123", "sk-ab", "xsk-abcdefgh", "AIza", "AIzaSyA1234567890abcdefghijk", "Bearer ",
    "BEARER\t", "bearer", "beArer  tok.en/=", "https://", "http://u:", "redis://:pw@h", "a://b:c@d", "://", ":",
    "@", "/", " ", "\n", "-", "_", "plain-credential", "without-a-prefix", "\u017f", "\u212a"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=12)), max_size=12))
def test_the_precheck_changes_nothing_redact_returns(parts):
    for secret in REMEMBERED:
        remember(secret)
    text = "".join(parts)
    assert redact(text) == (redact_unchecked(text) if text else text)


def test_text_with_nothing_to_remove_is_returned_as_it_is():
    remember("plain-credential-without-a-prefix")
    request_id = "0f3a9c1b2d4e5f60"
    assert redact(request_id) is request_id
    assert redact("id sk-abcdefgh") == "id sk-****"      # and the precheck still lets a key through to its mask


@settings(max_examples=300, deadline=None)
@given(secrets=st.lists(st.text("ab-c", min_size=1, max_size=9), min_size=1, max_size=12, unique=True),
       text=st.text("ab-c x", max_size=60))
def test_the_secrets_trie_matches_what_a_longest_first_alternation_does(secrets, text):
    """``redact`` matches the remembered secrets with one trie-shaped pattern (a flat alternation of a
    config's thousand keys cost 70 µs a request id): the same text masked as by the plain pattern,
    the longest secret where one is another's prefix."""
    flat = re.compile("|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True)))
    trie = re.compile(_trie_pattern(secrets))
    assert trie.sub("#", text) == flat.sub("#", text)


@pytest.fixture
def forgotten_after():
    """What the test remembers is forgotten after it: the remembered set is the whole process's, and a
    thousand keys left in it would make every later test's redaction match against them."""
    saved = dict(redact_module._secrets)
    yield
    with redact_module._lock:
        redact_module._secrets.clear()
        redact_module._secrets.update(saved)
        redact_module._stale = True


def test_a_thousand_remembered_keys_are_each_masked(forgotten_after):
    """A thousand gateway keys, remembered one by one as a config's are read (the pattern is made
    once, at the next ``redact``): each is masked, and text without one is left as it is."""
    keys = [f"gk-many-{i:04d}-{'q' * 20}" for i in range(1000)]
    for key in keys:
        remember(key)
    text = f"id {keys[0]} and {keys[999]} and {keys[500]}x"
    assert redact(text) == "id **** and **** and ****x"
    assert redact("client-request-0123456789") == "client-request-0123456789"


@pytest.mark.parametrize("url, shown", [
    ("https://user:s3cret@host.example:8443/v1", "https://user:****@host.example:8443/v1"),
    ("http://:onlypass@10.0.0.1/v1", "http://:****@10.0.0.1/v1"),
    ("redis://default:pw@127.0.0.1:6379/0", "redis://default:****@127.0.0.1:6379/0"),
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("http://user@host/v1", "http://user@host/v1"),
    # redis-py takes a password as a query parameter too (the only way for a unix socket)
    ("redis://127.0.0.1:6379/0?password=QPW-SECRET", "redis://127.0.0.1:6379/0?password=****"),
    ("unix:///tmp/r.sock?db=0&password=QPW-SECRET", "unix:///tmp/r.sock?db=0&password=****"),
    ("rediss://u:pw@h:6380/1?ssl_cert_reqs=none&Token=t0k", "rediss://u:****@h:6380/1?ssl_cert_reqs=none&Token=****"),
    ("https://x.blob.example/c?sv=2024&sig=abc%2Fdef", "https://x.blob.example/c?sv=2024&sig=****"),
    ("https://r.openai.azure.com?api-version=2024-02-01", "https://r.openai.azure.com?api-version=2024-02-01"),
    ("http://h/v1?password=", "http://h/v1?password="),
    # a password with an unencoded "/", "?" or "#" ends the authority early for urlsplit: no password
    # found, the rest read as a path; still masked, up to the last "@"
    ("redis://:SECRET/PW@host:6379/0", "redis://:****@host:6379/0"),
    ("redis://u:SE#CRET@host:6379/0", "redis://u:****@host:6379/0"),
    ("rediss://:SE?CR@ET@host:6380/1", "rediss://:****@host:6380/1"),
    ("redis://:1234/x@host:1/0", "redis://:****@host:1/0"),
    ("http://h/v1?x=a@b", "http://h/v1?x=a@b"),
    ("https://u:p/w@host/v1?sig=SECRETSIG", "https://u:****@host/v1?sig=****"),
    # urlsplit found a password, but only the start of it: the rest, up to the last "@", is masked too
    ("redis://u:a@b/c@host:6379/0", "redis://u:****@host:6379/0"),
    ("redis://:a@b?c@host:6379/0", "redis://:****@host:6379/0"),
    ("http://u:p@h/v1?x=a@b", "http://u:****@b"),    # the safe side: masked too much
])
def test_mask_url(url, shown):
    assert mask_url(url) == shown


# ------------------------------------------------- end to end: client and logs

@pytest.fixture(scope="module")
def echoing(upstream, tmp_path_factory):
    """Deployments on every upstream format, each replica with CREDENTIAL; the mock echoes the key."""
    gw = start_gateway_proc(tmp_path_factory.mktemp("redact-gw"), every_format_config(
        upstream.base, server='admin_key = { value = "adm-redact" }', credential=CREDENTIAL,
        oa_base=f"http://user:url-password-77@127.0.0.1:{upstream.port}/v1"))
    yield gw
    gw.stop()


def _post(gw, path: str, body: dict) -> tuple[int, bytes]:
    req = urllib.request.Request(gw.base + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


STEPS = [
    {"status": 400, "message": "bad request from key {api_key}"},
    {"status": 500, "message": "internal error, your key was {api_key}"},
    {"status": 429, "message": "slow down, {api_key}", "headers": {"retry-after": "0"}},
    {"stream_error_at": 1, "message": "x",
     "stream_error": {"error": {"message": "stream broke for {api_key}", "type": "server_error"}}},
    # vLLM's and SGLang's in-stream error object, and an error object sent bare: no "error" key
    {"stream_error_at": 1, "message": "x",
     "stream_error": {"object": "error", "message": "stream broke for {api_key}", "type": "BadRequestError",
                      "code": 400}},
    {"stream_error_at": 1, "message": "x", "stream_error": {"message": "stream broke for {api_key}", "type": "x"}},
]


@pytest.mark.parametrize("model", ["oa", "an", "ge"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize("step", STEPS, ids=["400", "500", "429", "in-stream", "in-stream-vllm", "in-stream-bare"])
def test_an_upstream_echoing_the_credential_never_reaches_the_client(echoing, upstream, model, path, step):
    upstream.script([step])
    body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
            "stream": "stream_error" in step}
    status, raw = _post(echoing, path, body)
    received = upstream.received()[-1]["headers"]
    assert CREDENTIAL in (received.get("authorization", "") + received.get("x-api-key", "")
                          + received.get("x-goog-api-key", ""))   # the upstream had it to echo
    assert status >= 400 or b"error" in raw, raw
    assert CREDENTIAL not in raw.decode()
    assert "****" in raw.decode()    # the message is there, without the key
    assert CREDENTIAL not in echoing.stderr()


@pytest.mark.parametrize("page", ["/admin/state", "/admin/stats"])
def test_admin_pages_mask_a_base_url_password(echoing, page):
    """/admin/stats is also what the dashboard prints: neither page shows the URL's password."""
    status, _, doc = http_json("GET", echoing.base + page, headers={"Authorization": "Bearer adm-redact"})
    assert status == 200
    text = json.dumps(doc)
    assert "url-password-77" not in text and CREDENTIAL not in text
    oa = next(d for d in doc["deployments"] if d["name"] == "oa")
    assert oa["replicas"][0]["base_url"].startswith("http://user:****@127.0.0.1:")
    assert "url-password-77" not in echoing.stderr()     # nor the workers' logs


def test_check_config_masks_a_base_url_password(echoing, workdir):
    config = echoing.args[echoing.args.index("--config") + 1]
    out = subprocess.run([sys.executable, "-m", "fastinfer", "check-config", config], cwd=workdir,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "replica r0: http://user:****@127.0.0.1:" in out.stdout
    assert "url-password-77" not in out.stdout + out.stderr and CREDENTIAL not in out.stdout + out.stderr


def test_a_bad_base_url_error_masks_its_password(workdir):
    path = write_config(workdir, textwrap.dedent("""
        [[deployments]]
        name = "a"
        provider = "openai_compatible"
        [[deployments.replicas]]
        base_url = "http://u:pass-in-a-bad-url@host:99999/v1"
    """))
    out = subprocess.run([sys.executable, "-m", "fastinfer", "check-config", str(path)], cwd=workdir,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "deployments[0].replicas[0].base_url: has a port that is not a number from 1 to 65535" in out.stderr
    assert "pass-in-a-bad-url" not in out.stderr
