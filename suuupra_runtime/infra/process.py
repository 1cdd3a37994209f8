"""Child server processes that never outlive the Python process that started them.

Public API: `ManagedProcess(argv, log_path=..., run_as=None, stop_signal=..., death_signal=...,
env=None, cwd=None)`
with `start()`, `stop(timeout)`, `pid`, `alive`; `system_user(name)` (create a non-root system
user if missing); `ensure_traversable(path)`.

Three layers make sure no server is left behind:
1. `stop()`: the server's graceful stop signal, then SIGKILL after a timeout.
2. `atexit`: every still-running child is stopped when the interpreter exits normally.
3. Linux `PR_SET_PDEATHSIG`: the kernel signals the child when its parent dies, even by SIGKILL.
   The signal follows the *thread* that forked the child, so start servers from a long-lived
   thread (the main thread, as pytest fixtures and the dev runner do), not from a pool thread
   that might exit.

The process group, the user switch and the death signal are set by `become.py`, a fresh
interpreter that then execs the server, never by a `preexec_fn` in a fork of this process
(which would run gRPC's fork handlers; see become.py).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["EmbeddedServer", "ManagedProcess", "ensure_traversable", "system_user"]

_PR_SET_PDEATHSIG = 1
# Strong references: a running server must be stopped at exit even if its owner was dropped.
_live: set[ManagedProcess] = set()
_user_lock = threading.Lock()


_BECOME = Path(__file__).with_name("become.py")


def _become_argv(
    argv: Sequence[str], death_signal: int, run_as: pwd.struct_passwd | None
) -> list[str]:
    """`argv` behind the `become.py` trampoline (group, user, death signal; see its docstring)."""
    user = run_as.pw_name if run_as is not None else "-"
    return [
        sys.executable, "-I", "-S", str(_BECOME),
        str(int(death_signal)), str(os.getpid()), user, "--", *argv,
    ]  # fmt: skip


class ManagedProcess:
    """One server process with a log file, a graceful stop and a kernel-enforced death pact."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        run_as: pwd.struct_passwd | None = None,
        stop_signal: int = signal.SIGTERM,
        death_signal: int = signal.SIGTERM,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.log_path = log_path
        self.run_as = run_as
        self.stop_signal = stop_signal
        self.death_signal = death_signal
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self) -> None:
        if self.alive:
            return
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                _become_argv(self.argv, self.death_signal, self.run_as),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd or "/",
                close_fds=True,
            )
        _live.add(self)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop signal, wait up to `timeout`, then SIGKILL. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self.stop_signal)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        _live.discard(self)

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-max_bytes:].decode(errors="replace")


class EmbeddedServer:
    """What every embedded server shares: its `ManagedProcess`, `pid`, `running`, and use as a
    context manager (`start()` on enter, `stop()` on exit). Subclasses implement both."""

    _process: ManagedProcess | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.alive

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@atexit.register
def _stop_all_children() -> None:
    for child in list(_live):
        child.stop(timeout=5)


def system_user(name: str) -> pwd.struct_passwd:
    """The passwd entry of system user `name`, created (no home, no login shell) if missing.

    Needs root. Concurrent callers (several test processes) may race on `useradd`; the loser's
    failure is fine as long as the user exists afterwards.
    """
    with _user_lock:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", "--user-group", name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise RuntimeError(f"could not create system user {name}: {result.stderr}") from None


def ensure_traversable(path: Path) -> None:
    """Let other users search (o+x, not list) every directory above `path`.

    A server running as a dedicated user must reach its data directory, which often sits under a
    root-only directory such as /tmp/pytest-of-root.
    """
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
