"""ServerSettings from the environment: defaults, overrides, and errors that name the variable."""

from __future__ import annotations

import pytest

from suuupra_runtime.config import ServerSettings


def test_defaults_bind_loopback() -> None:
    settings = ServerSettings.from_env("identity", env={})
    assert settings.grpc_addr.startswith("127.0.0.1:")
    assert settings.http_addr is not None and settings.http_addr.startswith("127.0.0.1:")
    assert settings.max_concurrent_rpcs == 1000
    assert settings.jwks_url is None
    assert settings.error_domain == "identity.suuupra.local"


def test_overrides() -> None:
    settings = ServerSettings.from_env(
        "notes",
        env={
            "SUUUPRA_GRPC_ADDR": "127.0.0.1:17300",
            "SUUUPRA_HTTP_ADDR": "off",
            "SUUUPRA_MAX_CONCURRENT_RPCS": "0",
            "SUUUPRA_MAX_MESSAGE_BYTES": "65536",
            "SUUUPRA_GRACE_SECONDS": "2.5",
            "SUUUPRA_JWKS_URL": "http://127.0.0.1:17104/.well-known/jwks.json",
            "SUUUPRA_LOG_LEVEL": "debug",
        },
    )
    assert settings.grpc_addr == "127.0.0.1:17300"
    assert settings.http_addr is None
    assert settings.max_concurrent_rpcs is None
    assert settings.max_message_bytes == 65536
    assert settings.grace_seconds == 2.5
    assert settings.jwks_url == "http://127.0.0.1:17104/.well-known/jwks.json"
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SUUUPRA_GRPC_ADDR", "no-port"),
        ("SUUUPRA_HTTP_ADDR", "127.0.0.1:http"),
        ("SUUUPRA_MAX_CONCURRENT_RPCS", "many"),
        ("SUUUPRA_MAX_MESSAGE_BYTES", "10"),
        ("SUUUPRA_GRACE_SECONDS", "-1"),
        ("SUUUPRA_LOG_LEVEL", "LOUD"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        ServerSettings.from_env("x", env={name: value})


def test_grpc_poller_batch_flag() -> None:
    assert ServerSettings.from_env("x", env={}).batch_grpc_poller is True
    off = ServerSettings.from_env("x", env={"SUUUPRA_GRPC_POLLER_BATCH": "0"})
    assert off.batch_grpc_poller is False
    with pytest.raises(ValueError, match="SUUUPRA_GRPC_POLLER_BATCH"):
        ServerSettings.from_env("x", env={"SUUUPRA_GRPC_POLLER_BATCH": "sometimes"})
