"""Email over SMTP (aiosmtplib): the dev platform's sink, or any SMTP relay.

`security`: "tls" (implicit TLS, port 465), "starttls" (submission, port 587: the upgrade is
required, never skipped when the server does not offer it) or "none" (the dev sink, a relay on a
trusted network). Certificates are always verified, against `ca_file` when given. With
`username`, the relay's AUTH is used (only over TLS, by aiosmtplib's rules).
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from services.notifications.providers import OutgoingMessage, PermanentFailure, TransientFailure

# SMTP replies that say the address itself is bad (a bounce), as opposed to policy/size/etc.
_BOUNCE_CODES = frozenset({550, 551, 553})
# Replies about *our* session (TLS or authentication required, credentials refused): a setting
# to fix, so the message waits and is retried instead of failing for good.
_SESSION_CODES = frozenset({530, 534, 535, 538})
SECURITY_MODES = ("none", "starttls", "tls")


class SmtpEmail:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        security: str = "none",
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if security not in SECURITY_MODES:
            raise ValueError(f"SMTP security must be one of {SECURITY_MODES}, not {security!r}")
        self.host = host
        self.port = port
        self.sender = sender
        self.security = security
        self.username = username or None
        self._password = password
        self.ca_file = ca_file or None
        self.timeout = timeout

    def build(self, message: OutgoingMessage) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.address
        mail["Subject"] = message.subject
        mail["Message-ID"] = make_msgid(domain="suuupra.local")
        for name, value in message.headers.items():
            mail[name] = value
        mail.set_content(message.body)
        return mail

    async def send(self, message: OutgoingMessage) -> str:
        mail = self.build(message)
        try:
            await aiosmtplib.send(
                mail,
                hostname=self.host,
                port=self.port,
                timeout=self.timeout,
                use_tls=self.security == "tls",
                start_tls=self.security == "starttls",
                validate_certs=True,
                cert_bundle=self.ca_file,
                username=self.username,
                password=self._password if self.username else None,
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Our credentials, not the recipient: retried (and logged) until an operator fixes it.
            raise TransientFailure(
                f"SMTP authentication failed: {exc.code} {exc.message}"
            ) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = {r.code for r in exc.recipients}
            detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            if all(code >= 500 for code in codes):
                raise PermanentFailure(f"recipient refused: {detail}", bounced=True) from None
            raise TransientFailure(f"recipient deferred: {detail}") from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500 and exc.code not in _SESSION_CODES:
                raise PermanentFailure(
                    f"SMTP {exc.code} {exc.message}", bounced=exc.code in _BOUNCE_CODES
                ) from None
            raise TransientFailure(f"SMTP {exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientFailure(
                f"SMTP server unreachable: {type(exc).__name__}: {exc}"
            ) from None
        return str(mail["Message-ID"])
