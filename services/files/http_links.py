"""`GET|HEAD /files/d/<token>`: signed download links for browsers, with single byte ranges.

The token is the whole authorisation (HMAC-signed, short-lived, bound to one tenant, file,
version and variant), so the route needs no cookies or bearer tokens. Invalid, expired or
deleted: 404 without saying which.
"""

from __future__ import annotations

from urllib.parse import quote

from services.files import domain
from services.files.handlers import Files
from services.files.links import PATH_PREFIX
from suuupra_runtime.http_endpoint import HttpRequest, HttpRequestHandler, HttpResponse

_NOT_FOUND = HttpResponse(404, body=b"not found\n")


def _disposition(name: str) -> str:
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def download_route(files: Files) -> tuple[str, HttpRequestHandler]:
    async def handle(request: HttpRequest) -> HttpResponse:
        if request.method not in {"GET", "HEAD"}:
            return HttpResponse(405, body=b"method not allowed\n")
        token = request.path.removeprefix(PATH_PREFIX)
        if not token or "/" in token:
            return _NOT_FOUND
        download = await files.resolve_link(token)
        if download is None:
            return _NOT_FOUND
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Disposition": _disposition(download.file.name),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=60",
            "ETag": f'"{download.file.sha256}"',
        }
        try:
            wanted = domain.http_range(request.headers.get("range"), download.size)
        except domain.RangeNotSatisfiableError:
            return HttpResponse(
                416, headers={**headers, "Content-Range": f"bytes */{download.size}"}
            )
        status = 200
        if wanted is not None:
            status = 206
            headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{download.size}"
            download = type(download)(
                download.file, download.key, wanted, download.size, download.content_type
            )
        return HttpResponse(
            status,
            content_type=download.content_type,
            headers=headers,
            # HEAD too: the endpoint sends only the headers and closes the unstarted stream.
            stream=files.read(download),
            stream_length=download.range.length,
        )

    return "/files/", handle
