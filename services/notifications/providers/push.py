"""Push through an FCM-like HTTP v1 API:
`POST {base}/v1/projects/{project}/messages:send` with a bearer token and
`{"message": {"token", "notification": {"title", "body"}, "data"}}` → 200 `{"name": ...}`.
One request per device token; 404 (UNREGISTERED) is a bounce, other 4xx permanent, 429/5xx
transient. A message to several devices succeeds when any device accepted it."""

from __future__ import annotations

import httpx

from services.notifications.providers import (
    OutgoingMessage,
    PermanentFailure,
    TransientFailure,
)
from services.notifications.providers.http_errors import post, raise_for


class FcmPush:
    def __init__(
        self,
        base_url: str,
        project: str,
        access_token: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/v1/projects/{project}/messages:send"
        self._client = client or httpx.AsyncClient(
            headers={"authorization": f"Bearer {access_token}"}, timeout=timeout
        )

    async def _send_one(self, token: str, message: OutgoingMessage) -> str:
        body = {
            "message": {
                "token": token,
                "notification": {"title": message.subject, "body": message.body},
                "data": dict(message.data),
            }
        }
        response = await post(self._client, "push API", self.url, json=body)
        raise_for(response, "push API", bounce_statuses=frozenset({404}))
        return str(response.json().get("name", ""))

    async def send(self, message: OutgoingMessage) -> str:
        names: list[str] = []
        errors: list[Exception] = []
        for token in [t for t in message.address.split(",") if t]:
            try:
                names.append(await self._send_one(token, message))
            except (TransientFailure, PermanentFailure) as exc:
                errors.append(exc)
        if names:
            return ",".join(names)
        if any(isinstance(e, TransientFailure) for e in errors):
            raise TransientFailure("; ".join(map(str, errors)))
        bounced = bool(errors) and all(
            isinstance(e, PermanentFailure) and e.bounced for e in errors
        )
        raise PermanentFailure("; ".join(map(str, errors)) or "no device token", bounced=bounced)

    async def close(self) -> None:
        await self._client.aclose()
