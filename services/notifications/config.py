"""Notifications settings from the environment.

Secrets have public development defaults (they are in this file), so production must set:

- `SUUUPRA_IDENTITY_DELIVERY_KEY` (+ `_KEY_ID`): the key identity seals reset/verification
  tokens with (base64 of 32 bytes; the same value identity has).
- `SUUUPRA_NOTIFICATIONS_SIGNING_KEY`: base64 of 32 random bytes; signs unsubscribe links.

Mail goes to `SUUUPRA_SMTP_ADDR` (host:port; the dev sink by default) with
`SUUUPRA_SMTP_SECURITY` (tls | starttls | none; by default tls on 465, starttls on 587),
`SUUUPRA_SMTP_USERNAME` / `SUUUPRA_SMTP_PASSWORD` for the relay's AUTH and `SUUUPRA_SMTP_CA_FILE`
for a relay whose certificate a private CA signed.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.notifications.domain import RetryPolicy

log = logging.getLogger(__name__)

# Identity derives its public dev default for the delivery key the same way.
_DEV_DELIVERY = base64.b64encode(hashlib.sha256(b"suuupra-dev-delivery-key").digest()).decode()
_DEV_SIGNING = base64.b64encode(hashlib.sha256(b"suuupra-dev-unsubscribe-key").digest()).decode()


def _key(env: Mapping[str, str], name: str, default: str) -> bytes:
    raw = env.get(name)
    if not raw:
        log.warning("%s not set: using the public development default (never in production)", name)
        raw = default
    key = base64.b64decode(raw)
    if len(key) != 32:
        raise ValueError(f"{name} must be base64 of exactly 32 bytes")
    return key


def smtp_security_for(port: int) -> str:
    """The usual security of an SMTP port: implicit TLS on 465, STARTTLS on submission (587)."""
    return {465: "tls", 587: "starttls"}.get(port, "none")


@dataclass(frozen=True)
class NotificationsConfig:
    delivery_key_id: str = "dev"
    delivery_key: bytes = field(default=b"\1" * 32, repr=False)
    signing_key: bytes = field(default=b"\2" * 32, repr=False)
    # SMTP server mail is handed to (the dev platform's sink by default).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 17425
    # "tls" (465), "starttls" (587) or "none"; `smtp_security_for` picks by port when unset.
    smtp_security: str = "none"
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_ca_file: str = ""  # a private relay's CA bundle; default: the system's
    mail_from: str = "Suuupra <no-reply@suuupra.local>"
    # Twilio-compatible SMS API and FCM-like push API; unset = channel not configured.
    sms_api_url: str = ""
    sms_account_sid: str = "ACdev"
    sms_auth_token: str = field(default="dev", repr=False)
    sms_from: str = "+15550000000"
    push_api_url: str = ""
    push_project: str = "suuupra-dev"
    push_access_token: str = field(default="dev", repr=False)
    # Links in messages: the web app (verify/reset pages) and this service's public HTTP base.
    app_url: str = "http://localhost:5173"
    public_url: str = "http://127.0.0.1:17164"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    worker_batch: int = 50
    worker_concurrency: int = 16
    poll_interval_seconds: float = 1.0
    lease_seconds: float = 120.0
    keepalive_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotificationsConfig:
        e = os.environ if env is None else env
        smtp = e.get("SUUUPRA_SMTP_ADDR", f"{cls.smtp_host}:{cls.smtp_port}")
        host, _, port = smtp.rpartition(":")
        return cls(
            delivery_key_id=e.get("SUUUPRA_IDENTITY_DELIVERY_KEY_ID", "dev"),
            delivery_key=_key(e, "SUUUPRA_IDENTITY_DELIVERY_KEY", _DEV_DELIVERY),
            signing_key=_key(e, "SUUUPRA_NOTIFICATIONS_SIGNING_KEY", _DEV_SIGNING),
            smtp_host=host or cls.smtp_host,
            smtp_port=int(port),
            smtp_security=e.get("SUUUPRA_SMTP_SECURITY") or smtp_security_for(int(port)),
            smtp_username=e.get("SUUUPRA_SMTP_USERNAME", ""),
            smtp_password=e.get("SUUUPRA_SMTP_PASSWORD", ""),
            smtp_ca_file=e.get("SUUUPRA_SMTP_CA_FILE", ""),
            mail_from=e.get("SUUUPRA_NOTIFICATIONS_MAIL_FROM", cls.mail_from),
            sms_api_url=e.get("SUUUPRA_NOTIFICATIONS_SMS_API_URL", ""),
            sms_account_sid=e.get("SUUUPRA_NOTIFICATIONS_SMS_ACCOUNT_SID", cls.sms_account_sid),
            sms_auth_token=e.get("SUUUPRA_NOTIFICATIONS_SMS_AUTH_TOKEN", cls.sms_auth_token),
            sms_from=e.get("SUUUPRA_NOTIFICATIONS_SMS_FROM", cls.sms_from),
            push_api_url=e.get("SUUUPRA_NOTIFICATIONS_PUSH_API_URL", ""),
            push_project=e.get("SUUUPRA_NOTIFICATIONS_PUSH_PROJECT", cls.push_project),
            push_access_token=e.get(
                "SUUUPRA_NOTIFICATIONS_PUSH_ACCESS_TOKEN", cls.push_access_token
            ),
            app_url=e.get("SUUUPRA_NOTIFICATIONS_APP_URL", cls.app_url).rstrip("/"),
            # Links in mails: our own setting, else the platform's public address (the edge
            # routes our http_paths), else our HTTP port (a service run alone).
            public_url=(
                e.get("SUUUPRA_NOTIFICATIONS_PUBLIC_URL")
                or e.get("SUUUPRA_PUBLIC_URL")
                or "http://" + (e.get("SUUUPRA_HTTP_ADDR") or "127.0.0.1:17164")
            ).rstrip("/"),
        )
