"""Who is calling: the `Caller` of the current RPC, JWT access-token verification, SPIFFE peers.

    from suuupra_runtime.auth import current_caller
    caller = current_caller()          # set by the runtime's interceptor for every RPC
    caller.subject, caller.tenant_id, caller.permissions, caller.spiffe_id

Two kinds of identity reach a service:

* an end user's access token (`authorization: Bearer <JWT>`), verified by `JwtVerifier` against
  identity's JWKS: alg EdDSA (Ed25519) or ES256 only, `kid` required, `iss`/`aud`/`exp`/`iat`/`sub`
  required; claims `tenant`, `roles`, `perms`, `sid`, `jti` fill the `Caller`. Signing keys are
  cached and refetched (at most once per `min_refetch_interval_seconds`) when a token names an
  unknown `kid`, which is how key rotation propagates;
* a calling service's SPIFFE id, taken from the `x-forwarded-client-cert` header (XFCC) that the
  Envoy sidecar sets after verifying the peer's mTLS certificate (`parse_xfcc`). It is trusted only
  because the application binds 127.0.0.1 behind its sidecar, which strips client-sent XFCC.

Verified tokens are cached (bounded LRU keyed by the raw token, `verified_cache_size` entries) so
a client reusing its access token pays one signature check, not one per RPC (an Ed25519 verify
plus claim parsing is the costliest step of an authenticated call). A cache hit is only honoured
while the token's `exp` (plus leeway) is in the future, the signing key is still in the current,
fresh JWKS (so a key withdrawn from identity's JWKS stops its tokens at the next key refresh), and
nothing about the token is re-decided: the cached `Caller` is the one the full check produced.
Rejections are never cached.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt

from suuupra_runtime.errors import Unauthenticated, Unavailable

ALLOWED_ALGORITHMS = frozenset({"EdDSA", "ES256"})
_REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "sub"]


@dataclass(frozen=True)
class Caller:
    """The principal behind one RPC. All fields are None/empty for an anonymous caller."""

    subject: str | None = None
    tenant_id: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    permissions: frozenset[str] = field(default_factory=frozenset)
    session_id: str | None = None
    token_id: str | None = None
    spiffe_id: str | None = None
    # When the user token stops being valid (Unix time; None without one). Streams end there.
    expires_at: float | None = None
    # The verified bearer token, kept only so clients.py can forward it; never log it.
    raw_token: str | None = field(default=None, repr=False)

    @property
    def is_authenticated(self) -> bool:
        """A verified user token or a verified calling service."""
        return self.subject is not None or self.spiffe_id is not None

    @property
    def is_service(self) -> bool:
        return self.spiffe_id is not None

    @property
    def principal(self) -> str:
        """A short label for logs and echo responses: the user subject, else the SPIFFE id."""
        return self.subject or self.spiffe_id or ""


ANONYMOUS = Caller()
_current_caller: ContextVar[Caller] = ContextVar("suuupra_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the RPC being handled (anonymous outside an RPC)."""
    return _current_caller.get()


def set_current_caller(caller: Caller) -> Token[Caller]:
    """Bind `caller` to the current context; returns a token for `reset_current_caller`."""
    return _current_caller.set(caller)


def reset_current_caller(token: Token[Caller]) -> None:
    _current_caller.reset(token)


# --- SPIFFE peer identity from the sidecar -------------------------------------------------


def _split_unquoted(value: str, separator: str) -> list[str]:
    """Split on `separator` outside double quotes (XFCC quotes values holding , ; or =)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"')
    return value


def parse_xfcc(header: str) -> str | None:
    """The SPIFFE id of the immediate peer named in an XFCC header, or None.

    Envoy appends one element per proxy hop (comma separated); the last element describes the
    client the sidecar itself verified. Within it, `URI=` holds the certificate's URI SAN.
    """
    elements = [e for e in _split_unquoted(header, ",") if e.strip()]
    if not elements:
        return None
    for pair in _split_unquoted(elements[-1], ";"):
        key, sep, value = pair.partition("=")
        if sep and key.strip().lower() == "uri":
            uri = _unquote(value)
            if uri.startswith("spiffe://") and len(uri) > len("spiffe://"):
                return uri
    return None


# --- JWT access tokens ----------------------------------------------------------------------


class JwksProvider(Protocol):
    """Source of a JWKS document (`{"keys": [...]}`)."""

    async def fetch(self) -> Mapping[str, Any]: ...


class HttpJwksProvider:
    """Fetches a JWKS over HTTP(S) (identity serves it at `/.well-known/jwks.json`)."""

    def __init__(self, url: str, *, timeout_seconds: float = 5.0) -> None:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in {"http", "https"}:
            raise ValueError(f"JWKS URL must be http(s), got {url!r}")
        self.url = url
        self.timeout_seconds = timeout_seconds

    def _get(self) -> Mapping[str, Any]:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
            document = json.loads(response.read(1 << 20))
        if not isinstance(document, dict):
            raise ValueError("JWKS document is not a JSON object")
        return document

    async def fetch(self) -> Mapping[str, Any]:
        return await asyncio.to_thread(self._get)


def _str_list(value: Any, claim: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Unauthenticated(f"claim {claim!r} must be a list of strings", reason="TOKEN_INVALID")
    return frozenset(value)


def _optional_str(value: Any, claim: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Unauthenticated(f"claim {claim!r} must be a string", reason="TOKEN_INVALID")
    return value


class JwtVerifier:
    """Verifies access tokens against a JWKS: `await verify(token)` → `Caller`.

    Raises `Unauthenticated` for any bad token and `Unavailable` only when no signing keys could
    ever be loaded.
    """

    def __init__(
        self,
        jwks: JwksProvider,
        issuer: str,
        audience: str,
        leeway_seconds: float = 0,
        *,
        max_key_age_seconds: float = 300.0,
        min_refetch_interval_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        verified_cache_size: int = 10_000,
    ) -> None:
        self._jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.leeway_seconds = leeway_seconds
        self._max_key_age = max_key_age_seconds
        self._min_refetch_interval = min_refetch_interval_seconds
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self._wall_clock = wall_clock
        self._cache_size = verified_cache_size
        # raw token -> (caller, kid, exp): tokens that passed every check of `_verify`.
        self._verified: OrderedDict[str, tuple[Caller, str, float]] = OrderedDict()

    async def _refresh(self, *, unknown_kid: bool) -> None:
        async with self._lock:
            now = self._clock()
            if self._fetched_at is not None:
                age = now - self._fetched_at
                if unknown_kid and age < self._min_refetch_interval:
                    return  # rate limit: a flood of bogus kids must not hammer identity
                if not unknown_kid and age < self._max_key_age:
                    return  # another task refreshed while we waited for the lock
            try:
                document = await self._jwks.fetch()
            except Exception as exc:
                if self._keys:
                    return  # keep serving with the keys we have
                raise Unavailable(
                    "signing keys unavailable", 1.0, reason="JWKS_UNAVAILABLE"
                ) from exc
            keys: dict[str, jwt.PyJWK] = {}
            for entry in document.get("keys", []):
                kid = entry.get("kid") if isinstance(entry, dict) else None
                if not isinstance(kid, str):
                    continue
                try:
                    key = jwt.PyJWK(entry)
                except jwt.PyJWTError:
                    continue  # an unsupported key type must not hide the others
                if key.algorithm_name in ALLOWED_ALGORITHMS:
                    keys[kid] = key
            self._keys = keys
            self._fetched_at = now

    async def _key_for(self, kid: str) -> jwt.PyJWK:
        stale = self._fetched_at is None or self._clock() - self._fetched_at >= self._max_key_age
        if stale:
            await self._refresh(unknown_kid=False)
        key = self._keys.get(kid)
        if key is None:
            await self._refresh(unknown_kid=True)
            key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("token signed with an unknown key", reason="TOKEN_UNKNOWN_KEY")
        return key

    def cached(self, token: str) -> Caller | None:
        """The `Caller` of a token that passed the full check and still may (see the module
        docstring); None means `verify` must decide. No await: the per-RPC fast path."""
        entry = self._verified.get(token)
        if entry is None:
            return None
        caller, kid, exp = entry
        fetched_at = self._fetched_at
        if (
            self._wall_clock() >= exp + self.leeway_seconds  # expired since it was cached
            or fetched_at is None
            or self._clock() - fetched_at >= self._max_key_age  # keys due for a refresh
            or kid not in self._keys  # its signing key was withdrawn
        ):
            del self._verified[token]
            return None  # the full check decides (and raises TOKEN_EXPIRED etc.)
        self._verified.move_to_end(token)
        return caller

    async def verify(self, token: str) -> Caller:
        cached = self.cached(token)
        if cached is not None:
            return cached
        caller, kid, exp = await self._verify(token)
        if self._cache_size > 0:
            self._verified[token] = (caller, kid, exp)
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return caller

    async def _verify(self, token: str) -> tuple[Caller, str, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed access token", reason="TOKEN_INVALID") from exc
        alg = header.get("alg")
        kid = header.get("kid")
        if alg not in ALLOWED_ALGORITHMS:
            raise Unauthenticated("token algorithm not accepted", reason="TOKEN_INVALID")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token has no key id", reason="TOKEN_INVALID")
        key = await self._key_for(kid)
        if key.algorithm_name != alg:
            raise Unauthenticated("token algorithm does not match its key", reason="TOKEN_INVALID")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("access token expired", reason="TOKEN_EXPIRED") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid access token", reason="TOKEN_INVALID") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token has no subject", reason="TOKEN_INVALID")
        exp = claims["exp"]  # required, and PyJWT has checked it is a number in the future
        caller = Caller(
            subject=subject,
            tenant_id=_optional_str(claims.get("tenant"), "tenant"),
            roles=_str_list(claims.get("roles"), "roles"),
            permissions=_str_list(claims.get("perms"), "perms"),
            session_id=_optional_str(claims.get("sid"), "sid"),
            token_id=_optional_str(claims.get("jti"), "jti"),
            expires_at=float(exp) + self.leeway_seconds,
            raw_token=token,
        )
        return caller, kid, float(exp)


def bearer_token(authorization: str) -> str:
    """The token of an `authorization: Bearer <token>` value (`Unauthenticated` otherwise)."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("authorization must be 'Bearer <token>'", reason="TOKEN_INVALID")
    return token


__all__ = [
    "ALLOWED_ALGORITHMS",
    "ANONYMOUS",
    "Caller",
    "HttpJwksProvider",
    "JwksProvider",
    "JwtVerifier",
    "bearer_token",
    "current_caller",
    "parse_xfcc",
    "reset_current_caller",
    "set_current_caller",
]
