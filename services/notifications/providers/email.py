"""Email over SMTP (aiosmtplib): the dev platform's sink, or any SMTP relay."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from services.notifications.providers import OutgoingMessage, PermanentFailure, TransientFailure

# SMTP replies that say the address itself is bad (a bounce), as opposed to policy/size/etc.
_BOUNCE_CODES = frozenset({550, 551, 553})


class SmtpEmail:
    def __init__(self, host: str, port: int, sender: str, *, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.sender = sender
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
                mail, hostname=self.host, port=self.port, timeout=self.timeout, start_tls=False
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = {r.code for r in exc.recipients}
            detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            if all(code >= 500 for code in codes):
                raise PermanentFailure(f"recipient refused: {detail}", bounced=True) from None
            raise TransientFailure(f"recipient deferred: {detail}") from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise PermanentFailure(
                    f"SMTP {exc.code} {exc.message}", bounced=exc.code in _BOUNCE_CODES
                ) from None
            raise TransientFailure(f"SMTP {exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientFailure(
                f"SMTP server unreachable: {type(exc).__name__}: {exc}"
            ) from None
        return str(mail["Message-ID"])
