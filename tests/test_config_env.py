"""${VAR} and ${VAR:-default} in config strings."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from fastinfer.config import ConfigError, parse_config
from fastinfer.config.envvars import expand_env
from procs import write_config


def deployment(**fields) -> dict:
    return {"deployments": [{"name": "m", "provider": "openai_compatible",
                             "replicas": [{"base_url": "http://127.0.0.1:9000/v1"}], **fields}]}


def test_variables_fill_strings_anywhere_in_the_tree():
    raw = {
        "server": {"host": "${HOST}", "admin_key": {"env": "${KEY_VAR:-FASTINFER_ADMIN_KEY}"}},
        "deployments": [{
            "name": "${NAME}", "provider": "openai_compatible", "model": "${PREFIX}-${NAME}",
            "fallbacks": ["${OTHER:-spare}"],
            "replicas": [{"base_url": "http://${UPSTREAM_HOST}:${UPSTREAM_PORT:-9000}/v1",
                          "credential": {"value": "${TOKEN}"}}],
        }, {"name": "spare", "provider": "mock"}],
    }
    env = {"HOST": "0.0.0.0", "NAME": "gpt", "PREFIX": "org", "UPSTREAM_HOST": "10.1.2.3", "TOKEN": "sk-from-env"}
    cfg = parse_config(raw, environ=env)
    assert cfg.server.host == "0.0.0.0"
    assert cfg.server.admin_key.ref == "FASTINFER_ADMIN_KEY"
    d = cfg.deployments[0]
    assert (d.name, d.model, d.fallbacks) == ("gpt", "org-gpt", ["spare"])
    assert d.replicas[0].base_url == "http://10.1.2.3:9000/v1"
    assert d.replicas[0].credential.read() == "sk-from-env"


@pytest.mark.parametrize("text, env, expected", [
    ("${A:-x}", {}, "x"),
    ("${A:-x}", {"A": ""}, "x"),           # like the shell's :-, empty takes the default
    ("${A:-}", {}, ""),
    ("${A}", {"A": ""}, ""),               # set but empty, no default: empty
    ("a$${A}b", {"A": "no"}, "a${A}b"),    # $${ is a literal ${
    ("$A and $$ stay", {"A": "no"}, "$A and $$ stay"),
    ("${A:-with:colons/and-dashes}", {}, "with:colons/and-dashes"),
    ("${A}${B}", {"A": "1", "B": "2"}, "12"),
])
def test_expansion_rules(text, env, expected):
    value, problems = expand_env({"k": text}, env)
    assert problems == [] and value == {"k": expected}


def test_an_unset_variable_names_its_key_path():
    with pytest.raises(ConfigError) as e:
        parse_config(deployment(model="${FI_UNSET_MODEL}", fallbacks=["${FI_UNSET_FALLBACK}"]), environ={})
    assert "deployments[0].model: environment variable FI_UNSET_MODEL is not set" in e.value.problems[0]
    assert any(p.startswith("deployments[0].fallbacks[0]: environment variable FI_UNSET_FALLBACK")
               for p in e.value.problems)


@pytest.mark.parametrize("text", ["${", "${A", "${1A}", "${A-b}", "${A:b}"])
def test_a_malformed_reference_is_an_error(text):
    with pytest.raises(ConfigError) as e:
        parse_config(deployment(model=text), environ={"A": "x"})
    assert e.value.problems[0].startswith("deployments[0].model: malformed ${...} reference")


def test_only_strings_are_expanded_so_types_still_hold():
    with pytest.raises(ConfigError) as e:
        parse_config({"server": {"port": "${PORT}"}, **deployment()}, environ={"PORT": "8080"})
    assert "server.port: expected integer, got str '8080'" in e.value.problems[0]


def test_check_config_shows_expanded_values_and_never_the_secret(workdir):
    path = write_config(workdir, textwrap.dedent("""
        [[deployments]]
        name = "m"
        provider = "openai_compatible"
        model = "${FI_TEST_MODEL:-fallback-model}"

        [[deployments.replicas]]
        base_url = "http://${FI_TEST_UPSTREAM}/v1"
        credential = { value = "${FI_TEST_SECRET}" }
    """))

    def check_config(**env) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **env}
        return subprocess.run([sys.executable, "-m", "fastinfer", "check-config", str(path)], cwd=workdir,
                              capture_output=True, text=True, timeout=60, env=env)

    out = check_config(FI_TEST_UPSTREAM="127.0.0.1:9100", FI_TEST_SECRET="sk-very-secret-from-env")
    assert out.returncode == 0, out.stderr
    assert "model=fallback-model" in out.stdout
    assert "replica r0: http://127.0.0.1:9100/v1 credential=value:****" in out.stdout
    assert "sk-very-secret-from-env" not in out.stdout + out.stderr

    out = check_config(FI_TEST_SECRET="sk-very-secret-from-env")
    assert out.returncode == 2
    assert (f"{path}: deployments[0].replicas[0].base_url: environment variable FI_TEST_UPSTREAM is not set"
            in out.stderr)
    assert "sk-very-secret-from-env" not in out.stdout + out.stderr
