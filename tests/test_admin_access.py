"""Who reaches the admin API: the one-time token, the separate admin listener, throttled failures."""
from __future__ import annotations

import http.client
import json
import re

import pytest

from conftest import upstream_config
from procs import http_json, wait_for

KEY = "adm-secret-key"


def printed(gw, pattern: str) -> str:
    match = wait_for(lambda: re.search(pattern, gw.stdout()), timeout=10)
    assert match, gw.stdout()
    return match.group(1)


def one_time_token(gw) -> str:
    return printed(gw, r"/dashboard#token=(\S+)")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}", "connection": "close"}


def with_server(config: str, *lines: str) -> str:
    return config.replace("drain_grace_s = 10", "\n".join(["drain_grace_s = 10", *lines]))


def get_from(source: str, port: int, path: str, headers: dict) -> tuple[int, dict, bytes]:
    """A GET sent from ``source`` (any 127.x address is this host), on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def worker_pids_accepting(base: str, token: str, want: int = 2, tries: int = 200) -> set[int]:
    """The worker pids that answered /admin/stats with ``token`` (fresh connections spread over workers)."""
    pids: set[int] = set()
    for _ in range(tries):
        status, _, body = http_json("GET", base + "/admin/stats", headers=bearer(token))
        assert status == 200, body
        pids.add(body["pid"])
        if len(pids) >= want:
            break
    return pids


def test_without_an_admin_key_serve_prints_a_one_time_token_every_worker_accepts(start_gateway, mock_upstream):
    gw = start_gateway(upstream_config(mock_upstream.base))
    url = printed(gw, r"dashboard: (http://\S+)")
    token = one_time_token(gw)
    assert url == f"{gw.base}/dashboard#token={token}"
    assert len(token) >= 40
    assert len(worker_pids_accepting(gw.base, token)) == 2
    status, _, body = http_json("GET", gw.base + "/admin/state", headers=bearer(token[:-1] + "x"))
    assert status == 401 and body["error"]["code"] == "invalid_admin_key"
    assert token not in gw.stderr()


def test_each_run_has_its_own_token(start_gateway, mock_upstream):
    first = start_gateway(upstream_config(mock_upstream.base), workers=1)
    second = start_gateway(upstream_config(mock_upstream.base), workers=1)
    a, b = one_time_token(first), one_time_token(second)
    assert a != b
    assert http_json("GET", second.base + "/admin/state", headers=bearer(a))[0] == 401
    assert http_json("GET", second.base + "/admin/state", headers=bearer(b))[0] == 200


def test_the_token_holds_for_the_whole_run_across_a_reload(start_gateway, mock_upstream):
    gw = start_gateway(upstream_config(mock_upstream.base))
    token = one_time_token(gw)
    old = worker_pids_accepting(gw.base, token)
    assert http_json("POST", gw.base + "/admin/reload", headers=bearer(token))[0] == 202

    def new_generation_answers():
        status, _, body = http_json("GET", gw.base + "/admin/stats", headers=bearer(token))
        assert status == 200, body     # old or new workers, the run's token is accepted
        return body["pid"] not in old
    assert wait_for(new_generation_answers, timeout=20)


def test_configured_key_is_compared_and_no_token_is_made(start_gateway, mock_upstream):
    gw = start_gateway(with_server(upstream_config(mock_upstream.base), f'admin_key = {{ value = "{KEY}" }}'))
    assert "token=" not in printed(gw, r"(dashboard: .*)")
    assert http_json("GET", gw.base + "/admin/state", headers=bearer(KEY))[0] == 200
    assert http_json("GET", gw.base + "/admin/state", headers=bearer(KEY + "x"))[0] == 401
    assert http_json("GET", gw.base + "/admin/state", headers={"Authorization": KEY})[0] == 401


def test_admin_listener_takes_admin_dashboard_and_metrics_off_the_public_one(start_gateway, mock_upstream):
    gw = start_gateway(with_server(upstream_config(mock_upstream.base), 'admin_host = "127.0.0.1"', "admin_port = 0"))
    admin = printed(gw, r"admin API, dashboard and metrics on (http://\S+)")
    token = one_time_token(gw)
    assert admin != gw.base
    assert printed(gw, r"dashboard: (http://\S+)") == f"{admin}/dashboard#token={token}"

    def status(url: str, headers: dict | None = None) -> int:
        return http_json("GET", url, headers=headers)[0] if "/admin/" in url else _get(url)[0]

    for path in ("/metrics", "/dashboard", "/dashboard/dashboard.js"):
        assert status(gw.base + path) == 404, path
        assert status(admin + path) == 200, path
    assert status(gw.base + "/admin/state", bearer(token)) == 404
    assert status(admin + "/admin/state", bearer(token)) == 200
    assert status(admin + "/admin/state") == 401
    assert b"fastinfer_requests_total" in _get(admin + "/metrics")[1]

    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert http_json("POST", gw.base + "/v1/chat/completions", chat)[0] == 200
    assert http_json("POST", admin + "/v1/chat/completions", chat)[0] == 404
    assert status(gw.base + "/healthz") == 200 and status(admin + "/readyz") == 200


def _get(url: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def connection_per_worker(port: int, key: str, workers: int = 2, tries: int = 200) -> list:
    """Kept-alive connections, one held by each worker (told apart by the pid /admin/stats answers)."""
    held: dict[int, http.client.HTTPConnection] = {}
    for _ in range(tries):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/admin/stats", headers={"Authorization": f"Bearer {key}"})
        pid = json.loads(conn.getresponse().read())["pid"]
        if pid in held:
            conn.close()
            continue
        held[pid] = conn
        if len(held) == workers:
            return list(held.values())
    raise AssertionError(f"only {len(held)} workers answered")


def admin_get(conn: http.client.HTTPConnection, key: str) -> tuple[int, dict, bytes]:
    conn.request("GET", "/admin/state", headers={"Authorization": f"Bearer {key}"})
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def test_failed_admin_auth_is_throttled_per_address_host_wide_and_logged_without_the_key(start_gateway,
                                                                                           mock_upstream):
    gw = start_gateway(with_server(upstream_config(mock_upstream.base), f'admin_key = {{ value = "{KEY}" }}'))
    first, second = connection_per_worker(gw.port, KEY)
    try:
        # 3 failures in one worker and 2 in the other: the limit of 5 is the host's, not a worker's
        for i, conn in enumerate([first, second, first, second, first]):
            assert admin_get(conn, f"wrong-guess-{i}")[0] == 401
        status, headers, body = admin_get(second, "wrong-guess-5")
        assert status == 429 and json.loads(body)["error"]["code"] == "admin_auth_throttled"
        assert 1 <= int(headers["retry-after"]) <= 60
        # the right key from that address waits too; another address is not held up
        assert admin_get(first, KEY)[0] == 429
    finally:
        first.close()
        second.close()
    # Addresses hash onto 256 slots with a salt only the host knows, so another address shares the
    # held one's slot 1 time in 256: of 8 others, all but a rare one or two get through.
    others = [get_from(f"127.0.0.{n}", gw.port, "/admin/state", bearer(KEY))[0] for n in range(2, 10)]
    assert others.count(200) >= 6 and set(others) <= {200, 429}
    # data routes are not admin routes
    assert http_json("POST", gw.base + "/v1/chat/completions",
                     {"model": "m", "messages": [{"role": "user", "content": "hi"}]})[0] == 200

    lines = wait_for(lambda: [line for line in gw.stderr().splitlines() if "admin authentication failed" in line])
    assert lines and all("from 127.0.0.1 for GET /admin/state" in line for line in lines)
    assert len(lines) <= 2          # one per worker in a burst; the rest are counted, not printed
    assert "wrong-guess" not in gw.stderr() and KEY not in gw.stderr()


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/", "/dashboard/dashboard.css", "/dashboard/dashboard.js"])
def test_the_page_is_public_and_locked_down(start_gateway, path):
    gw = start_gateway(workers=1)
    import urllib.request
    with urllib.request.urlopen(gw.base + path, timeout=10) as r:
        headers = {k.lower(): v for k, v in r.headers.items()}
        body = r.read()
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")   # nothing from elsewhere
    request = urllib.request.Request(gw.base + path, headers={"If-None-Match": headers["etag"]})
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("expected 304")
    except urllib.error.HTTPError as e:
        assert e.code == 304
    assert http_json("GET", gw.base + "/admin/stats")[0] == 401     # the data behind it is not public
    assert _get(gw.base + "/dashboard/secrets.txt")[0] == 404
