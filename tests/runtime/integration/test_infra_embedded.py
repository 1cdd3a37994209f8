"""Embedded PostgreSQL and NATS start, serve, and leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from suuupra_runtime.infra import EmbeddedNats, EmbeddedPostgres, free_port
from suuupra_runtime.infra.process import ManagedProcess
from suuupra_runtime.testing.postgres import create_database, drop_database

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def server_dir() -> Iterator[Path]:
    # Own temp dir: concurrent pytest runs prune each other's basetemp (see fixtures.py).
    with tempfile.TemporaryDirectory(prefix="suuupra-test-infra-") as directory:
        yield Path(directory)


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


async def _scalar(url: str, sql: str) -> object:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar()
    finally:
        await engine.dispose()


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


async def test_embedded_postgres_serves_on_loopback_and_stops_cleanly(server_dir: Path) -> None:
    server = EmbeddedPostgres(server_dir / "pg", free_port())
    with server:
        pid = server.pid
        assert pid is not None and _pid_alive(pid)
        if os.geteuid() == 0:
            assert _uid_of(pid) != 0, "postgres must not run as root"
        assert await _scalar(server.url, "SHOW listen_addresses") == "127.0.0.1"
        assert await _scalar(server.url, "SHOW fsync") == "off"
    assert _wait_gone(pid, 1.0), "postmaster still running after stop()"
    # A second start reuses the initialised cluster.
    with server:
        assert await _scalar(server.url, "SELECT 1") == 1


async def test_embedded_nats_has_jetstream_and_stops_cleanly(server_dir: Path) -> None:
    server = EmbeddedNats(server_dir / "js", free_port(), free_port())
    with server:
        pid = server.pid
        assert pid is not None and _pid_alive(pid)
        nc = await nats.connect(server.url)
        try:
            info = await nc.jetstream().account_info()
            assert info.streams == 0
        finally:
            await nc.close()
    assert _wait_gone(pid, 1.0), "nats-server still running after stop()"


def test_servers_die_with_a_killed_parent(server_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from suuupra_runtime.infra import EmbeddedNats, EmbeddedPostgres, free_port
        base = Path({str(server_dir)!r})
        pg = EmbeddedPostgres(base / "pg", free_port()).start()
        js = EmbeddedNats(base / "js", free_port(), free_port()).start()
        print(pg.pid, js.pid, flush=True)
        time.sleep(120)
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}"}
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True
    )
    pids: list[int] = []
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        pg_pid, nats_pid = pids
        assert _pid_alive(pg_pid) and _pid_alive(nats_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _wait_gone(pg_pid), "postgres outlived its killed parent"
        assert _wait_gone(nats_pid), "nats-server outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in pids:  # never leave a server behind, even when the assertion failed
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


async def test_fresh_database_helpers_create_and_drop(postgres_server_url: str) -> None:
    url = await create_database(postgres_server_url, prefix="helper")
    assert await _scalar(url, "SELECT current_database()") == url.rsplit("/", 1)[1]
    await drop_database(url)
    with pytest.raises(DBAPIError, match="does not exist"):
        await _scalar(url, "SELECT 1")


async def test_fresh_database_fixture_is_empty_and_writable(fresh_database: str) -> None:
    tables = await _scalar(
        fresh_database,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    assert tables == 0


_forks_in_this_process: list[int] = []
os.register_at_fork(before=lambda: _forks_in_this_process.append(1))


def test_starting_a_server_runs_no_fork_handlers_in_this_process(tmp_path: Path) -> None:
    # A fork() of a process with gRPC's threads runs gRPC's fork handlers, which deadlocked a
    # test run (hung in Popen starting NATS). ManagedProcess spawns through become.py with
    # vfork + exec instead, which runs no fork handler, Python's or gRPC's.
    before = len(_forks_in_this_process)
    server = ManagedProcess(["sleep", "30"], log_path=tmp_path / "sleep.log")
    server.start()
    try:
        assert server.alive
        assert len(_forks_in_this_process) == before
        # The trampoline puts the server in its own process group, as the preexec_fn did.
        pid = server.pid
        assert pid is not None
        deadline = time.monotonic() + 10
        while os.getpgid(pid) != pid and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.getpgid(pid) == pid
    finally:
        server.stop(timeout=5)
    assert not server.alive
