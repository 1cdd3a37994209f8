"""Turning a delivery into the text a person reads: pick the template (tenant's newest version
for the recipient's locale, else the built-in), open identity's sealed token at the last moment,
add links, render in the sandbox."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import store
from services.notifications.domain import (
    EMAIL_VERIFICATION,
    PASSWORD_RESET,
    Category,
    Channel,
    Recipient,
    Unsubscribe,
    sign_unsubscribe,
)
from services.notifications.sealing import TokenOpener
from services.notifications.templates import (
    TemplateText,
    built_in,
    locale_candidates,
    render,
)

# Context keys that never reach a template as such.
SEALED_TOKEN = "_sealed_token"
SEALED_KEY_ID = "_sealed_key_id"
_LINK_PATHS = {EMAIL_VERIFICATION: "/verify-email", PASSWORD_RESET: "/reset-password"}
TEMPLATE_CACHE_SECONDS = 2.0
_FALLBACK = TemplateText("{{ title or kind }}", "{{ message or '' }}")


class TokenUnavailableError(ValueError):
    """The sealed token does not open (other key, tampered): the mail cannot be sent."""


# Built once or more per event on the consumer's hot path: a NamedTuple, not a frozen dataclass,
# whose __init__ (object.__setattr__ per field) made those constructions ~8% of the event path.
class Composed(NamedTuple):
    subject: str
    body: str
    version: int
    headers: Mapping[str, str] = MappingProxyType({})


class Composer:
    def __init__(
        self, opener: TokenOpener, *, app_url: str, public_url: str, signing_key: bytes
    ) -> None:
        self.opener = opener
        self.app_url = app_url
        self.public_url = public_url
        self.signing_key = signing_key
        # Tenant overrides are looked up on every message; a short-lived cache saves that query
        # on busy paths. Saving a version here clears it; other replicas see it within the TTL.
        self._cache: dict[tuple[str, str, Channel, str], tuple[float, TemplateText | None]] = {}

    def forget(self, tenant_id: str) -> None:
        self._cache = {k: v for k, v in self._cache.items() if k[0] != tenant_id}

    async def template(
        self, s: AsyncSession, tenant_id: str, kind: str, channel: Channel, locale: str
    ) -> TemplateText:
        key = (tenant_id, kind, channel, locale)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < TEMPLATE_CACHE_SECONDS:
            override = cached[1]
        else:
            found = await store.latest_template(
                s, tenant_id, kind, channel, locale_candidates(locale)
            )
            override = found[1] if found is not None else None
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now, override)
        if override is not None:
            return override
        return built_in(kind, channel) or _FALLBACK

    def unsubscribe_url(self, tenant_id: str, user_id: str, category: Category) -> str:
        token = sign_unsubscribe(self.signing_key, Unsubscribe(tenant_id, user_id, category))
        return f"{self.public_url}/notifications/unsubscribe?token={quote(token)}"

    def template_data(
        self,
        *,
        kind: str,
        category: Category,
        channel: Channel,
        recipient: Recipient,
        context: Mapping[str, Any],
    ) -> dict[str, object]:
        data: dict[str, object] = {k: v for k, v in context.items() if not str(k).startswith("_")}
        data.setdefault("display_name", recipient.display_name)
        data["kind"] = kind
        if SEALED_TOKEN in context:
            sealed = base64.b64decode(str(context[SEALED_TOKEN]))
            token = self.opener.open(str(context.get(SEALED_KEY_ID, "")), sealed, recipient.user_id)
            if token is None:
                raise TokenUnavailableError("the sealed token does not open with our delivery key")
            data["token"] = token
            data["link"] = f"{self.app_url}{_LINK_PATHS.get(kind, '/')}?token={quote(token)}"
        if channel is Channel.EMAIL and category is not Category.SECURITY:
            data["unsubscribe_url"] = self.unsubscribe_url(
                recipient.tenant_id, recipient.user_id, category
            )
        return data

    async def compose(
        self,
        s: AsyncSession,
        *,
        kind: str,
        category: Category,
        channel: Channel,
        recipient: Recipient,
        context: Mapping[str, Any],
    ) -> Composed:
        text = await self.template(s, recipient.tenant_id, kind, channel, recipient.locale)
        data = self.template_data(
            kind=kind, category=category, channel=channel, recipient=recipient, context=context
        )
        subject, body = render(text, data)
        headers: dict[str, str] = {}
        url = data.get("unsubscribe_url")
        if isinstance(url, str):
            body = f"{body}\n\nUnsubscribe: {url}\n"
            # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" to the URL.
            headers["List-Unsubscribe"] = f"<{url}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return Composed(subject, body, text.version, headers)
