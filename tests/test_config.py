"""Config validation and ``check-config``: every error names its key, secrets never show."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from fastinfer.config import ConfigError, load_config, parse_config
from procs import http_json, write_config


def check_config(workdir, text: str, env: dict | None = None) -> subprocess.CompletedProcess:
    path = write_config(workdir, textwrap.dedent(text))
    import os
    return subprocess.run([sys.executable, "-m", "fastinfer", "check-config", str(path)], cwd=workdir,
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


GOOD = """
    [server]
    port = 8100
    admin_key = { value = "admin-very-secret" }

    [[deployments]]
    name = "gpt-4o"
    provider = "openai"
    model = "gpt-4o-2024-08-06"
    fallbacks = ["local"]

    [[deployments.replicas]]
    credential = { env = "FI_TEST_OPENAI_KEY" }

    [[deployments.replicas]]
    base_url = "https://other.example/v1"
    credential = { value = "sk-inline-secret-value" }

    [[deployments]]
    name = "local"
    provider = "openai_compatible"

    [[deployments.replicas]]
    base_url = "http://127.0.0.1:8001/v1"
    credential = { file = "/run/secrets/local-key" }
"""


def test_check_config_prints_resolved_deployments_with_secrets_masked(workdir):
    out = check_config(workdir, GOOD, env={"FI_TEST_OPENAI_KEY": "sk-env-secret-value"})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "deployment gpt-4o: provider=openai model=gpt-4o-2024-08-06" in text
    assert "replica r0: https://api.openai.com/v1 credential=env:FI_TEST_OPENAI_KEY" in text
    assert "replica r1: https://other.example/v1 credential=value:****" in text
    assert "credential=file:/run/secrets/local-key" in text
    for secret in ("sk-env-secret-value", "sk-inline-secret-value", "admin-very-secret"):
        assert secret not in text + out.stderr
    assert "drop_params" not in text      # said only of a deployment that sets it
    assert "count_tokens" not in text


def test_check_config_says_which_deployments_drop_parameters(workdir):
    out = check_config(workdir, """
        [[deployments]]
        name = "claude"
        provider = "anthropic"
        drop_params = true
        [[deployments.replicas]]
        credential = { value = "sk-ant-x" }
    """)
    assert out.returncode == 0, out.stderr
    assert "deployment claude: provider=anthropic" in out.stdout
    assert "  drop_params: parameters the upstream's API has no place for are left out" in out.stdout


def test_check_config_says_who_counts_tokens_where_the_deployment_says(workdir):
    out = check_config(workdir, """
        [[deployments]]
        name = "claude"
        provider = "anthropic"
        count_tokens = "estimate"
        [[deployments.replicas]]
        credential = { value = "sk-ant-x" }
        [[deployments]]
        name = "llama"
        provider = "openai_compatible"
        count_tokens = "upstream"
        [[deployments.replicas]]
        base_url = "http://127.0.0.1:9/v1"
    """)
    assert out.returncode == 0, out.stderr
    claude, llama = out.stdout.split("deployment claude:")[1].split("deployment llama:")
    assert "  count_tokens: estimated by the gateway, no upstream asked" in claude
    assert "  count_tokens: counted by the upstream" in llama


@pytest.mark.parametrize("text, expected", [
    ("""
        [server]
        prot = 8000
        [[deployments]]
        name = "a"
        provider = "mock"
     """, "server.prot: unknown key"),
    ("""
        [[deployments]]
        name = "a"
        provider = "mock"
        max_concurrency = "lots"
     """, "deployments[0].max_concurrency: expected integer"),
    ("""
        [[deployments]]
        name = "a"
        provider = "mock"
        retry = { max_attempts = 0 }
     """, "deployments[0].retry.max_attempts: must be >= 1"),
    ("""
        [[deployments]]
        name = "a"
        provider = "mock"
        fallbacks = ["nowhere"]
     """, "deployments[0].fallbacks[0]: names no deployment: 'nowhere'"),
    ("""
        [[deployments]]
        name = "a"
        provider = "telepathy"
     """, "deployments[0].provider: must be one of"),
    ("""
        [[deployments]]
        name = "a"
        provider = "openai_compatible"
     """, "deployments[0].replicas: provider openai_compatible needs at least one replica"),
    ("""
        [[deployments]]
        name = "a"
        provider = "openai"
        [[deployments.replicas]]
        base_url = "ftp://x"
        credential = { value = "sk-do-not-print-me", env = "X" }
     """, "deployments[0].replicas[0].credential: exactly one of"),
    ("""
        [[deployments]]
        name = "a"
        provider = "mock"
        circuit_breaker = { open_s = 60, max_open_s = 10 }
     """, "deployments[0].circuit_breaker.max_open_s: must be >= open_s"),
    ("""
        [[deployments]]
        name = "a"
        provider = "openai_compatible"
        drop_params = true
        [[deployments.replicas]]
        base_url = "http://127.0.0.1:9/v1"
     """, "deployments[0].drop_params: provider openai_compatible takes every parameter"),
    *((f"""
        [[deployments]]
        name = "a"
        provider = "{provider}"
        count_tokens = "upstream"
        [[deployments.replicas]]
        base_url = "http://127.0.0.1:9/v1"
        credential = {{ value = "sk-do-not-print-me" }}
        api_version = "2024-06-01"
     """, f"deployments[0].count_tokens: provider {provider}'s API has no token count to ask")
      for provider in ("openai", "azure_openai")),
    ("""
        [[deployments]]
        name = "a"
        provider = "mock"
        count_tokens = "upstream"
     """, "deployments[0].count_tokens: provider mock's API has no token count to ask"),
    ("""
        [[deployments]]
        name = "a"
        provider = "mock"
        count_tokens = "yes"
     """, "deployments[0].count_tokens: must be one of"),
    # names go into headers (x-fastinfer-replica), metric labels and log lines
    ("""
        [[deployments]]
        name = "a"
        provider = "openai_compatible"
        [[deployments.replicas]]
        name = "r\\n1"
        base_url = "http://127.0.0.1:9/v1"
     """, "deployments[0].replicas[0].name: a replica name is printable text without control characters"),
    ("""
        [[deployments]]
        name = "a\\tb"
        provider = "mock"
     """, "deployments[0].name: a deployment name is printable text without control characters"),
    ("""
        [[keys]]
        name = ""
        key = { value = "sk-do-not-print-me" }
        [[deployments]]
        name = "a"
        provider = "mock"
     """, "keys[0].name: a key name is printable text without control characters"),
    # serve's shared segment keeps a bucket's refill in ns a token: faster than 1e9/s, it refused to start
    ("""
        [[keys]]
        name = "k"
        key = { value = "sk-do-not-print-me" }
        tpm = 1000000000000
        [[deployments]]
        name = "a"
        provider = "mock"
     """, "keys[0].tpm: must be <= 60000000000"),
    ("""
        [[deployments]]
        name = "a"
        provider = "mock"
        rate_limit = { rpm = 60000000001 }
     """, "deployments[0].rate_limit.rpm: must be <= 60000000000"),
    ("""
        [[deployments]]
        name = "a"
        provider = "mock"
        rate_limit = { rpm = 1, burst = 20000000 }
     """, "deployments[0].rate_limit.burst: at rpm = 1 a bucket of 20000000 takes more than 36 years to fill"),
    ("""
        [[deployments]]
        name = "a"
        provider = "mock"
        circuit_breaker = { max_open_s = inf }
     """, "deployments[0].circuit_breaker.max_open_s: must be a finite number, got inf"),
    ("""
        [[deployments]]
        name = "a"
        provider = "mock"
        queue_timeout_s = nan
     """, "deployments[0].queue_timeout_s: must be a finite number, got nan"),
    ("this is = = not toml", "not valid TOML"),
])
def test_bad_config_names_the_key_and_exits_2(workdir, text, expected):
    out = check_config(workdir, text)
    assert out.returncode == 2
    assert expected in out.stderr
    assert out.stderr.startswith(str(workdir))  # "file: key.path: what is wrong"
    assert "sk-do-not-print-me" not in out.stderr + out.stdout


def test_every_problem_of_a_replica_is_reported_at_once(workdir):
    out = check_config(workdir, """
        [[deployments]]
        name = "a"
        provider = "openai_compatible"
        [[deployments.replicas]]
        base_url = "http://127.0.0.1:99999/v1"
        weight = -3
     """)
    assert out.returncode == 2
    assert "deployments[0].replicas[0].weight: must be >= 1" in out.stderr
    assert "deployments[0].replicas[0].base_url: has a port that is not a number" in out.stderr
    assert out.stderr.count("base_url") == 1, out.stderr


def test_serve_refuses_a_bad_config_before_starting(workdir):
    path = write_config(workdir, '[[deployments]]\nname = "a"\nprovider = "mock"\nbogus = 1\n')
    out = subprocess.run([sys.executable, "-m", "fastinfer", "serve", "--config", str(path), "--port", "0"],
                         cwd=workdir, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "deployments[0].bogus: unknown key" in out.stderr
    assert "serving" not in out.stdout


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as exc:
        parse_config({"server": {"port": -1, "workers": "two"},
                      "deployments": [{"name": "a", "provider": "mock", "queue_timeout_s": -5}]})
    paths = [p.split(":")[0] for p in exc.value.problems]
    assert paths == ["server.port", "server.workers", "deployments[0].queue_timeout_s"]


def test_secret_repr_never_holds_the_value():
    cfg = parse_config({"deployments": [{"name": "a", "provider": "openai",
                                         "replicas": [{"credential": {"value": "sk-hidden"}}]}]})
    assert "sk-hidden" not in repr(cfg)
    assert cfg.deployments[0].replicas[0].credential.read() == "sk-hidden"


def test_yaml_config(workdir):
    path = workdir / "c.yaml"
    path.write_text("deployments:\n  - name: a\n    provider: mock\n    mock: {tokens: 3}\n")
    assert load_config(path).deployments[0].mock.tokens == 3


def test_enforced_settings_bring_no_warning_and_a_budget_without_state_dir_one(workdir):
    out = check_config(workdir, """
        [[keys]]
        name = "team-a"
        key_sha256 = "a3f1c2d4e5b6a7980f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3b2"
        rpm = 10
        budget = { usd = 5 }

        [[deployments]]
        name = "a"
        provider = "mock"
        routing = "sticky"
        rate_limit = { rpm = 10 }
    """)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stdout.splitlines() if line.startswith("warning: ")]
    # keys, rate limits and sticky routing are enforced: no warning; a budget that a restart forgets is one
    assert warnings == [
        "warning: keys[0].budget: server.state_dir is not set, so spend starts from zero at every restart",
    ]
    assert "warning" not in check_config(workdir, GOOD, env={"FI_TEST_OPENAI_KEY": "x"}).stdout


@pytest.mark.parametrize("base_url, problem", [
    ("ftp://x", "must start with http:// or https://"),
    ("http://h:99999/v1", "has a port that is not a number from 1 to 65535"),
    ("http://h:0/v1", "has a port that is not a number from 1 to 65535"),
    ("http://h:port/v1", "has a port that is not a number from 1 to 65535"),
    ("http:///v1", "has no host"),
    ("http://h/v 1", "must not contain spaces or control characters"),
    ("http://h/v1\t", "must not contain spaces or control characters"),
    ("http://h/v1?key=1", "must not have a query or fragment"),
])
def test_a_bad_base_url_exits_2_naming_the_key(workdir, base_url, problem):
    out = check_config(workdir, f"""
        [[deployments]]
        name = "a"
        provider = "openai_compatible"
        [[deployments.replicas]]
        base_url = "http://127.0.0.1:8001/v1"
        [[deployments.replicas]]
        base_url = {json.dumps(base_url)}
    """)
    assert out.returncode == 2
    assert f"deployments[0].replicas[1].base_url: {problem}" in out.stderr


def test_only_replicas_that_need_a_credential_are_warned_about(workdir, start_gateway):
    text = """
        [[deployments]]
        name = "local"
        provider = "openai_compatible"
        [[deployments.replicas]]
        base_url = "http://127.0.0.1:8001/v1"

        [[deployments]]
        name = "echo"
        provider = "mock"
    """
    out = check_config(workdir, text)
    assert out.returncode == 0 and "warning" not in out.stdout + out.stderr
    gw = start_gateway(text, workers=1)   # answering means its replicas' credentials were read
    assert http_json("GET", gw.base + "/healthz")[0] == 200
    assert "credential" not in gw.stderr_when_stopped()
    hosted = check_config(workdir, text + """
        [[deployments]]
        name = "claude"
        provider = "anthropic"
    """)
    assert hosted.returncode == 0
    assert ("warning: deployments[2].replicas[0].credential: none set; anthropic upstreams refuse requests "
            "without one") in hosted.stdout
