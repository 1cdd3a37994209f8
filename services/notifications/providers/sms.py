"""SMS through a Twilio-compatible REST API:
`POST {base}/2010-04-01/Accounts/{sid}/Messages.json` (form `To`, `From`, `Body`, basic auth)
→ 201 with the message `sid`. 4xx (e.g. 400 code 21211 invalid number) is permanent; 429 and
5xx are transient."""

from __future__ import annotations

import httpx

from services.notifications.providers import OutgoingMessage, PermanentFailure
from services.notifications.providers.http_errors import post, raise_for


class TwilioSms:
    def __init__(
        self,
        base_url: str,
        account_sid: str,
        auth_token: str,
        sender: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.sender = sender
        self._client = client or httpx.AsyncClient(auth=(account_sid, auth_token), timeout=timeout)

    async def send(self, message: OutgoingMessage) -> str:
        response = await post(
            self._client,
            "SMS API",
            self.url,
            data={"To": message.address, "From": self.sender, "Body": message.body},
        )
        raise_for(response, "SMS API", bounce_statuses=frozenset({400, 404}))
        sid = response.json().get("sid")
        if not sid:
            raise PermanentFailure("SMS API accepted the message without a sid")
        return str(sid)

    async def close(self) -> None:
        await self._client.aclose()
