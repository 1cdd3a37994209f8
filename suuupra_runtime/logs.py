"""Structured JSON logs: one JSON object per line on stderr.

    configure_logging("identity", "INFO")
    log = logging.getLogger(__name__)
    log.info("user created", extra={"fields": {"user_id": uid}})

Every line carries `ts`, `level`, `logger`, `msg`, `service`, and — inside an RPC — `request_id`
and `trace_id`. Structured values go in `extra={"fields": {...}}`. The runtime writes one
`suuupra.rpc` line per RPC (method, code, duration, request id, caller, tenant). Tokens,
passwords and request payloads are never logged by the runtime; keep it that way in services.

The per-RPC line is the hottest log call there is, so it has its own record type
(`RpcLogRecord`: no caller-frame/path/thread work at creation, fields as attributes) and
`JsonFormatter` writes it from cached fragments, JSON-escaping only the values that vary. The
output is the same JSON object a generic record with `extra={"fields": ...}` would give.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from json.encoder import encode_basestring
from typing import Any

from suuupra_runtime.request_context import request_id_var
from suuupra_runtime.tracing import current_trace_id

RPC_LOGGER = "suuupra.rpc"
_START_NS = time.time_ns()


def _json_str(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


class RpcLogRecord(logging.LogRecord):
    """The runtime's one-line-per-RPC record, cheap to create (see the module docstring).

    `request_id` must already be a safe token (the interceptor only keeps ids matching
    `[A-Za-z0-9._:-]`), so it is written without escaping; the other strings are escaped.
    """

    # The attributes every LogRecord has, fixed for this kind of record.
    _STATIC: dict[str, Any] = {  # noqa: RUF012 (copied into each instance's __dict__)
        "name": RPC_LOGGER,
        "msg": "rpc",
        "args": None,
        "pathname": __file__,
        "filename": "logs.py",
        "module": "logs",
        "exc_info": None,
        "exc_text": None,
        "stack_info": None,
        "lineno": 0,
        "funcName": "rpc",
        "thread": None,
        "threadName": None,
        "processName": None,
        "process": None,
    }

    def __init__(  # noqa: PLR0917 (one value per log field, positional for speed)
        self,
        level: int,
        request_id: str,
        method: str,
        code: str,
        duration_ms: float,
        caller: str | None,
        peer_service: str | None,
        tenant: str | None,
    ) -> None:
        # Deliberately not calling LogRecord.__init__: it inspects paths, threads and
        # processes on every call. Everything it would set is set here.
        self.__dict__.update(self._STATIC)
        now = time.time_ns()
        self.created = now / 1e9
        self.msecs = (now % 1_000_000_000) // 1_000_000
        self.relativeCreated = (now - _START_NS) / 1e6
        self.levelno = level
        self.levelname = logging.getLevelName(level)
        self.request_id = request_id
        self.method = method
        self.code = code
        self.duration_ms = duration_ms
        self.caller = caller
        self.peer_service = peer_service
        self.tenant = tenant

    @property
    def fields(self) -> dict[str, Any]:
        """The structured fields, as a generic record would carry them (for other formatters)."""
        return {
            "request_id": self.request_id,
            "method": self.method,
            "code": self.code,
            "duration_ms": self.duration_ms,
            "caller": self.caller,
            "peer_service": self.peer_service,
            "tenant": self.tenant,
        }


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._second = -1
        self._second_text = ""
        # json.dumps with options builds a new encoder per call; reuse one.
        self._encode = json.JSONEncoder(default=str, ensure_ascii=False).encode
        self._rpc_heads: dict[int, str] = {}  # levelno -> the fixed middle of an RPC line
        self._methods: dict[str, str] = {}  # method -> its escaped JSON string

    def _format_rpc(self, record: RpcLogRecord) -> str:
        head = self._rpc_heads.get(record.levelno)
        if head is None:
            encode = self._encode
            head = (
                f'","level":{encode(record.levelname)},"logger":{encode(RPC_LOGGER)},'
                f'"msg":"rpc","service":{encode(self.service)},"request_id":"'
            )
            self._rpc_heads[record.levelno] = head
        method = self._methods.get(record.method)
        if method is None:
            method = self._methods[record.method] = encode_basestring(record.method)
        trace_id = current_trace_id()
        trace = "" if trace_id is None else f',"trace_id":"{trace_id}"'
        return (
            f'{{"ts":"{self._timestamp(record.created)}{head}{record.request_id}"{trace},'
            f'"method":{method},"code":"{record.code}","duration_ms":{record.duration_ms!r},'
            f'"caller":{_json_str(record.caller)},'
            f'"peer_service":{_json_str(record.peer_service)},'
            f'"tenant":{_json_str(record.tenant)}}}'
        )

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime per second, not per line
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        if type(record) is RpcLogRecord:
            return self._format_rpc(record)
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "service": self.service,
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        trace_id = current_trace_id()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._encode(entry)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON lines (replaces existing handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Thread/process names are not in our format; skip collecting them for every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


__all__ = ["RPC_LOGGER", "JsonFormatter", "RpcLogRecord", "configure_logging"]
