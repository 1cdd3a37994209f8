"""Structured JSON logs: one JSON object per line on stderr.

    configure_logging("identity", "INFO")
    log = logging.getLogger(__name__)
    log.info("user created", extra={"fields": {"user_id": uid}})

Every line carries `ts`, `level`, `logger`, `msg`, `service`, and — inside an RPC — `request_id`
and `trace_id`. Structured values go in `extra={"fields": {...}}`. The runtime writes one
`suuupra.rpc` line per RPC (method, code, duration, request id, caller, tenant). Tokens,
passwords and request payloads are never logged by the runtime; keep it that way in services.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from suuupra_runtime.request_context import request_id_var
from suuupra_runtime.tracing import current_trace_id

RPC_LOGGER = "suuupra.rpc"


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._second = -1
        self._second_text = ""
        # json.dumps with options builds a new encoder per call; reuse one.
        self._encode = json.JSONEncoder(default=str, ensure_ascii=False).encode

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime per second, not per line
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
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


__all__ = ["RPC_LOGGER", "JsonFormatter", "configure_logging"]
