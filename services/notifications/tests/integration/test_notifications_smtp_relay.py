# mypy: disable-error-code="import-untyped"
"""Mail through a relay like production's: STARTTLS on submission or implicit TLS, AUTH, the
relay's certificate verified. A relay that does not offer the upgrade, a certificate nobody we
trust signed, or wrong credentials never carry a message in clear or unauthenticated."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.notifications.config import NotificationsConfig
from services.notifications.providers import OutgoingMessage, TransientFailure
from services.notifications.providers.email import SmtpEmail
from suuupra_runtime.infra import free_port

USER, PASSWORD = "mailer", "s3cret-relay-password"
MESSAGE = OutgoingMessage(address="ada@college.test", subject="Graded", body="Your grade is in.")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "relay.pem", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Inbox:
    def __init__(self) -> None:
        self.mails: list[Any] = []

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((session.authenticated, envelope))
        return "250 OK"


def _authenticate(_server: Any, _session: Any, _envelope: Any, _mech: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    cert_path, key_path = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return cert_path, context


def _relay(inbox: _Inbox, context: ssl.SSLContext, *, implicit: bool) -> Iterator[int]:
    port = free_port()
    tls: dict[str, Any] = {"ssl_context": context} if implicit else {"tls_context": context}
    # aiosmtpd only counts a STARTTLS upgrade as TLS for `auth_require_tls`; with implicit TLS
    # every byte is encrypted anyway.
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_require_tls=not implicit,
        require_starttls=not implicit,
        **tls,
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def submission(certificate: tuple[Path, ssl.SSLContext]) -> Iterator[tuple[_Inbox, int]]:
    inbox = _Inbox()
    for port in _relay(inbox, certificate[1], implicit=False):
        yield inbox, port


async def test_starttls_with_auth_delivers_after_the_upgrade(
    submission: tuple[_Inbox, int], certificate: tuple[Path, ssl.SSLContext]
) -> None:
    inbox, port = submission
    mail = SmtpEmail(
        "127.0.0.1", port, "no-reply@college.test", security="starttls",
        username=USER, password=PASSWORD, ca_file=str(certificate[0]),
    )  # fmt: skip
    await mail.send(MESSAGE)
    [(authenticated, envelope)] = inbox.mails
    assert authenticated and envelope.rcpt_tos == ["ada@college.test"]
    assert b"Your grade is in." in envelope.content


async def test_wrong_credentials_untrusted_certificates_and_cleartext_carry_nothing(
    submission: tuple[_Inbox, int], certificate: tuple[Path, ssl.SSLContext]
) -> None:
    inbox, port = submission
    ca = str(certificate[0])
    attempts = [
        # wrong password: retried later (an operator's fix), never sent unauthenticated
        SmtpEmail("127.0.0.1", port, "n@c.test", security="starttls", username=USER,
                  password="wrong", ca_file=ca),
        # the relay's certificate is not signed by anyone we trust (system CAs only)
        SmtpEmail("127.0.0.1", port, "n@c.test", security="starttls", username=USER,
                  password=PASSWORD),
        # no upgrade: the relay refuses mail before STARTTLS
        SmtpEmail("127.0.0.1", port, "n@c.test", security="none"),
    ]  # fmt: skip
    for mail in attempts:
        with pytest.raises(TransientFailure):
            await mail.send(MESSAGE)
    assert inbox.mails == []


async def test_implicit_tls_on_its_own_port(certificate: tuple[Path, ssl.SSLContext]) -> None:
    inbox = _Inbox()
    for port in _relay(inbox, certificate[1], implicit=True):
        mail = SmtpEmail(
            "127.0.0.1", port, "n@c.test", security="tls",
            username=USER, password=PASSWORD, ca_file=str(certificate[0]),
        )  # fmt: skip
        await mail.send(MESSAGE)
    assert len(inbox.mails) == 1 and inbox.mails[0][0]


def test_settings_pick_the_port_s_usual_security_unless_told() -> None:
    assert NotificationsConfig.from_env({"SUUUPRA_SMTP_ADDR": "smtp.test:587"}).smtp_security == (
        "starttls"
    )
    assert NotificationsConfig.from_env({"SUUUPRA_SMTP_ADDR": "smtp.test:465"}).smtp_security == (
        "tls"
    )
    assert NotificationsConfig.from_env({}).smtp_security == "none"  # the dev sink
    told = NotificationsConfig.from_env(
        {"SUUUPRA_SMTP_ADDR": "relay.internal:2525", "SUUUPRA_SMTP_SECURITY": "starttls",
         "SUUUPRA_SMTP_USERNAME": USER, "SUUUPRA_SMTP_PASSWORD": PASSWORD}
    )  # fmt: skip
    assert (told.smtp_security, told.smtp_username) == ("starttls", USER)
    assert PASSWORD not in repr(told)
    with pytest.raises(ValueError, match="SMTP security"):
        SmtpEmail("h", 25, "n@c.test", security="maybe")
