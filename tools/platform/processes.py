"""The runner's children, grouped in tiers that stop in reverse start order.

Every child is a `ManagedProcess` (own process group, so a terminal Ctrl-C reaches only the
runner, which then stops children in order; `PR_SET_PDEATHSIG`, so a killed runner leaves no
orphans). Within a tier, children stop concurrently: a tier of twenty services drains in one
grace period instead of twenty.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from suuupra_runtime.infra import ManagedProcess


@dataclass(frozen=True)
class Child:
    """Something the runner started and must stop: a process or an embedded server."""

    name: str
    log_path: Path
    pid: Callable[[], int | None]
    alive: Callable[[], bool]
    stop: Callable[[], None]

    @classmethod
    def of_process(cls, name: str, process: ManagedProcess) -> Child:
        return cls(
            name=name,
            log_path=process.log_path,
            pid=lambda: process.pid,
            alive=lambda: process.alive,
            stop=process.stop,
        )


def start_process(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    stop_timeout: float = 10.0,
) -> Child:
    """Start `argv` with output to `log_path` (appended, with a header line per start).

    Must run on the main thread: the kernel ties PR_SET_PDEATHSIG to the forking thread.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(
            f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}: {' '.join(argv)}\n"
        )
    process = ManagedProcess(argv, log_path=log_path, env=env)
    process.start()
    child = Child.of_process(name, process)
    return Child(
        name=child.name,
        log_path=child.log_path,
        pid=child.pid,
        alive=child.alive,
        stop=lambda: process.stop(stop_timeout),
    )


@dataclass
class Supervisor:
    tiers: list[list[Child]] = field(default_factory=list)

    def new_tier(self) -> None:
        self.tiers.append([])

    def add(self, child: Child) -> Child:
        if not self.tiers:
            self.new_tier()
        self.tiers[-1].append(child)
        return child

    def children(self) -> list[Child]:
        return [child for tier in self.tiers for child in tier]

    def pids(self) -> dict[str, int]:
        return {c.name: pid for c in self.children() if (pid := c.pid()) is not None}

    def dead(self) -> list[Child]:
        return [c for c in self.children() if not c.alive()]

    def kill_all(self) -> None:
        """SIGKILL every running child at once (the graceful stop is taking too long)."""
        for child in self.children():
            pid = child.pid()
            if pid is not None and child.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    async def stop_all(self, report: Callable[[str], None] = lambda _: None) -> None:
        """Stop tier by tier, newest first (edge, services, broker, database)."""
        while self.tiers:
            tier = self.tiers.pop()
            running = [c for c in tier if c.alive()]
            if not running:
                continue
            report("stopping " + ", ".join(c.name for c in running))
            # stop() blocks (signal, wait, kill); it forks nothing, so threads are fine here.
            await asyncio.gather(*(asyncio.to_thread(c.stop) for c in running))
