"""serve's flags are checked like the config: a clear line and exit 2, never a traceback; --version."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

import fastinfer
from procs import write_config


def fastinfer_cli(workdir, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastinfer", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())


def refused(out: subprocess.CompletedProcess) -> str:
    """The one clear complaint of a refused start: exit 2, no traceback, nothing served."""
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert "serving on" not in out.stdout
    return out.stderr


def test_version(workdir):
    out = fastinfer_cli(workdir, "--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"fastinfer {fastinfer.__version__}"


@pytest.mark.parametrize("args, expected", [
    (["--port", "70000"], "command line: --port: must be <= 65535, got 70000"),
    (["--port", "-1"], "command line: --port: must be >= 0, got -1"),
    (["--port", "http"], "argument --port: invalid int value: 'http'"),
    (["--workers", "-1"], "command line: --workers: must be >= 0, got -1"),
    (["--workers", "100000"], "command line: --workers: must be <= 512, got 100000"),
    (["--host", "not a host"], "command line: --host: expected an IP address or a host name to listen on"),
    (["--host", "http://127.0.0.1"], "command line: --host: expected an IP address or a host name"),
    (["--host", ""], "command line: --host: expected an IP address or a host name"),
    (["--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
])
def test_bad_flags_are_refused_before_anything_starts(workdir, args, expected):
    assert expected in refused(fastinfer_cli(workdir, "serve", *args))


def test_every_bad_flag_is_named_at_once(workdir):
    err = refused(fastinfer_cli(workdir, "serve", "--port", "99999", "--workers", "-1"))
    assert "--port" in err and "--workers" in err


def test_a_busy_port_is_a_clear_error(workdir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = refused(fastinfer_cli(workdir, "serve", "--port", str(port), "--workers", "1"))
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err


def test_a_busy_admin_port_is_a_clear_error(workdir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(workdir, textwrap.dedent(f"""
            [server]
            admin_port = {port}
            [[deployments]]
            name = "echo"
            provider = "mock"
        """))
        err = refused(fastinfer_cli(workdir, "serve", "--config", str(config), "--port", "0", "--workers", "1"))
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err


def test_an_address_this_host_does_not_have_is_a_clear_error(workdir):
    # 192.0.2.0/24 is TEST-NET-1: never assigned to a local interface; binding fails without traffic
    err = refused(fastinfer_cli(workdir, "serve", "--host", "192.0.2.1", "--port", "0", "--workers", "1"))
    assert "cannot listen on 192.0.2.1:0: Cannot assign requested address" in err


def test_a_bad_host_in_the_config_names_its_key(workdir):
    config = write_config(workdir, textwrap.dedent("""
        [server]
        host = "127.0.0.1:8000"
        [[deployments]]
        name = "echo"
        provider = "mock"
    """))
    err = refused(fastinfer_cli(workdir, "serve", "--config", str(config)))
    assert "server.host: expected an IP address or a host name to listen on, got '127.0.0.1:8000'" in err


@pytest.mark.parametrize("server, expected", [
    ("port = 8123\nadmin_port = 8123", "server.admin_port: must differ from server.port"),
    ('admin_host = "::1"', "server.admin_host: needs server.admin_port"),
])
def test_the_admin_listener_needs_its_own_port(workdir, server, expected):
    config = write_config(workdir, "[server]\n" + server + textwrap.dedent("""
        [[deployments]]
        name = "echo"
        provider = "mock"
    """))
    assert expected in refused(fastinfer_cli(workdir, "check-config", str(config)))


@pytest.mark.parametrize("keys, expected", [
    ('[[keys]]\nname = "a"\nkey = { env = "FASTINFER_TEST_UNSET_KEY_VAR" }',
     "keys[0].key: environment variable FASTINFER_TEST_UNSET_KEY_VAR is not set"),
    ('[[keys]]\nname = "a"\nkey = { value = "sk-same" }\n[[keys]]\nname = "b"\nkey = { value = "sk-same" }',
     "keys[1].key: the same key as key 'a'"),
])
def test_check_config_refuses_the_keys_serve_refuses(workdir, keys, expected):
    """check-config is the gate before a deploy: a key serve could not read (or two keys that are
    one) is exit 2 there too, named by its path."""
    config = write_config(workdir, keys + textwrap.dedent("""
        [[deployments]]
        name = "echo"
        provider = "mock"
    """))
    for command in (("check-config", str(config)), ("serve", "--port", "0", "--config", str(config))):
        err = refused(fastinfer_cli(workdir, *command))
        assert expected in err, (command, err)
        assert "sk-same" not in err


@pytest.mark.parametrize("redis_url", ["redis://127.0.0.1:6379/0?password=QPW-SECRET-7f3a9c",
                                       "unix:///tmp/r.sock?db=0&password=QPW-SECRET-7f3a9c",
                                       "redis://default:QPW-SECRET-7f3a9c@127.0.0.1:6379/0"])
def test_check_config_masks_a_redis_password_wherever_the_url_carries_it(workdir, redis_url):
    out = _check_cluster_config(workdir, redis_url)
    assert out.returncode == 0, out.stderr
    assert "QPW-SECRET" not in out.stdout + out.stderr
    assert "cluster: node a via " in out.stdout and "****" in out.stdout, out.stdout


@pytest.mark.parametrize("password", ["SECRET/PW-77", "SE#CRET-77", "SE?CRET-77"])
def test_a_redis_password_urlsplit_cannot_read_is_masked_by_check_config(workdir, password):
    """An unencoded "/", "#" or "?" in the password: the URL is refused (redis-py could not read it
    either), and the refusal does not print the password."""
    out = _check_cluster_config(workdir, f"redis://:{password}@127.0.0.1:6379/0")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "cluster.redis_url" in out.stderr and "redis://:****@127.0.0.1:6379/0" in out.stderr
    assert password[-5:] not in out.stdout + out.stderr


def _check_cluster_config(workdir, redis_url: str):
    config = write_config(workdir, textwrap.dedent(f"""
        [cluster]
        redis_url = "{redis_url}"
        node_id = "a"

        [[deployments]]
        name = "echo"
        provider = "mock"
    """))
    return fastinfer_cli(workdir, "check-config", str(config))


def test_check_config_shows_the_admin_listener_and_the_one_time_token_default(workdir):
    config = write_config(workdir, textwrap.dedent("""
        [server]
        admin_port = 8101
        [[deployments]]
        name = "echo"
        provider = "mock"
    """))
    out = fastinfer_cli(workdir, "check-config", str(config))
    assert out.returncode == 0, out.stderr
    assert "admin_key=unset (serve prints a one-time token)" in out.stdout
    assert "admin listener: 127.0.0.1:8101 (admin API, dashboard and metrics; not on the public listener)" in out.stdout
