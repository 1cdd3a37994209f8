# mypy: disable-error-code="import-untyped"
"""The gRPC server every service runs: `run(build)` in `__main__`, `serve()` for the rest.

    async def build() -> ServiceDefinition:
        db = await Database.connect(service_database_url("notes"))
        return ServiceDefinition(
            name="notes",
            register=lambda server: notes_pb2_grpc.add_NotesServiceServicer_to_server(
                NotesApi(db), server),
            service_names=["suuupra.notes.v1.NotesService"],
            readiness=[db.ping],
            on_stop=[db.dispose],
        )

    if __name__ == "__main__":
        run(build)            # uvloop, JSON logs, settings from SUUUPRA_* (config.py)

What the server does (DESIGN.md §4):

* `grpc.aio` on uvloop with the runtime's interceptor chain (`interceptors.py`), keepalive,
  message-size limits and `maximum_concurrent_rpcs` (excess calls get RESOURCE_EXHAUSTED);
* `grpc.health.v1.Health` with real status for "" and every service name: NOT_SERVING until all
  readiness checks pass, re-polled every `readiness_interval_seconds` (a failing check flips back to
  NOT_SERVING); server reflection (v1alpha) for the registered services;
* an HTTP endpoint (`SUUUPRA_HTTP_ADDR`): `/metrics`, `/healthz` (200 serving / 503 not), the
  definition's exact `http_routes` and its `http_prefix_routes`;
* SIGTERM/SIGINT → health NOT_SERVING everywhere → wait `drain_delay_seconds` so load balancers
  notice → run `on_drain` (e.g. end long-lived streams so their clients reconnect elsewhere instead
  of holding the process for the whole grace period) → `server.stop(grace_seconds)` (in-flight
  calls finish, new ones are refused) → cancel background tasks → run `on_stop` → return (exit 0).

`RuntimeServer` is the same machinery without signal handling, for tests that run a server
in-process (`await server.start()`, `server.grpc_port`, `await server.stop()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from suuupra_runtime import metrics
from suuupra_runtime.auth import HttpJwksProvider, JwtVerifier
from suuupra_runtime.config import ServerSettings, split_host_port
from suuupra_runtime.grpc_poller import batch_grpc_poller
from suuupra_runtime.http_endpoint import HttpEndpoint, HttpHandler, HttpRequestHandler
from suuupra_runtime.interceptors import RuntimeInterceptor
from suuupra_runtime.logs import configure_logging
from suuupra_runtime.tracing import configure_tracing

_log = logging.getLogger("suuupra.server")
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_READINESS_TIMEOUT_SECONDS = 5.0
# How long stop() waits for cancelled background tasks, and for each on_stop hook, before it
# moves on: shutdown must end even if a task swallowed its cancellation (Python 3.11's
# asyncio.wait_for can, when the awaited future completes at the moment it is cancelled).
_STOP_STEP_SECONDS = 5.0


@dataclass
class ServiceDefinition:
    name: str
    register: Callable[[grpc.aio.Server], None]
    service_names: Sequence[str]
    readiness: Sequence[Callable[[], Awaitable[bool]]] = ()
    on_start: Sequence[Callable[[], Awaitable[None]]] = ()
    background: Sequence[Callable[[], Awaitable[None]]] = ()
    on_stop: Sequence[Callable[[], Awaitable[None]]] = ()
    # Awaited when draining starts, before the grace period: the server still runs, so a hook can
    # end open server streams (the clients see the error and reconnect to another replica).
    on_drain: Sequence[Callable[[], Awaitable[None]]] = ()
    http_routes: Mapping[str, HttpHandler] = field(default_factory=dict)
    # Path prefix → handler given the whole request (GET/HEAD/POST); the prefixes belong under the
    # service's `http_paths` in mesh/topology.yaml so its sidecar routes them here.
    http_prefix_routes: Mapping[str, HttpRequestHandler] = field(default_factory=dict)
    jwt_verifier: JwtVerifier | None = None


def _server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Clients may ping every 10 s; more often is abuse and gets the connection closed.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        # Never share a port with a stale or second instance.
        ("grpc.so_reuseport", 0),
    ]


def _verifier_for(definition: ServiceDefinition, settings: ServerSettings) -> JwtVerifier | None:
    if definition.jwt_verifier is not None:
        return definition.jwt_verifier
    if settings.jwks_url:
        return JwtVerifier(
            HttpJwksProvider(settings.jwks_url), settings.jwt_issuer, settings.jwt_audience
        )
    return None


class RuntimeServer:
    """One service's gRPC server, HTTP endpoint, health, background tasks and lifecycle."""

    def __init__(self, definition: ServiceDefinition, settings: ServerSettings) -> None:
        self.definition = definition
        self.settings = settings
        self._health = health.aio.HealthServicer()
        self._health_names = ["", *definition.service_names]
        self._server: grpc.aio.Server | None = None
        self._http: HttpEndpoint | None = None
        self._grpc_port: int | None = None
        self._ready = False
        self._draining = False
        self._tasks: list[asyncio.Task[None]] = []
        self._background: list[asyncio.Task[None]] = []
        self.failed = asyncio.Event()  # a background task died; serve() then exits non-zero

    # --- state --------------------------------------------------------------------------------

    @property
    def grpc_port(self) -> int:
        if self._grpc_port is None:
            raise RuntimeError("server is not started")
        return self._grpc_port

    @property
    def http_port(self) -> int:
        if self._http is None:
            raise RuntimeError("HTTP endpoint is disabled or not started")
        return self._http.port

    @property
    def serving(self) -> bool:
        return self._ready and not self._draining

    # --- start --------------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        for hook in self.definition.on_start:
            await hook()
        for name in self._health_names:
            await self._health.set(name, _NOT_SERVING)

        interceptor = RuntimeInterceptor(
            error_domain=settings.error_domain,
            jwt_verifier=_verifier_for(self.definition, settings),
        )
        server = grpc.aio.server(
            interceptors=[interceptor],
            options=_server_options(settings),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        self.definition.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [
                *self.definition.service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        port = server.add_insecure_port(settings.grpc_addr)
        if port == 0:
            raise OSError(f"cannot listen on {settings.grpc_addr}")
        self._grpc_port = port

        if settings.http_addr is not None:
            host, http_port = split_host_port(settings.http_addr, "SUUUPRA_HTTP_ADDR")
            routes: dict[str, HttpHandler] = {"/metrics": _metrics, "/healthz": self._healthz}
            routes.update(self.definition.http_routes)
            self._http = HttpEndpoint(
                routes, host, http_port, prefix_routes=self.definition.http_prefix_routes
            )
            await self._http.start()

        await server.start()
        if settings.batch_grpc_poller:
            batch_grpc_poller()
        self._server = server
        self._tasks.append(asyncio.create_task(self._watch_readiness(), name="readiness"))
        for job in self.definition.background:
            task = asyncio.create_task(
                _run_background(job), name=getattr(job, "__qualname__", "background")
            )
            task.add_done_callback(self._background_done)
            self._background.append(task)
        _log.info(
            "serving",
            extra={
                "fields": {
                    "grpc_addr": settings.grpc_addr,
                    "grpc_port": port,
                    "http_addr": settings.http_addr,
                    "services": list(self.definition.service_names),
                }
            },
        )

    def _background_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._draining:
            return
        exc = task.exception()
        _log.error("background task %s stopped", task.get_name(), exc_info=exc)
        self.failed.set()

    async def _healthz(self) -> tuple[int, str, bytes]:
        if self.serving:
            return 200, "text/plain; charset=utf-8", b"SERVING\n"
        return 503, "text/plain; charset=utf-8", b"NOT_SERVING\n"

    # --- readiness ----------------------------------------------------------------------------

    async def _check(self, check: Callable[[], Awaitable[bool]]) -> bool:
        try:
            return bool(await asyncio.wait_for(check(), _READINESS_TIMEOUT_SECONDS))
        except Exception as exc:
            _log.warning(
                "readiness check %s failed: %r", getattr(check, "__qualname__", check), exc
            )
            return False

    async def check_ready(self) -> bool:
        results = await asyncio.gather(*(self._check(c) for c in self.definition.readiness))
        return all(results)

    async def _watch_readiness(self) -> None:
        while not self._draining:
            ready = await self.check_ready()
            if ready != self._ready and not self._draining:
                self._ready = ready
                status = _SERVING if ready else _NOT_SERVING
                for name in self._health_names:
                    await self._health.set(name, status)
                _log.info("health %s", "SERVING" if ready else "NOT_SERVING")
            await asyncio.sleep(self.settings.readiness_interval_seconds)

    # --- stop ---------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Drain: NOT_SERVING → pause → stop accepting, let in-flight calls finish → on_stop."""
        if self._draining:
            return
        self._draining = True
        await self._health.enter_graceful_shutdown()
        _log.info("draining", extra={"fields": {"grace_seconds": self.settings.grace_seconds}})
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            await asyncio.sleep(self.settings.drain_delay_seconds)
            for drain_hook in self.definition.on_drain:
                try:
                    await drain_hook()
                except Exception:
                    _log.exception("on_drain hook failed")
            await self._server.stop(self.settings.grace_seconds)
        for task in self._background:
            task.cancel()
        await _await_cancelled([*self._tasks, *self._background])
        for hook in self.definition.on_stop:
            try:
                await asyncio.wait_for(hook(), _STOP_STEP_SECONDS)
            except Exception:
                _log.exception("on_stop hook failed or timed out")
        if self._http is not None:
            await self._http.close()
        _log.info("stopped")


async def _await_cancelled(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Wait for cancelled tasks to end, cancelling again any that swallowed the cancellation;
    after three rounds, log what is still running and go on rather than hang the shutdown."""
    pending = {task for task in tasks if not task.done()}
    for _ in range(3):
        if not pending:
            break
        _, pending = await asyncio.wait(pending, timeout=_STOP_STEP_SECONDS)
        for task in pending:
            task.cancel()
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            _log.warning("background task %s ended with %r", task.get_name(), task.exception())
    if pending:
        _log.error(
            "background tasks did not stop: %s", ", ".join(sorted(t.get_name() for t in pending))
        )


async def _run_background(job: Callable[[], Awaitable[None]]) -> None:
    await job()


async def _metrics() -> tuple[int, str, bytes]:
    content_type, body = metrics.render()
    return 200, content_type, body


_YOUNG_GC_THRESHOLD = 50_000


def settle_heap() -> None:
    """Takes what start-up left alive (modules, protobuf descriptors, compiled SQL, the wiring)
    out of the cyclic garbage collector's sight (`gc.freeze`): its full collections no longer
    walk those objects again and again. py-spy on the notifications event path showed the
    collector at ~20% of the process's CPU before, the hot path's own garbage being small
    against a start-up heap of ~130k objects. Frozen objects are still freed by reference
    counting; only cycles among them would stay (start-up state lives as long as the process).

    It also raises the young generation's threshold from 700 to `_YOUNG_GC_THRESHOLD` net
    allocations. A consumer batch or a burst of RPCs keeps a few thousand short-lived containers
    alive at once, so at 700 the collector ran over and over on objects that reference counting
    was about to free anyway, promoting them into older generations that then cost more to
    collect: ~8% of the notifications event path's CPU (gc callbacks: 796 young, 72 middle, 7 full
    collections per 20k events; with 50 000: none after start-up). What the higher threshold lets
    pile up is only cyclic garbage, at most that many objects (a few MB) before it is collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


async def serve(definition: ServiceDefinition, settings: ServerSettings) -> None:
    """Run until SIGTERM/SIGINT, then drain and return; raises if a background task died."""
    configure_tracing(definition.name)
    server = RuntimeServer(definition, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        settle_heap()
        stop_wait = asyncio.create_task(stop.wait())
        fail_wait = asyncio.create_task(server.failed.wait())
        await asyncio.wait({stop_wait, fail_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        fail_wait.cancel()
    finally:
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if server.failed.is_set():
        raise RuntimeError("a background task stopped unexpectedly")


def run(build: Callable[[], Awaitable[ServiceDefinition]]) -> None:
    """Entry point for a service's `__main__`: uvloop, JSON logs, settings from the environment."""
    configure_logging("suuupra", "INFO")

    async def main() -> None:
        definition = await build()
        settings = ServerSettings.from_env(definition.name)
        configure_logging(definition.name, settings.log_level)
        await serve(definition, settings)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except Exception:
        _log.exception("service failed")
        sys.exit(1)
    with contextlib.suppress(Exception):
        logging.shutdown()


__all__ = ["RuntimeServer", "ServiceDefinition", "run", "serve", "settle_heap"]
