# mypy: disable-error-code="import-untyped"
"""The server-side interceptor chain every service runs (DESIGN.md §4), as one interceptor.

For each RPC, in order:

1. request id: `x-request-id` from the caller (kept if it is a sane token) or a new UUID4; sent
   back in the trailing metadata and bound to `request_context.request_id_var` for logs/events.
   Trailers, not initial metadata: DESIGN only asks that the id be propagated and logged, and
   trailers ride on the status frame the server sends anyway, while `send_initial_metadata` is an
   extra awaited batch per RPC (~10% of a trivial call's server CPU). Error statuses carry it
   next to their `grpc-status-details-bin`; a handler that aborts with its own trailing metadata
   replaces it (gRPC sends one trailer set);
2. deadline: the caller's deadline is bound to `request_context.deadline_var`, so
   `clients.call_options()` shortens outgoing calls to the time that is left;
3. tracing: one SERVER span parented on the caller's `traceparent`;
4. metrics: in-flight gauge, then count + duration by method and final code;
5. authentication: `authorization: Bearer <JWT>` verified by the `JwtVerifier` (a bad or
   unverifiable token is UNAUTHENTICATED even on public methods), XFCC → SPIFFE id; the result
   is bound to `auth.current_caller()`;
6. access: the method's `(suuupra.options.v1.access)` rule (fail closed when absent);
7. validation: request bytes that do not parse as the method's message are INVALID_ARGUMENT
   (reason MALFORMED_REQUEST; grpc itself would answer UNKNOWN naming the parser's exception,
   skipping our logs and metrics), then protovalidate rules of the request (each message of a
   client stream);
8. the handler; its `DomainError`s map to canonical codes with `google.rpc.Status` details, any
   other exception to INTERNAL with only the request id (the traceback is logged here);
9. one JSON log line per RPC: method, code, duration, request id, caller, tenant (a record whose
   JSON tail is prebuilt here; see `logs.RpcLogRecord`).

Server streaming goes through the same steps; errors raised mid-stream are mapped the same way.
Everything that depends only on the method (descriptor lookups, metric label children, the
wrapped handler itself) is computed once per method and cached, so the per-call cost is a
metadata scan, a span and a log line. Each RPC runs in its own asyncio task, so the contextvars
set here never leak between RPCs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from suuupra_runtime import auth, request_context
from suuupra_runtime.access import (
    INFRASTRUCTURE_SERVICES,
    PROXY_SERVICE_ACCOUNTS,
    MethodInfo,
    check_access,
    method_info,
)
from suuupra_runtime.auth import Caller, JwtVerifier, bearer_token, parse_xfcc
from suuupra_runtime.errors import DomainError, InvalidArgument, Unauthenticated
from suuupra_runtime.grpc_errors import domain_error_from_rpc_error, status_for
from suuupra_runtime.ids import random_uuid
from suuupra_runtime.logs import RPC_LOGGER, RpcLogRecord
from suuupra_runtime.metrics import MethodMetrics, method_metrics
from suuupra_runtime.tracing import context_from_headers, recording, tracer
from suuupra_runtime.validation import has_rules, validate

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_ANONYMOUS = auth.ANONYMOUS


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything about a method that does not change between calls."""

    info: MethodInfo
    metrics: MethodMetrics
    validate: bool
    quiet: bool  # health checks and reflection log at DEBUG only
    public: bool
    span_attributes: dict[str, str]


class _Rpc:
    """Per-call state carried from the start of an RPC to its log line."""

    __slots__ = ("authorization", "caller", "code", "request_id", "span", "started")

    def __init__(
        self,
        request_id: str,
        span: trace.Span | None,
        caller: Caller,
        authorization: str | None,
    ) -> None:
        self.request_id = request_id
        self.span = span
        self.started = time.perf_counter()
        self.caller = caller
        self.authorization = authorization
        self.code = "OK"


class RuntimeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """All cross-cutting server behaviour of the shared runtime."""

    def __init__(
        self,
        *,
        error_domain: str,
        jwt_verifier: JwtVerifier | None = None,
        proxies: frozenset[str] = PROXY_SERVICE_ACCOUNTS,
    ) -> None:
        self._domain = error_domain
        self._verifier = jwt_verifier
        self._proxies = proxies
        self._handlers: dict[str, Any] = {}
        self._tracer = tracer()
        self._recording = recording()
        self._log = logging.getLogger(RPC_LOGGER)
        self._errors = logging.getLogger("suuupra.errors")

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        method: str = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: grpc answers UNIMPLEMENTED
        wrapped = self._wrap(method, handler)
        self._handlers[method] = wrapped
        return wrapped

    # --- wrapping -----------------------------------------------------------------------------

    def _plan(self, method: str) -> _Plan:
        info = method_info(method)
        infrastructure = info.service in INFRASTRUCTURE_SERVICES
        return _Plan(
            info=info,
            metrics=method_metrics(info.service, info.method),
            validate=not infrastructure
            and (info.request_type is None or has_rules(info.request_type.DESCRIPTOR)),
            quiet=infrastructure,
            public=info.access is not None and info.access.is_valid and info.access.public,
            span_attributes={
                "rpc.system": "grpc",
                "rpc.service": info.service,
                "rpc.method": info.method,
            },
        )

    def _wrap(self, method: str, handler: Any) -> Any:
        plan = self._plan(method)
        kwargs = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary_behavior(plan, handler.unary_unary), **kwargs
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream_behavior(plan, handler.unary_stream, request_streaming=False),
                **kwargs,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary_behavior(plan, handler.stream_unary, request_streaming=True), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream_behavior(plan, handler.stream_stream, request_streaming=True), **kwargs
        )

    def _unary_behavior(
        self, plan: _Plan, behavior: Any, *, request_streaming: bool = False
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        async def unary(request: Any, context: Any) -> Any:
            rpc = self._begin(plan, context)
            try:
                if rpc.authorization is not None:
                    rpc.caller = self._known_caller(rpc) or await self._authenticate(rpc)
                request = self._admit(plan, rpc, request, request_streaming)
                return await behavior(request, context)
            except BaseException as exc:
                await self._fail(plan, rpc, exc, context)
                raise  # _fail always raises; this keeps type checkers and readers honest
            finally:
                self._finish(plan, rpc)

        return unary

    def _stream_behavior(
        self, plan: _Plan, behavior: Any, *, request_streaming: bool
    ) -> Callable[[Any, Any], Any]:
        if not inspect.isasyncgenfunction(behavior):
            # A streaming handler that writes with `context.write` and returns.
            return self._unary_behavior(plan, behavior, request_streaming=request_streaming)

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            rpc = self._begin(plan, context)
            try:
                if rpc.authorization is not None:
                    rpc.caller = self._known_caller(rpc) or await self._authenticate(rpc)
                request = self._admit(plan, rpc, request, request_streaming)
                responses = behavior(request, context)
                if rpc.caller.expires_at is not None:
                    responses = _until_expiry(responses, rpc.caller.expires_at)
                async for response in responses:
                    yield response
            except BaseException as exc:
                await self._fail(plan, rpc, exc, context)
                raise
            finally:
                self._finish(plan, rpc)

        return stream

    # --- the steps ----------------------------------------------------------------------------

    # _begin and _admit are plain functions (a coroutine per step costs a few µs per RPC);
    # only token verification may await (a JWKS fetch), so it runs between them.
    def _begin(self, plan: _Plan, context: Any) -> _Rpc:
        request_id = authorization = xfcc = traceparent = tracestate = None
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id":
                request_id = value
            elif key == "authorization":
                authorization = value
            elif key == "x-forwarded-client-cert":
                xfcc = value
            elif key == "traceparent":
                traceparent = value
            elif key == "tracestate":
                tracestate = value
        if request_id is None or not _SANE_REQUEST_ID.match(request_id):
            request_id = random_uuid()
        request_context.request_id_var.set(request_id)
        context.set_trailing_metadata(((request_context.REQUEST_ID_HEADER, request_id),))
        remaining = context.time_remaining()
        if remaining is not None:
            request_context.deadline_var.set(time.monotonic() + remaining)

        parent = None
        if traceparent is not None:
            headers = {"traceparent": traceparent}
            if tracestate is not None:
                headers["tracestate"] = tracestate
            parent = context_from_headers(headers)
        span: trace.Span | None = None
        if self._recording:
            span = self._tracer.start_span(
                plan.info.full_method,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=plan.span_attributes,
            )
            otel_context.attach(trace.set_span_in_context(span, parent))
        elif parent is not None:
            # Not recording: still carry the caller's trace to logs, calls and events.
            otel_context.attach(parent)
        plan.metrics.started()
        # XFCC parsing cannot fail; token verification (which can) happens in _admit, inside
        # the error mapping.
        spiffe_id = parse_xfcc(xfcc) if xfcc else None
        caller = Caller(spiffe_id=spiffe_id) if spiffe_id else _ANONYMOUS
        return _Rpc(request_id, span, caller, authorization)

    def _known_caller(self, rpc: _Rpc) -> Caller | None:
        """The caller of a token verified before (no await), else None: `_authenticate`
        decides, and raises for anything malformed."""
        if self._verifier is None or rpc.authorization is None:
            return None
        scheme, _, token = rpc.authorization.partition(" ")
        user = self._verifier.cached(token)
        if user is None or scheme.lower() != "bearer":
            return None
        return _with_peer(user, rpc.caller)

    async def _authenticate(self, rpc: _Rpc) -> Caller:
        caller = rpc.caller
        if rpc.authorization is None:
            return caller
        token = bearer_token(rpc.authorization)
        if self._verifier is None:
            raise Unauthenticated(
                "this service cannot verify access tokens", reason="TOKEN_VERIFICATION_DISABLED"
            )
        return _with_peer(await self._verifier.verify(token), caller)

    def _admit(self, plan: _Plan, rpc: _Rpc, request: Any, request_streaming: bool) -> Any:
        if rpc.caller is not _ANONYMOUS:
            auth.set_current_caller(rpc.caller)
        if not plan.public:  # public needs no check; everything else (incl. no rule) does
            check_access(
                plan.info.access,
                rpc.caller,
                full_method=plan.info.full_method,
                proxies=self._proxies,
            )
        if request_streaming:
            return _checked_stream(plan, request)
        if type(request) is _Undecodable:
            raise _malformed(plan)
        if plan.validate:
            validate(request)
        return request

    async def _fail(self, plan: _Plan, rpc: _Rpc, exc: BaseException, context: Any) -> None:
        if isinstance(exc, grpc.aio.AbortError):
            code = context.code()
            rpc.code = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
            raise exc
        if isinstance(exc, asyncio.CancelledError):
            remaining = request_context.remaining_seconds()
            rpc.code = (
                "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else ("CANCELLED")
            )
            raise exc
        if not isinstance(exc, Exception):
            rpc.code = "CANCELLED"
            raise exc  # KeyboardInterrupt / SystemExit / GeneratorExit pass through untouched
        if isinstance(exc, grpc.RpcError):
            # A failed call to another service that the handler let through.
            upstream = domain_error_from_rpc_error(exc)
            if upstream is not None:
                exc = upstream
            elif exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                rpc.code = "DEADLINE_EXCEEDED"
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"deadline exceeded in a downstream call (request id {rpc.request_id})",
                )
        if not isinstance(exc, DomainError):
            self._errors.error("unhandled exception in %s", plan.info.full_method, exc_info=exc)
        status = status_for(exc, domain=self._domain, request_id=rpc.request_id)
        rpc.code = status.code.name
        await context.abort(
            status.code,
            status.details,
            (*status.trailing_metadata, (request_context.REQUEST_ID_HEADER, rpc.request_id)),
        )

    def _finish(self, plan: _Plan, rpc: _Rpc) -> None:
        elapsed = time.perf_counter() - rpc.started
        plan.metrics.finished(elapsed, rpc.code)
        span = rpc.span
        if span is not None:
            span.set_attribute("rpc.grpc.status_code", rpc.code)
            span.set_attribute("suuupra.request_id", rpc.request_id)
            if rpc.code != "OK":
                span.set_status(Status(StatusCode.ERROR, rpc.code))
            span.end()
        level = logging.DEBUG if plan.quiet else logging.INFO
        if self._log.isEnabledFor(level):
            caller = rpc.caller
            record = RpcLogRecord(
                level,
                rpc.request_id,
                plan.info.full_method,
                rpc.code,
                round(elapsed * 1000, 3),
                caller.principal or None,
                caller.spiffe_id,
                caller.tenant_id,
            )
            self._log.handle(record)


def _with_peer(user: Caller, peer: Caller) -> Caller:
    if peer.spiffe_id is None:
        return user  # verified users carry no SPIFFE id; skip the (slow) dataclass copy
    return dataclasses.replace(user, spiffe_id=peer.spiffe_id)


class _Undecodable:
    """Stands in for a request message whose bytes did not parse (see `_tolerant`)."""

    __slots__ = ()


_UNDECODABLE = _Undecodable()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The handler's deserializer, returning `_UNDECODABLE` instead of raising.

    A deserializer that raises makes grpc fail the call itself (UNKNOWN, outside the
    interceptor); returning a marker lets `_admit` turn it into a mapped, logged, counted error.
    """
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return _UNDECODABLE

    return deserialize


def _malformed(plan: _Plan) -> InvalidArgument:
    return InvalidArgument(
        (),
        f"the request is not a valid message for {plan.info.full_method}",
        reason="MALFORMED_REQUEST",
    )


async def _until_expiry(responses: AsyncIterator[Any], expires_at: float) -> AsyncIterator[Any]:
    """`responses` until the caller's token expires, then UNAUTHENTICATED: a stream is no way
    around token expiry (a deactivated user's watch or live inbox ends with the token; the client
    reconnects with a fresh one). The expiry interrupts only waiting for the next response, never
    the time a response is being sent: it then ends the stream before the next wait.

    One timer per stream, which cancels the task only while it waits; an `asyncio.timeout` around
    each wait cost ~4 us per response (a timer armed and cancelled every time), a few % of a busy
    live stream's CPU."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    waiting = expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        if waiting and task is not None:
            task.cancel()

    def token_expired() -> Unauthenticated:
        return Unauthenticated(
            "the access token expired during the stream; reconnect with a fresh token",
            reason="TOKEN_EXPIRED",
        )

    timer = loop.call_at(loop.time() + (expires_at - time.time()), expire)
    try:
        while True:
            if expired:
                raise token_expired()
            waiting = True
            try:
                response = await anext(responses)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                # Ours (the token expired) unless someone else cancelled the task as well.
                if expired and task is not None and task.uncancel() == 0:
                    raise token_expired() from None
                raise
            finally:
                waiting = False
            yield response
    finally:
        timer.cancel()
        aclose = getattr(responses, "aclose", None)
        if aclose is not None:
            await aclose()  # the handler's own cleanup (subscriptions) runs now, not at GC


async def _checked_stream(plan: _Plan, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for message in requests:
        if type(message) is _Undecodable:
            raise _malformed(plan)
        if plan.validate:
            validate(message)
        yield message


__all__ = ["RuntimeInterceptor"]
