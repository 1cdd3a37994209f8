"""Pure helpers of the data layer: payload fingerprints, tenant scoping, URLs, event headers."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Column, MetaData, Table, Text, delete, select
from sqlalchemy.dialects.postgresql.base import PGDialect
from suuupra.testing.v1.echo_service_pb2 import CreateNoteRequest

from suuupra_runtime.db import normalize_url, service_database_url, tenant_scoped
from suuupra_runtime.events.headers import outbound_headers, rfc3339
from suuupra_runtime.idempotency import payload_fingerprint

notes = Table("notes", MetaData(), Column("id", Text), Column("tenant_id", Text))


def test_fingerprint_ignores_request_id_but_not_payload() -> None:
    a = payload_fingerprint(CreateNoteRequest(request_id="1", title="t"))
    b = payload_fingerprint(CreateNoteRequest(request_id="2", title="t"))
    c = payload_fingerprint(CreateNoteRequest(request_id="1", title="u"))
    assert a == b != c and len(a) == 32


def test_tenant_scoped_adds_the_tenant_filter() -> None:
    dialect = PGDialect()  # type: ignore[no-untyped-call]
    stmt = tenant_scoped(select(notes), notes, "t1")
    sql = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    assert "WHERE notes.tenant_id = 't1'" in sql
    assert "notes.tenant_id" in str(tenant_scoped(delete(notes), notes, "t1"))


@pytest.mark.parametrize("tenant", [None, ""])
def test_tenant_scoped_refuses_a_missing_tenant(tenant: str | None) -> None:
    with pytest.raises(ValueError, match="without a tenant"):
        tenant_scoped(select(notes), notes, tenant)


def test_urls_are_normalised_to_asyncpg() -> None:
    assert normalize_url("postgres://u:p@h:5/db") == "postgresql+asyncpg://u:p@h:5/db"
    assert normalize_url("postgresql://h/db") == "postgresql+asyncpg://h/db"
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        normalize_url("mysql://h/db")


def test_service_database_url_swaps_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://admin:pw@db:5432/postgres")
    assert service_database_url("upi-switch") == "postgresql+asyncpg://admin:pw@db:5432/upi_switch"
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(RuntimeError, match="DATABASE_URL"):
        service_database_url("identity")


def test_outbound_headers_pass_trace_context_through() -> None:
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = outbound_headers(
        event_type="suuupra.x.v1.Y",
        event_id="e1",
        tenant_id=None,
        occurred_at=moment,
        key="k",
        inherited={"traceparent": parent, "unrelated": "dropped"},
    )
    assert headers == {
        "Suuupra-Event-Type": "suuupra.x.v1.Y",
        "Suuupra-Event-Id": "e1",
        "Suuupra-Tenant": "",
        "Suuupra-Occurred-At": "2026-01-02T03:04:05.000000Z",
        "Suuupra-Event-Key": "k",
        "traceparent": parent,
    }
    assert rfc3339(moment) == "2026-01-02T03:04:05.000000Z"
