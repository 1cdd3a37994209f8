"""Keep grpc.aio's completion-queue poller thread from preempting the event loop.

grpc.aio (its default POLLER engine) runs one native thread per process that waits on gRPC
core's completion queue and hands each event to the asyncio loop. On a busy core every event
wakes that thread, and Linux's wakeup preemption switches the core to it in the middle of the
loop's work: about four involuntary context switches of the event loop per unary RPC (read
from /proc/<pid>/task/*/status), each one evicting the interpreter's working set, which is
why the same Python code costs several times more per RPC in a loaded server than in a loop.

SCHED_BATCH keeps the thread's fair share of CPU (and its nice value) but drops wakeup
preemption: its events are picked up when the loop blocks in epoll or its time slice ends, a
batch at a time. An idle server's loop is blocked in epoll, so the poller still runs at once;
under load the extra wait is bounded by one scheduler slice (a few ms). bench/identity_read.py
measures the effect (`SUUUPRA_GRPC_POLLER_BATCH=0` turns it off).
"""

from __future__ import annotations

import logging
import os
import threading

_log = logging.getLogger(__name__)
_POLLER_TARGET = "_poll_wrapper"  # PollerCompletionQueue._poll_wrapper in grpc's Cython aio code


def poller_thread() -> threading.Thread | None:
    """grpc.aio's poller thread, once grpc.aio has started it in this process."""
    for thread in threading.enumerate():
        target = getattr(thread, "_target", None)
        if getattr(target, "__name__", None) == _POLLER_TARGET:
            return thread
    return None


def batch_grpc_poller() -> int | None:
    """Put the poller thread under SCHED_BATCH; its thread id, or None where that cannot be
    done (another engine, another OS). Safe to call again."""
    thread = poller_thread()
    if thread is None or thread.native_id is None or not hasattr(os, "SCHED_BATCH"):
        _log.info("grpc.aio poller thread not found; scheduling left as it is")
        return None
    try:
        os.sched_setscheduler(thread.native_id, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:
        _log.warning("cannot set SCHED_BATCH on the grpc.aio poller thread: %s", exc)
        return None
    return thread.native_id


__all__ = ["batch_grpc_poller", "poller_thread"]
