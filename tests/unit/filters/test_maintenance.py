"""The hourly maintenance task (issue 9): app.py wires greylist and Sieve-log pruning into it,
it runs them periodically (a short injected interval here) against a real SQLite store, a
failing job is retried without stopping the others, and stop() ends it promptly."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from mailstead import app
from mailstead.config import Config
from mailstead.config.model import HostPort, ListenConfig, SieveConfig, SpamConfig, TLSConfig
from mailstead.dns.resolver import DnsPythonResolver
from mailstead.filters.greylist import LIFETIME
from mailstead.maintenance import SIEVE_EVENT_RETENTION, Job, Maintenance, web_sessions_job
from mailstead.storage import open_store
from mailstead.web.sessions import ABSOLUTE_TIMEOUT, IDLE_TIMEOUT
from storebackends import BACKENDS, open_backend


def _config(tmp: Path, *, greylisting: bool, sieve: bool = True) -> Config:
    return Config(hostname="mail.example.test", data_dir=tmp, config_path=tmp / "m.toml",
                  listen=ListenConfig(), tls=TLSConfig(cert=tmp / "c.pem", key=tmp / "k.pem"),
                  spam=SpamConfig(greylisting=greylisting), sieve=SieveConfig(enable=sieve))


@pytest.mark.parametrize("backend", BACKENDS)
def test_server_prunes_greylist_and_sieve_log_periodically(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        store = await open_backend(backend, tmp_path)
        try:
            config = _config(tmp_path, greylisting=True)
            jobs: list[Job] = []
            app._filters(config, store, DnsPythonResolver([("127.0.0.1", 1)]), jobs)
            assert [j.name for j in jobs] == ["greylist"]
            maintenance = app._maintenance(config, store, jobs, interval=0.05, first_delay=0)
            # A store shared by nodes keeps failed logins too, and prunes them.
            shared = ["auth_failures"] if store.networked else []
            assert [j.name for j in maintenance.jobs] == ["sieve_events", *shared, "greylist"]
            await store.add_domain("example.test")
            account = await store.add_account("alice@example.test", "x")
            now = time.time()
            old = now - max(LIFETIME, SIEVE_EVENT_RETENTION) - 60
            await store.greylist_touch("old-triplet", old)
            await store.greylist_touch("fresh-triplet", now)
            await store.add_sieve_event(account.id, "vacation", "old", old)
            await store.add_sieve_event(account.id, "vacation", "fresh", now)
            await maintenance.start()
            try:
                deadline = time.monotonic() + 10
                while maintenance.rounds < 3 and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
            finally:
                await maintenance.stop()
            assert maintenance.rounds >= 3  # periodic, not once
            # The stale rows are gone, the fresh ones stay.
            assert await store.count_sieve_events(account.id, "vacation", "old", 0) == 0
            assert await store.count_sieve_events(account.id, "vacation", "fresh", 0) == 1
            assert await store.greylist_touch("fresh-triplet", now) == (now, False)
            first, _ = await store.greylist_touch("old-triplet", now + 1)
            assert first == now + 1  # forgotten, so seen anew
        finally:
            await store.close()

    asyncio.run(main())


def test_no_greylist_job_without_greylisting_and_none_without_sieve(tmp_path: Path) -> None:
    async def main() -> None:
        store = await open_store(tmp_path)
        try:
            config = _config(tmp_path, greylisting=False, sieve=False)
            jobs: list[Job] = []
            app._filters(config, store, DnsPythonResolver([("127.0.0.1", 1)]), jobs)
            assert jobs == []
            maintenance = app._maintenance(config, store, jobs)
            assert maintenance.jobs == ()
            await maintenance.start()  # nothing to do: no task at all
            await maintenance.stop()
            assert maintenance.rounds == 0
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_web_node_prunes_expired_web_sessions(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        store = await open_backend(backend, tmp_path)
        try:
            config = _config(tmp_path, greylisting=False, sieve=False)
            web = dataclasses.replace(config, listen=ListenConfig(https=HostPort("127.0.0.1", 443)))
            assert [j.name for j in app._maintenance(config, store, []).jobs] == (
                ["auth_failures"] if store.networked else [])
            assert "web_sessions" in [j.name for j in app._maintenance(web, store, []).jobs]
            await store.add_domain("example.test")
            account = await store.add_account("alice@example.test", "x")
            now = 1_700_000_000.0
            await store.put_web_session("idle", None, "{}", now - 100, now - IDLE_TIMEOUT - 1)
            await store.put_web_session("old", account.id, "{}", now - ABSOLUTE_TIMEOUT - 1,
                                        now)
            await store.put_web_session("live", account.id, "{}", now - 100, now - 10)
            job = web_sessions_job(store, lambda: now)
            assert await job.run() == 2
            assert await store.get_web_session("live") is not None
            assert await store.count_web_sessions() == (0, 1)
        finally:
            await store.close()

    asyncio.run(main())


def test_failing_job_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    async def broken() -> int:
        calls.append("broken")
        raise OSError("disk full")

    async def fine() -> int:
        calls.append("fine")
        return 2

    async def main() -> None:
        m = Maintenance([Job("broken", broken), Job("fine", fine)], interval=0.02,
                        first_delay=0)
        assert await m.run_once() == {"broken": None, "fine": 2}
        await m.start()
        deadline = time.monotonic() + 10
        while m.rounds < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await m.stop()
        assert time.monotonic() - started < 1.0
        settled = len(calls)
        await asyncio.sleep(0.1)
        assert len(calls) == settled  # stopped for good

    asyncio.run(main())
    assert calls.count("broken") >= 3
    assert calls.count("fine") == calls.count("broken")
    assert "maintenance job broken failed" in caplog.text


def test_stop_cancels_a_job_that_overruns_the_grace() -> None:
    cancelled: list[bool] = []

    async def slow() -> int:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return 0

    async def main() -> None:
        m = Maintenance([Job("slow", slow)], interval=1, first_delay=0)
        await m.start()
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await m.stop(grace=0.1)
        assert time.monotonic() - started < 2

    asyncio.run(main())
    assert cancelled == [True]
    with pytest.raises(ValueError, match="interval"):
        Maintenance([], interval=0)
