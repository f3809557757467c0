"""Host-wide limits, priority, breakers and metrics: 2 workers, one mock upstream.

The mock upstream records its maximum concurrency and the order requests
arrived in; the gateway's two workers must together behave as one gateway.
"""
from __future__ import annotations

import os
import re
import signal
import threading
import time


from conftest import upstream_config
from procs import children_of, http_json, in_parallel, wait_for

MESSAGES = [{"role": "user", "content": "hi"}]


def chat(base: str, headers: dict | None = None, timeout: float = 20, **body):
    payload = {"model": "m", "messages": MESSAGES, **body}
    return http_json("POST", base + "/v1/chat/completions", payload,
                     headers={"connection": "close", **(headers or {})}, timeout=timeout)


def scrape(base: str) -> str:
    import urllib.request
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        return resp.read().decode()


def value(text: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert m, f"{series} not in /metrics"
    return float(m.group(1))


def in_background(fn) -> tuple[threading.Thread, list]:
    """Run ``fn`` in a thread; its result lands in the returned list."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    return thread, result


def queue_depth(gw) -> float:
    return value(scrape(gw.base), 'fastinfer_queue_depth{deployment="m"}')


def test_concurrency_limit_holds_across_workers(start_gateway, mock_upstream):
    mock_upstream.script([{"hold": "slots"}, {"hold": "slots"}])   # the first two stay until released
    gw = start_gateway(upstream_config(mock_upstream.base, max_concurrency=2))
    threads = [in_background(lambda: chat(gw.base)[0]) for _ in range(8)]
    assert mock_upstream.wait_in_flight(2)
    assert wait_for(lambda: queue_depth(gw) == 6)      # the rest wait in the gateway, from both workers
    assert mock_upstream.stats()["requests"] == 2
    mock_upstream.release("slots")
    for thread, _ in threads:
        thread.join(30)
    assert [result for _, result in threads] == [[200]] * 8
    assert mock_upstream.stats()["max_in_flight"] == 2


def test_queue_capacity_rejects_the_overflow_and_counts_it(start_gateway, mock_upstream):
    mock_upstream.script([{"hold": "slot"}])
    gw = start_gateway(upstream_config(mock_upstream.base, max_concurrency=1, queue_capacity=2,
                                       queue_timeout_s=30))
    holder = in_background(lambda: chat(gw.base))
    assert mock_upstream.wait_in_flight(1)
    queued = [in_background(lambda: chat(gw.base)) for _ in range(2)]
    assert wait_for(lambda: queue_depth(gw) == 2)
    overflow = in_parallel(3, lambda i: chat(gw.base))    # answered while the slot is still held
    assert mock_upstream.stats()["in_flight"] == 1
    mock_upstream.release("slot")
    for thread, _ in [holder, *queued]:
        thread.join(30)
    answers = [holder[1][0], *(q[1][0] for q in queued), *overflow]
    statuses = sorted(a[0] for a in answers)
    assert statuses == [200, 200, 200, 503, 503, 503]
    rejected = [a for a in answers if a[0] == 503]
    assert all(a[1].get("Retry-After") or a[1].get("retry-after") for a in rejected)
    assert all(a[2]["error"]["type"] == "overloaded_error" for a in rejected)
    text = scrape(gw.base)
    assert value(text, 'fastinfer_rejected_total{deployment="m",reason="queue_full"}') == 3
    assert value(text, 'fastinfer_requests_total{deployment="m",code="503"}') == 3
    assert value(text, 'fastinfer_requests_total{deployment="m",code="200"}') == 3
    assert value(text, 'fastinfer_in_flight{deployment="m"}') == 0
    assert value(text, 'fastinfer_queue_depth{deployment="m"}') == 0


def test_reject_policy_answers_503_at_once(start_gateway, mock_upstream):
    mock_upstream.script([{"hold": "slot"}])
    gw = start_gateway(upstream_config(mock_upstream.base, max_concurrency=1,
                                       on_capacity_exhausted='"reject"'))
    holder = in_background(lambda: chat(gw.base)[0])
    assert mock_upstream.wait_in_flight(1)
    status, _, body = chat(gw.base)
    assert status == 503
    assert mock_upstream.stats()["in_flight"] == 1   # "at once": the slot was still held when it answered
    mock_upstream.release("slot")
    holder[0].join(10)
    assert holder[1] == [200]
    assert value(scrape(gw.base), 'fastinfer_rejected_total{deployment="m",reason="capacity"}') == 1


def test_priority_order_is_host_wide(start_gateway, mock_upstream):
    """One slot; while it is held, requests of each class queue up from both workers."""
    mock_upstream.script([{"hold": "slot"}])   # the first request holds the slot
    gw = start_gateway(upstream_config(mock_upstream.base, max_concurrency=1, queue_capacity=16))
    order = ["background", "normal", "high", "critical", "background", "critical", "normal", "high"]
    threads = [threading.Thread(target=chat, args=(gw.base,), kwargs={"user": "holder"})]
    threads[0].start()
    assert mock_upstream.wait_in_flight(1)
    for i, prio in enumerate(order):
        t = threading.Thread(target=chat, args=(gw.base, {"x-priority": prio}), kwargs={"user": f"{prio}-{i}"})
        t.start()
        threads.append(t)
        assert wait_for(lambda: queue_depth(gw) == i + 1)   # a known arrival order within each class
    mock_upstream.release("slot")
    for t in threads:
        t.join(30)
    served = [r["body"]["user"] for r in mock_upstream.stats()["received"]]
    assert served[0] == "holder"
    assert served[1:] == ["critical-3", "critical-5", "high-2", "high-7", "normal-1", "normal-6",
                          "background-0", "background-4"]


def test_queue_timeout_is_503(start_gateway, mock_upstream):
    mock_upstream.script([{"hold": "slot"}])
    gw = start_gateway(upstream_config(mock_upstream.base, max_concurrency=1, queue_timeout_s=0.3))
    holder = in_background(lambda: chat(gw.base)[0])
    assert mock_upstream.wait_in_flight(1)
    t0 = time.monotonic()
    status, _, body = chat(gw.base)
    waited = time.monotonic() - t0
    assert mock_upstream.stats()["in_flight"] == 1    # the slot never freed: the queue timeout answered
    mock_upstream.release("slot")
    holder[0].join(10)
    assert status == 503 and holder[1] == [200]
    assert waited >= 0.3
    assert "queue" in body["error"]["message"]
    assert value(scrape(gw.base), 'fastinfer_rejected_total{deployment="m",reason="queue_timeout"}') == 1


def _with_fallback(mock_base: str, **deployment) -> str:
    """``upstream_config``'s deployment ``m`` falling back to ``f``, another deployment on the mock."""
    return upstream_config(mock_base, fallbacks='["f"]', **deployment) + f"""
        [[deployments]]
        name = "f"
        provider = "openai_compatible"
        model = "fallback-model"

        [[deployments.replicas]]
        base_url = "{mock_base}/v1"
        credential = {{ value = "sk-replica-secret" }}
    """


def test_a_full_or_timed_out_queue_goes_to_the_fallback(start_gateway, mock_upstream):
    """Both mean the deployment cannot serve the request; its fallback then does."""
    mock_upstream.script([{"hold": "slot"}])
    gw = start_gateway(_with_fallback(mock_upstream.base, max_concurrency=1, queue_capacity=1,
                                      queue_timeout_s=0.5))
    holder = in_background(lambda: chat(gw.base)[0])
    assert mock_upstream.wait_in_flight(1)
    queued = in_background(lambda: chat(gw.base))
    assert wait_for(lambda: queue_depth(gw) == 1)
    overflow = chat(gw.base)                       # the queue is full: to the fallback at once
    queued[0].join(10)
    timed_out = queued[1][0]                       # waited 0.5 s in the queue, then to the fallback
    assert mock_upstream.stats()["in_flight"] == 1      # the slot was held all along
    mock_upstream.release("slot")
    holder[0].join(10)
    assert holder[1] == [200]
    for status, headers, _ in (overflow, timed_out):
        assert status == 200 and headers["x-fastinfer-deployment"] == "f"
    models = [r["body"]["model"] for r in mock_upstream.stats()["received"]]
    assert sorted(models) == ["fallback-model", "fallback-model", "mock-model"]
    text = scrape(gw.base)
    assert value(text, 'fastinfer_rejected_total{deployment="m",reason="queue_full"}') == 1
    assert value(text, 'fastinfer_rejected_total{deployment="m",reason="queue_timeout"}') == 1
    assert value(text, 'fastinfer_fallbacks_total{deployment="m",to="f"}') == 2


def test_a_queue_wait_the_callers_deadline_ends_is_not_sent_to_a_fallback(start_gateway, mock_upstream):
    mock_upstream.script([{"hold": "slot"}])
    gw = start_gateway(_with_fallback(mock_upstream.base, max_concurrency=1, queue_timeout_s=30))
    holder = in_background(lambda: chat(gw.base)[0])
    assert mock_upstream.wait_in_flight(1)
    status, headers, body = chat(gw.base, {"x-timeout-ms": "300"})
    assert mock_upstream.stats()["in_flight"] == 1
    mock_upstream.release("slot")
    holder[0].join(10)
    assert status == 503 and "x-fastinfer-deployment" not in headers
    assert "queue" in body["error"]["message"]
    assert [r["body"]["model"] for r in mock_upstream.stats()["received"]] == ["mock-model"]
    assert value(scrape(gw.base), 'fastinfer_fallbacks_total{deployment="m",to="f"}') == 0


def test_breaker_opens_after_exactly_n_failures_probes_once_and_closes(start_gateway, mock_upstream):
    # open_s is long, so the open phase is checked at leisure however slow the machine; then the
    # admin API shortens the open period (force_open sets its end) and the breaker turns half-open
    # by itself when that end passes
    admin = {"Authorization": "Bearer adm-breaker"}
    gw = start_gateway(upstream_config(
        mock_upstream.base, retry="{ max_attempts = 1 }",
        circuit_breaker="{ failure_threshold = 3, open_s = 60, max_open_s = 600, half_open_probes = 1 }",
    ).replace("[server]", '[server]\n        admin_key = { value = "adm-breaker" }'))
    mock_upstream.script([{"status": 500}] * 3)
    for _ in range(3):
        assert chat(gw.base)[0] == 502
    seen = mock_upstream.stats()["requests"]
    status, headers, body = chat(gw.base)
    assert status == 503
    assert 50 <= int(headers.get("retry-after") or headers.get("Retry-After")) <= 60   # open_s, counted down
    assert mock_upstream.stats()["requests"] == seen   # an open circuit sends nothing upstream
    text = scrape(gw.base)
    assert value(text, 'fastinfer_circuit_state{deployment="m",replica="r0"}') == 1
    assert value(text, 'fastinfer_upstream_requests_total{deployment="m",replica="r0",outcome="server_error"}') == 3
    status, _, forced = http_json("POST", gw.base + "/admin/circuits/m/r0", {"action": "force_open", "duration_s": 0.2},
                                  headers=admin)
    assert status == 200 and forced["state"] == "open"
    assert wait_for(lambda: value(scrape(gw.base), 'fastinfer_circuit_state{deployment="m",replica="r0"}') == 2,
                    timeout=10)   # the open period has passed: half-open
    # the probe is held at the upstream; every other request, whichever worker takes it, is refused
    mock_upstream.script([{"hold": "probe"}])
    probe = in_background(lambda: chat(gw.base)[0])
    assert mock_upstream.wait_in_flight(1)
    assert [chat(gw.base)[0] for _ in range(6)] == [503] * 6
    assert mock_upstream.stats()["requests"] == seen + 1
    mock_upstream.release("probe")
    probe[0].join(10)
    assert probe[1] == [200]
    assert value(scrape(gw.base), 'fastinfer_circuit_state{deployment="m",replica="r0"}') == 0
    assert chat(gw.base)[0] == 200
    _, _, state = http_json("GET", gw.base + "/admin/state", headers=admin)
    transitions = state["deployments"][0]["replicas"][0]["circuit"]["transitions"]
    assert transitions == {"closed": 1, "open": 1, "half_open": 1}   # the forced end was no new opening


def test_metrics_are_host_totals_from_any_worker(start_gateway, mock_upstream):
    gw = start_gateway(upstream_config(mock_upstream.base))
    in_parallel(10, lambda i: chat(gw.base))
    # each scrape lands on whichever worker accepts it; every one must report all 10
    for _ in range(6):
        assert value(scrape(gw.base), 'fastinfer_requests_total{deployment="m",code="200"}') == 10


def test_a_killed_workers_slot_is_reclaimed(start_gateway, mock_upstream):
    mock_upstream.script([{"hold": "slot"}])
    gw = start_gateway(upstream_config(mock_upstream.base, max_concurrency=1, queue_timeout_s=30))

    def hold():
        try:
            chat(gw.base)
        except OSError:
            pass  # its worker is killed under it, as intended

    holder = threading.Thread(target=hold)
    holder.start()
    assert mock_upstream.wait_in_flight(1)
    assert value(scrape(gw.base), 'fastinfer_in_flight{deployment="m"}') == 1
    for pid in children_of(gw.pid):
        os.kill(pid, signal.SIGKILL)   # whichever worker held the slot dies with it
    holder.join(10)
    wait_for(lambda: len(children_of(gw.pid)) >= 2, timeout=5)   # the replacement worker
    assert value(scrape(gw.base), 'fastinfer_in_flight{deployment="m"}') == 0
    mock_upstream.release("slot")
    assert chat(gw.base, timeout=5)[0] == 200
