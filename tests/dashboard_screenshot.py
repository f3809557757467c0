"""Make docs/dashboard.png: the dashboard of a real gateway under mock traffic.

    PYTHONPATH=$PWD python tests/dashboard_screenshot.py docs/dashboard.png [--seconds 90] [--dark]

Starts the mock upstream (with some latency and errors) and a 2-worker gateway, sends bounded
traffic to three deployments for ``--seconds``, force-opens one replica so a circuit shows, and
has headless Chromium capture the page. Not a test (no test_ prefix); it reuses the tests' helpers.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser import Page  # noqa: E402
from procs import http_json, start_gateway_proc, start_mock, wait_for  # noqa: E402

CONFIG = """
[server]
drain_grace_s = 5

[[deployments]]
name = "gpt-4o"
provider = "openai_compatible"
model = "gpt-4o-2024-08-06"
price = {{ input_per_mtok = 2.5, output_per_mtok = 10.0 }}
fallbacks = ["llama-3.1-70b"]

[[deployments.replicas]]
name = "east"
base_url = "{fast}/v1"

[[deployments.replicas]]
name = "west"
base_url = "{fast}/v1"

[[deployments]]
name = "claude-sonnet"
provider = "anthropic"
model = "claude-3-5-sonnet-latest"
price = {{ input_per_mtok = 3.0, output_per_mtok = 15.0 }}

[[deployments.replicas]]
name = "primary"
base_url = "{slow}/v1"

[[deployments]]
name = "llama-3.1-70b"
provider = "openai_compatible"
price = {{ input_per_mtok = 0.6, output_per_mtok = 0.8 }}

[[deployments.replicas]]
name = "gpu-a"
base_url = "{slow}/v1"

[[deployments.replicas]]
name = "gpu-b"
base_url = "{slow}/v1"
"""


def send(base: str, model: str, stream: bool) -> None:
    body = {"model": model, "stream": stream, "max_tokens": 64,
            "messages": [{"role": "user", "content": "Summarise the incident report in three bullet points."}]}
    request = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
    except Exception:
        pass   # errors are part of the picture


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--dark", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fastinfer-shot-"))
    fast = start_mock(work, "--latency-ms", "60", "--itl-ms", "8", "--tokens", "48", "--error-rate", "0.02")
    slow = start_mock(work, "--latency-ms", "220", "--itl-ms", "20", "--tokens", "64", "--error-rate", "0.01")
    gateway = start_gateway_proc(work, CONFIG.format(fast=fast.base, slow=slow.base), workers=2)
    page = None
    try:
        url = wait_for(lambda: re.search(r"(http://\S+/dashboard#token=\S+)", gateway.stdout())).group(1)
        token = url.split("#token=")[1]
        page = Page(work, width=1600, height=1000)
        if args.dark:
            page.prefer_color_scheme("dark")
        page.goto(url)
        stop = time.monotonic() + args.seconds
        plan = [("gpt-4o", True), ("gpt-4o", False), ("gpt-4o", True), ("claude-sonnet", True),
                ("llama-3.1-70b", False), ("llama-3.1-70b", True)]

        def client(model: str, stream: bool) -> None:
            while time.monotonic() < stop:
                send(gateway.base, model, stream)

        threads = [threading.Thread(target=client, args=p, daemon=True) for p in plan]
        for t in threads:
            t.start()
        time.sleep(max(0.0, args.seconds - 8))
        http_json("POST", gateway.base + "/admin/circuits/gpt-4o/west", {"action": "force_open", "duration_s": 300},
                  headers={"Authorization": f"Bearer {token}"})
        time.sleep(6)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(args.out)
        for t in threads:
            t.join(40)
        print(f"wrote {args.out}; browser problems: {page.problems or 'none'}")
    finally:
        if page is not None:
            page.close()
        gateway.stop()
        fast.kill()
        slow.kill()


if __name__ == "__main__":
    main()
