"""Credential sources: real files rotated in place and by rename, a real helper command with a TTL, env."""
from __future__ import annotations

import asyncio
import logging
import os
import stat
import textwrap

import pytest
import uvloop

from fastinfer.config.secrets import Secret
from fastinfer.session import credentials as creds_mod
from fastinfer.session.credentials import (CommandSource, EnvSource, FileSource, NoCredential, ValueSource,
                                           credential_source, open_credential_source)


def run(coro, loop="uvloop"):
    """Run on the loop the workers use (uvloop), or the stdlib one."""
    return uvloop.run(coro) if loop == "uvloop" else asyncio.run(coro)


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def write_atomic(path, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@pytest.fixture
def helper(tmp_path):
    """A credential helper: counts its runs in a file and prints ``key-<n>``.

    With the file ``fail`` present it prints a secret on stderr and exits 3;
    with ``slow`` present it sleeps that many seconds first.
    """
    script = tmp_path / "helper.sh"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        d={tmp_path}
        echo $$ > "$d/pid"
        if [ -f "$d/slow" ]; then sleep "$(cat "$d/slow")"; fi
        if [ -f "$d/fail" ]; then echo "sk-LEAKED-IN-STDERR" >&2; exit 3; fi
        n=$(cat "$d/count" 2>/dev/null || echo 0)
        n=$((n+1))
        echo $n > "$d/count.new" && mv "$d/count.new" "$d/count"   # atomic: the test reads it meanwhile
        echo "key-$n"
        """))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)

    class Helper:
        path = str(script)

        @staticmethod
        def count() -> int:
            try:
                return int((tmp_path / "count").read_text())
            except FileNotFoundError:
                return 0

        @staticmethod
        def fail(on: bool = True) -> None:
            (tmp_path / "fail").write_text("") if on else (tmp_path / "fail").unlink()

        @staticmethod
        def pid() -> int:
            return int((tmp_path / "pid").read_text())

        @staticmethod
        def slow(seconds: float) -> None:
            (tmp_path / "slow").write_text(str(seconds))

    return Helper


# ------------------------------------------------------------------ value / env / none

def test_value_source_is_fixed_and_masked():
    async def main():
        src = await open_credential_source(Secret("value", "sk-very-secret"), name="r0")
        assert isinstance(src, ValueSource)
        assert src.current() == "sk-very-secret" and src.version == 1
        assert await src.refresh("admin", force=True) is False
        assert src.version == 1
        for text in (repr(src), str(src), src.describe(), src.fingerprint):
            assert "sk-very-secret" not in text
        assert src.fingerprint.startswith("sha256:")
    run(main())


def test_no_credential():
    async def main():
        src = await open_credential_source(None)
        assert isinstance(src, NoCredential) and src.current() is None and src.fingerprint is None
    run(main())


def test_env_source_rotates_on_refresh(monkeypatch):
    monkeypatch.setenv("FI_TEST_KEY", "env-one")

    async def main():
        src = await open_credential_source(Secret("env", "FI_TEST_KEY"))
        assert isinstance(src, EnvSource) and src.current() == "env-one"
        monkeypatch.setenv("FI_TEST_KEY", "env-two")
        assert src.current() == "env-one"          # the hot path does not touch os.environ
        assert await src.refresh("upstream_401") is True
        assert src.current() == "env-two" and src.version == 2
        assert await src.refresh("upstream_401") is False
        monkeypatch.delenv("FI_TEST_KEY")
        assert await src.refresh("upstream_401") is False
        assert src.current() == "env-two"          # last good value kept
        assert "FI_TEST_KEY" in src.last_error and "env-two" not in src.last_error
    run(main())


def test_env_unset_at_start_starts_anyway(monkeypatch, caplog):
    monkeypatch.delenv("FI_TEST_MISSING", raising=False)

    async def main():
        with caplog.at_level(logging.WARNING, logger="fastinfer.session"):
            src = await open_credential_source(Secret("env", "FI_TEST_MISSING"), name="r1")
        assert src.current() is None and src.version == 0
        assert "FI_TEST_MISSING" in caplog.text
        monkeypatch.setenv("FI_TEST_MISSING", "late")
        assert await src.refresh("admin") is True and src.current() == "late"
    run(main())


# ------------------------------------------------------------------ file

def test_file_rotation_is_picked_up_after_the_check_interval(tmp_path, monkeypatch):
    path = tmp_path / "key"
    path.write_text("file-one\n")
    clock = FakeClock()

    async def main():
        src = await open_credential_source(Secret("file", str(path)), clock=clock, check_interval_s=0.5)
        assert isinstance(src, FileSource) and src.current() == "file-one"

        stats = []
        real_stat = os.stat
        monkeypatch.setattr(creds_mod.os, "stat", lambda p, *a, **k: stats.append(p) or real_stat(p, *a, **k))

        write_atomic(path, "file-two\n")           # rename into place: new inode
        for _ in range(1000):
            assert src.current() == "file-one"     # within the interval: no stat per request
        assert len(stats) <= 1
        clock.advance(0.5)
        assert src.current() == "file-two" and src.version == 2
        n = len(stats)
        for _ in range(1000):
            src.current()
        assert len(stats) == n                     # and none until the next interval

        clock.advance(0.5)
        with open(path, "w") as f:                 # rewritten in place: same inode, new size/mtime
            f.write("file-three-longer")
        clock.advance(0.5)
        assert src.current() == "file-three-longer" and src.version == 3
    run(main())


def test_file_missing_or_empty_mid_rotation_keeps_the_last_good_value(tmp_path):
    path = tmp_path / "key"
    path.write_text("good")
    clock = FakeClock()

    async def main():
        src = await open_credential_source(Secret("file", str(path)), clock=clock)
        path.unlink()
        clock.advance(1)
        assert src.current() == "good" and "cannot stat" in src.last_error
        path.write_text("")
        clock.advance(1)
        assert src.current() == "good" and "empty" in src.last_error
        path.write_text("new")
        clock.advance(1)
        assert src.current() == "new" and src.last_error is None and src.version == 2
    run(main())


def test_file_kubernetes_style_symlink_swap(tmp_path):
    # /etc/secret/key -> ..data/key, ..data -> ..2024_01 (swapped atomically by the kubelet)
    for gen, value in (("..gen1", "k8s-one"), ("..gen2", "k8s-two")):
        (tmp_path / gen).mkdir()
        (tmp_path / gen / "key").write_text(value)
    os.symlink("..gen1", tmp_path / "..data")
    os.symlink("..data/key", tmp_path / "key")
    clock = FakeClock()

    async def main():
        src = await open_credential_source(Secret("file", str(tmp_path / "key")), clock=clock)
        assert src.current() == "k8s-one"
        os.symlink("..gen2", tmp_path / "..data_tmp")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        clock.advance(0.5)
        assert src.current() == "k8s-two"
    run(main())


def test_file_refresh_reads_now_and_subscribers_hear_of_it(tmp_path):
    path = tmp_path / "key"
    path.write_text("a")
    seen = []

    async def main():
        src = await open_credential_source(Secret("file", str(path)), clock=FakeClock())
        src.subscribe(lambda s, cause: seen.append((s.version, s.current(), cause)))
        write_atomic(path, "b")
        assert await src.refresh("upstream_401") is True     # no wait for the check interval
        assert src.current() == "b"
        assert await src.refresh("upstream_401") is False
        assert seen == [(2, "b", "upstream_401")]
    run(main())


# ------------------------------------------------------------------ command

def test_command_ttl_is_respected(helper):
    clock = FakeClock()

    async def main():
        src = await open_credential_source(Secret("command", (helper.path,), ttl_s=300), clock=clock,
                                           background=False)
        assert isinstance(src, CommandSource)
        assert src.current() == "key-1" and helper.count() == 1
        for _ in range(1000):
            assert src.current() == "key-1"
        clock.advance(299)
        src.current()
        await asyncio.sleep(0.05)
        assert helper.count() == 1                 # still within the TTL: never re-run
        clock.advance(2)
        assert src.current() == "key-1"            # expired: served stale, refresh scheduled, no blocking
        for _ in range(100):
            src.current()                          # and scheduled once, not per call
        for _ in range(200):
            if src.current() == "key-2":
                break
            await asyncio.sleep(0.01)
        assert src.current() == "key-2" and helper.count() == 2 and src.runs == 2
        assert src.expires_at == clock() + 300
    run(main())


def test_command_refreshes_in_the_background_before_expiry(helper):
    async def main():
        src = await open_credential_source(Secret("command", (helper.path,), ttl_s=0.3))
        try:
            for _ in range(1000):                  # generous: 10 s for 3 runs of a 0.3 s TTL
                if helper.count() >= 3:
                    break
                await asyncio.sleep(0.01)
            assert helper.count() >= 3
            await asyncio.sleep(0.05)
            assert src.current() == f"key-{helper.count()}"
        finally:
            await src.close()
        n = helper.count()
        await asyncio.sleep(0.5)
        assert helper.count() == n                 # closed: no more runs
    run(main())


def test_command_ttl_zero_runs_only_on_refresh(helper):
    clock = FakeClock()

    async def main():
        src = await open_credential_source(Secret("command", (helper.path,), ttl_s=0), clock=clock,
                                           min_refresh_interval_s=0)
        clock.advance(10 ** 6)
        src.current()
        await asyncio.sleep(0.05)
        assert helper.count() == 1
        assert await src.refresh("admin") is True and src.current() == "key-2"
        await src.close()
    run(main())


def test_concurrent_refreshes_share_one_run_and_are_rate_limited(helper):
    clock = FakeClock()

    async def main():
        src = await open_credential_source(Secret("command", (helper.path,), ttl_s=300), clock=clock,
                                           background=False, min_refresh_interval_s=1.0)
        seen = src.version
        # within the minimum interval of the start: not re-run, unless forced
        assert await src.refresh("upstream_401") is False and helper.count() == 1
        clock.advance(1.0)
        results = await asyncio.gather(*(src.refresh("upstream_401") for _ in range(20)))
        assert results == [True] * 20 and helper.count() == 2
        # a request that used the old version learns the value moved on, with no new run
        assert await src.refresh("upstream_401", seen_version=seen) is True and helper.count() == 2
        assert await src.refresh("admin", force=True) is True and helper.count() == 3
    run(main())


def test_command_failure_keeps_the_value_and_leaks_nothing(helper, caplog):
    clock = FakeClock()

    async def main():
        src = await open_credential_source(Secret("command", (helper.path,), ttl_s=300), clock=clock,
                                           background=False, min_refresh_interval_s=0)
        helper.fail()
        with caplog.at_level(logging.DEBUG, logger="fastinfer.session"):
            assert await src.refresh("upstream_401") is False
        assert src.current() == "key-1"
        assert "exited with status 3" in src.last_error
        assert "LEAKED" not in src.last_error and "LEAKED" not in caplog.text
        assert "key-1" not in caplog.text
        helper.fail(False)
        assert await src.refresh("upstream_401") is True and src.last_error is None
    run(main())


def test_command_never_blocks_the_loop_and_times_out(helper):
    helper.slow(0.4)
    ticks = []

    async def ticker():
        while True:
            ticks.append(1)
            await asyncio.sleep(0.01)

    async def main():
        t = asyncio.get_running_loop().create_task(ticker())
        src = await open_credential_source(Secret("command", (helper.path,), ttl_s=300), background=False)
        assert src.current() == "key-1"
        assert len(ticks) >= 5                     # the loop kept running while the helper slept
        helper.slow(30)
        slow = credential_source(Secret("command", (helper.path,), ttl_s=300), background=False, timeout_s=0.3)
        await slow.start()
        assert slow.current() is None and "timed out" in slow.last_error
        # the helper and its own child (the sleep) are gone: it ran in its own process group
        for _ in range(500):
            try:
                os.killpg(helper.pid(), 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the timed-out helper's process group is still alive")
        t.cancel()
    run(main())


def test_command_missing_binary(tmp_path):
    async def main():
        src = await open_credential_source(Secret("command", (str(tmp_path / "nope"),), ttl_s=5),
                                           background=False)
        assert src.current() is None and "cannot start" in src.last_error
    run(main())


def test_command_under_the_stdlib_loop(helper):
    async def main():
        src = await open_credential_source(Secret("command", (helper.path,), ttl_s=300), background=False)
        assert src.current() == "key-1"
    run(main(), loop="asyncio")
