"""Local HTTP servers speaking the SMS (Twilio-compatible) and push (FCM HTTP v1) APIs the
real provider clients call, with scripted answers per call (to simulate outages and refusals).
Built on the runtime's HTTP endpoint."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from suuupra_runtime.http_endpoint import HttpEndpoint, HttpRequest, HttpResponse

ACCOUNT_SID = "AC0123456789"
AUTH_TOKEN = "twilio-secret"
PUSH_PROJECT = "suuupra-test"
PUSH_TOKEN = "fcm-access-token"


@dataclass
class FakeApi:
    """Answers scripted (status, JSON body) pairs in order, then succeeds; records requests."""

    script: list[tuple[int, dict[str, object]]] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, status: int, body: dict[str, object] | None = None, times: int = 1) -> None:
        self.script.extend([(status, body or {"message": "scripted failure"})] * times)

    def _answer(self, ok: dict[str, object]) -> HttpResponse:
        status, body = self.script.pop(0) if self.script else (200, ok)
        return HttpResponse(status, "application/json", json.dumps(body).encode())


class FakeTwilio(FakeApi):
    async def handle(self, request: HttpRequest) -> HttpResponse:
        expected = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        auth = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        if request.method != "POST" or request.path != expected:
            return HttpResponse(404, body=b"unknown resource")
        if request.headers.get("authorization") != f"Basic {auth}":
            return HttpResponse(401, "application/json", b'{"code": 20003}')
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        self.requests.append(form)
        response = self._answer({"sid": f"SM{uuid.uuid4().hex}", "status": "queued"})
        # Twilio answers 201 Created for a queued message.
        if response.status == 200:
            return HttpResponse(201, response.content_type, response.body)
        return response


class FakeFcm(FakeApi):
    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path != f"/v1/projects/{PUSH_PROJECT}/messages:send":
            return HttpResponse(404, body=b"unknown resource")
        if request.headers.get("authorization") != f"Bearer {PUSH_TOKEN}":
            return HttpResponse(
                401, "application/json", b'{"error": {"status": "UNAUTHENTICATED"}}'
            )
        self.requests.append(json.loads(request.body))
        return self._answer({"name": f"projects/{PUSH_PROJECT}/messages/{uuid.uuid4().hex}"})


@asynccontextmanager
async def serving(api: FakeApi, prefix: str) -> AsyncIterator[FakeApi]:
    endpoint = HttpEndpoint({}, "127.0.0.1", 0, prefix_routes={prefix: api.handle})  # type: ignore[attr-defined]
    await endpoint.start()
    api.port = endpoint.port
    try:
        yield api
    finally:
        await endpoint.close()
