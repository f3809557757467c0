"""The dashboard in headless Chromium, against a real gateway (2 workers) and the mock upstream."""
from __future__ import annotations

import json
import os
import re
import signal

import pytest

from browser import Page
from procs import children_of, http_json, wait_for


CONFIG = """
    [server]
    drain_grace_s = 5

    [[deployments]]
    name = "m"
    provider = "openai_compatible"
    model = "mock-model"
    price = {{ input_per_mtok = 2.5, output_per_mtok = 10.0 }}

    [[deployments.replicas]]
    name = "east"
    base_url = "{base}/v1"

    [[deployments.replicas]]
    name = "west"
    base_url = "{base}/v1"

    [[deployments]]
    name = "n"
    provider = "openai_compatible"

    [[deployments.replicas]]
    base_url = "{base}/v1"
"""


def dashboard_url(gw) -> str:
    """The URL ``serve`` printed, one-time token and all."""
    line = wait_for(lambda: re.search(r"dashboard: (http://\S+/dashboard#token=\S+)", gw.stdout()), timeout=10)
    assert line, gw.stdout()
    return line.group(1)


def chat(base: str, model: str):
    status, _, _ = http_json("POST", base + "/v1/chat/completions",
                             {"model": model, "messages": [{"role": "user", "content": "hello"}]},
                             headers={"connection": "close"})
    assert status == 200


def circuit_state(base: str, token: str, deployment: str, replica: str) -> str:
    status, _, state = http_json("GET", base + "/admin/state", headers={"Authorization": f"Bearer {token}"})
    assert status == 200
    dep = next(d for d in state["deployments"] if d["name"] == deployment)
    return next(r for r in dep["replicas"] if r["name"] == replica)["circuit"]["state"]


def js_select(selector: str) -> str:
    return f"document.querySelector({json.dumps(selector)})"


def shown_requests(page: Page, deployment: str) -> int:
    text = page.evaluate(js_select(f'[data-deployment="{deployment}"] [data-metric="requests"]') + ".textContent")
    return int(re.sub(r"\D", "", text) or -1)


def replica_state(deployment: str, replica: str) -> str:
    return js_select(f'[data-deployment="{deployment}"] [data-replica="{replica}"]') + ".dataset.state"


@pytest.fixture
def gateway(start_gateway, mock_upstream):
    return start_gateway(CONFIG.format(base=mock_upstream.base))


@pytest.fixture
def page(workdir):
    page = Page(workdir)
    yield page
    page.close()


def test_live_view_and_circuit_buttons(gateway, page, workdir):
    url = dashboard_url(gateway)
    token = url.split("#token=", 1)[1]
    page.goto(url)

    # every deployment and every replica, each circuit closed
    assert page.wait_for("document.querySelectorAll('[data-deployment]').length === 2")
    layout = page.evaluate("""[...document.querySelectorAll('[data-deployment]')].map(d =>
        [d.dataset.deployment, [...d.querySelectorAll('[data-replica]')].map(r => [r.dataset.replica, r.dataset.state])])""")
    assert layout == [["m", [["east", "closed"], ["west", "closed"]]], ["n", [["r0", "closed"]]]]
    for d, r in (("m", "east"), ("m", "west"), ("n", "r0")):
        for action in ("force_open", "reset"):
            assert page.evaluate(js_select(f'[data-deployment="{d}"] [data-replica="{r}"] [data-action="{action}"]')
                                 + " !== null")

    # the key left the address bar and lives in this tab's sessionStorage only
    assert page.evaluate("location.hash") == ""
    assert page.evaluate("sessionStorage.getItem('fastinfer.adminKey')") == token
    assert token not in page.evaluate("JSON.stringify(localStorage)")

    # traffic moves the counter and draws the charts
    before = shown_requests(page, "m")
    for _ in range(6):
        chat(gateway.base, "m")
    assert wait_for(lambda: shown_requests(page, "m") >= before + 6, timeout=10), shown_requests(page, "m")
    assert page.wait_for("document.querySelectorAll('[data-chart=\"rate\"] path.series').length > 0")

    # force_open from the page: that replica alone turns open, and the host agrees
    page.click('[data-deployment="m"] [data-replica="east"] [data-action="force_open"]')
    assert page.wait_for(replica_state("m", "east") + " === 'open'")
    assert circuit_state(gateway.base, token, "m", "east") == "open"
    assert page.evaluate(replica_state("m", "west")) == "closed"

    # a circuit opened elsewhere (the API) shows up through the page's polling
    assert http_json("POST", gateway.base + "/admin/circuits/n/r0", {"action": "force_open", "duration_s": 60},
                     headers={"Authorization": f"Bearer {token}"})[0] == 200
    assert page.wait_for(replica_state("n", "r0") + " === 'open'")

    # reset turns it back
    page.click('[data-deployment="m"] [data-replica="east"] [data-action="reset"]')
    assert page.wait_for(replica_state("m", "east") + " === 'closed'")
    assert circuit_state(gateway.base, token, "m", "east") == "closed"

    # one row per worker slot, each serving; a worker killed shows as a restart of its slot
    rows = "[...document.querySelectorAll('#workers [data-worker]')]"
    assert page.wait_for(f"{rows}.length === 2")
    assert page.evaluate(f"{rows}.map(r => [r.dataset.worker, r.dataset.state])") == [["0", "serving"], ["1", "serving"]]
    # its connections: open · let go (the rebalancing's count), as /admin/stats has them
    stats = http_json("GET", gateway.base + "/admin/stats", headers={"Authorization": f"Bearer {token}"})[2]
    shown = page.evaluate(f"{rows}.map(r => r.querySelector('[data-metric=connections]').textContent)")
    assert [re.fullmatch(r"(\d+) · (\d+)", text) is not None for text in shown] == [True, True], shown
    assert [int(text.split(" · ")[1]) for text in shown] == [w["connections_rebalanced"] for w in stats["workers"]]
    os.kill(children_of(gateway.pid)[0], signal.SIGKILL)
    restarted = f"{rows}.filter(r => r.querySelector('[data-metric=restarts]').textContent === '1 · 0')"
    assert page.wait_for(f"{restarted}.length === 1")
    # its replacement serves, and the slot stays marked as restarted for a while; the other is untouched
    assert page.wait_for(f"{restarted}[0].dataset.state === 'restarted'")
    assert page.evaluate(f"{rows}.filter(r => r.dataset.state === 'serving').length") == 1

    shot = page.screenshot(workdir / "dashboard.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert page.problems == []


def test_key_form_refuses_a_wrong_key_then_opens(gateway, page):
    token = dashboard_url(gateway).split("#token=", 1)[1]
    page.goto(gateway.base + "/dashboard")
    assert page.wait_for(js_select("#login") + ".hidden === false")
    assert page.evaluate(js_select("#board") + ".hidden") is True

    page.click("#token")
    page.type_text("not-the-key")
    page.click('#login-form button[type="submit"]')
    assert page.wait_for(js_select("#login-error") + ".textContent.includes('refused')")
    assert page.evaluate("sessionStorage.getItem('fastinfer.adminKey')") is None

    page.click("#token")
    page.type_text(token)
    page.click('#login-form button[type="submit"]')
    assert page.wait_for(js_select("#board") + ".hidden === false")
    assert page.wait_for("document.querySelectorAll('[data-replica]').length === 3")
    # the only complaint the browser logged is the refused key's 401
    assert all("401" in p for p in page.problems), page.problems


def test_dark_and_light(gateway, page):
    page.prefer_color_scheme("dark")
    page.goto(dashboard_url(gateway))
    background = "getComputedStyle(document.body).backgroundColor"
    assert page.wait_for("document.documentElement.dataset.theme === 'dark'")
    dark = page.evaluate(background)
    page.click("#theme")
    assert page.wait_for("document.documentElement.dataset.theme === 'light'")
    assert page.evaluate(background) != dark
    page.goto(gateway.base + "/dashboard")      # the choice outlives a reload; the key is still in the tab
    assert page.wait_for("document.documentElement.dataset.theme === 'light'")
    assert page.wait_for("document.querySelectorAll('[data-deployment]').length === 2")
    assert page.problems == []


def test_narrow_screen_keeps_every_replica_and_button_reachable(gateway, workdir):
    page = Page(workdir, width=390, height=844)
    try:
        page.goto(dashboard_url(gateway))
        assert page.wait_for("document.querySelectorAll('[data-replica]').length === 3")
        # nothing wider than the screen but the replica tables, which scroll inside their card
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
        page.click('[data-deployment="n"] [data-replica="r0"] [data-action="force_open"]')
        assert page.wait_for(replica_state("n", "r0") + " === 'open'")
        assert page.problems == []
    finally:
        page.close()


def test_rebuild_and_reload_buttons(gateway, page):
    token = dashboard_url(gateway).split("#token=", 1)[1]
    admin = {"Authorization": f"Bearer {token}"}
    page.goto(dashboard_url(gateway))
    assert page.wait_for("document.querySelectorAll('[data-deployment]').length === 2")

    page.click('[data-deployment="n"] [data-action="rebuild_sessions"]')
    assert page.wait_for(js_select("#toast") + ".textContent.includes('Rebuild sessions of n')")

    def rebuilds(name: str) -> dict:
        stats = http_json("GET", gateway.base + "/admin/stats", headers=admin)[2]
        return next(d for d in stats["deployments"] if d["name"] == name)["session_rebuilds"]
    assert wait_for(lambda: rebuilds("n").get("admin") == 1)
    assert rebuilds("m") == {}

    old_pids = {http_json("GET", gateway.base + "/admin/stats", headers={**admin, "connection": "close"})[2]["pid"]
                for _ in range(10)}
    page.click('button[data-action="reload"]')
    assert page.wait_for(js_select("#toast") + ".textContent.includes('Config reload')")

    def new_generation_serves() -> bool:
        status, _, body = http_json("GET", gateway.base + "/admin/stats", headers={**admin, "connection": "close"})
        return status == 200 and body["pid"] not in old_pids
    assert wait_for(new_generation_serves, timeout=20)
    # the page lives through the roll: still polling, still showing every replica
    before = page.evaluate(js_select("#updated") + ".textContent")
    assert page.wait_for(f"{js_select('#updated')}.textContent !== {json.dumps(before)}")
    assert page.evaluate("document.querySelectorAll('[data-replica]').length") == 3
    assert page.evaluate(js_select("#live") + ".dataset.status") == "live"
    assert not [p for p in page.problems if p.startswith(("exception", "console"))], page.problems
