"""One-click unsubscribe links (`/notifications/unsubscribe?token=...`, RFC 8058).

GET answers a small page with a button, because mail scanners follow links: only POST (the
button, or a mail client's `List-Unsubscribe=One-Click`) changes anything. The token is signed
(HMAC) and names tenant, user and category; email for that category is turned off.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs, quote

from services.notifications.handlers import Notifications
from suuupra_runtime.http_endpoint import HttpRequest, HttpResponse

PREFIX = "/notifications/"
PATH = "/notifications/unsubscribe"
_HTML = "text/html; charset=utf-8"


def _page(title: str, text: str, form: str = "") -> bytes:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{text}</p>{form}</body></html>"
    ).encode()


def unsubscribe_route(notifications: Notifications):  # type: ignore[no-untyped-def]
    async def handle(request: HttpRequest) -> HttpResponse:
        if request.path != PATH:
            return HttpResponse(404, body=b"not found\n")
        token = request.query_value("token") or ""
        if not token and request.body:
            token = (parse_qs(request.body.decode(errors="replace")).get("token") or [""])[0]
        if request.method in {"GET", "HEAD"}:
            if not token:
                return HttpResponse(400, _HTML, _page("Unsubscribe", "This link is incomplete."))
            form = (
                f"<form method='post' action='{PATH}?token={html.escape(quote(token))}'>"
                "<button type='submit'>Unsubscribe</button></form>"
            )
            return HttpResponse(200, _HTML, _page("Unsubscribe", "Stop these emails?", form))
        done = await notifications.unsubscribe(token)
        if done is None:
            return HttpResponse(
                400, _HTML, _page("Unsubscribe", "This link is not valid (or was altered).")
            )
        what = html.escape(done.category.name.lower())
        return HttpResponse(
            200, _HTML, _page("Unsubscribed", f"You will no longer get {what} emails.")
        )

    return handle
