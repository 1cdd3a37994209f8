"""HTTP status → provider outcome, shared by the HTTP providers."""

from __future__ import annotations

import httpx

from services.notifications.providers import PermanentFailure, TransientFailure


def raise_for(response: httpx.Response, what: str, *, bounce_statuses: frozenset[int]) -> None:
    if response.is_success:
        return
    detail = f"{what} answered {response.status_code}: {response.text[:300]}"
    if response.status_code in {408, 425, 429} or response.status_code >= 500:
        raise TransientFailure(detail)
    raise PermanentFailure(detail, bounced=response.status_code in bounce_statuses)


async def post(client: httpx.AsyncClient, what: str, url: str, **kwargs: object) -> httpx.Response:
    try:
        return await client.post(url, **kwargs)  # type: ignore[arg-type]
    except httpx.TransportError as exc:
        raise TransientFailure(f"{what} unreachable: {type(exc).__name__}: {exc}") from None
