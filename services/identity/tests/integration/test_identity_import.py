# mypy: disable-error-code="import-untyped"
"""Bulk CSV import of 10,000 rows with bad ones: good rows created, bad rows reported by line,
progress streamed, dry run creates nothing, a repeat with the same request id creates nothing
twice. Plus the 100-user batch create."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import sqlalchemy as sa
from suuupra.identity.v1 import identity_service_pb2 as pb

from services.identity import store
from services.identity.tests.harness import (
    IdentityHarness,
    bearer,
    rid,
    start_harness,
    stop_harness,
)

ROWS = 10_000


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[IdentityHarness]:
    harness = await start_harness(postgres_server_url, nats_url)
    try:
        await harness.bootstrap()
        await harness.create_tenant("bulk")
        yield harness
    finally:
        await stop_harness(harness)


def _csv() -> tuple[bytes, dict[int, str]]:
    """10,000 data rows; every 500th is broken in one of four ways. Returns bad line → field."""
    lines = ["email,display_name,role"]
    bad: dict[int, str] = {}
    for i in range(ROWS):
        line_no = i + 2  # header is line 1
        kind = (i // 500) % 4 if i % 500 == 250 else -1
        if kind == 0:
            lines.append(f"not-an-email-{i},Student {i},")
            bad[line_no] = "email"
        elif kind == 1:
            lines.append(f"s{i}@bulk.test,,")
            bad[line_no] = "display_name"
        elif kind == 2:
            lines.append(f"s{i}@bulk.test,Student {i},tenant_admin")
            bad[line_no] = "role"
        elif kind == 3:
            lines.append(f"s{i - 1}@bulk.test,Duplicate {i},")
            bad[line_no] = "email"
        else:
            lines.append(f"s{i}@bulk.test,Student {i},{'staff' if i % 10 == 0 else ''}")
    return ("\n".join(lines) + "\n").encode(), bad


async def _users_in(h: IdentityHarness, tenant_id: str) -> int:
    async with h.wiring.database.engine.connect() as conn:
        result = await conn.execute(
            sa.select(sa.func.count())
            .select_from(store.users)
            .where(store.users.c.tenant_id == tenant_id)
        )
        return int(result.scalar_one())


async def _run(h: IdentityHarness, request: pb.ImportUsersRequest) -> list[pb.ImportUsersResponse]:
    token = h.tenants["bulk"].admin_token
    stream = h.users.ImportUsers(request, metadata=bearer(token), timeout=180)
    return [message async for message in stream]


async def test_import_ten_thousand_rows(h: IdentityHarness) -> None:
    tenant = h.tenants["bulk"]
    data, bad = _csv()
    before = await _users_in(h, tenant.tenant_id)
    request_id = str(uuid.uuid4())

    dry = await _run(h, pb.ImportUsersRequest(request_id=str(uuid.uuid4()), csv=data, dry_run=True))
    assert dry[-1].done and dry[-1].dry_run
    assert dry[-1].created == ROWS - len(bad) and dry[-1].failed == len(bad)
    assert await _users_in(h, tenant.tenant_id) == before  # dry run wrote nothing

    progress = await _run(h, pb.ImportUsersRequest(request_id=request_id, csv=data))
    assert len(progress) >= 10  # streamed in chunks, not one answer at the end
    processed = [p.rows_processed for p in progress]
    assert processed == sorted(processed)
    final = progress[-1]
    assert final.done and final.rows_total == ROWS
    assert final.created == ROWS - len(bad)
    assert final.failed == len(bad)
    reported = {e.line: e.field for p in progress for e in p.errors}
    assert reported == bad
    assert await _users_in(h, tenant.tenant_id) == before + ROWS - len(bad)

    # The same import again (a client retry): nothing is created twice.
    repeat = await _run(h, pb.ImportUsersRequest(request_id=request_id, csv=data))
    assert repeat[-1].created == 0
    assert repeat[-1].already_imported == ROWS - len(bad)
    assert await _users_in(h, tenant.tenant_id) == before + ROWS - len(bad)

    # Imported users are real: listed with their roles.
    staff = await h.users.ListUsers(
        pb.ListUsersRequest(role="staff", page_size=500), metadata=bearer(tenant.admin_token)
    )
    assert len(staff.users) >= 500 and all("staff" in u.roles for u in staff.users)


async def test_import_rejects_garbage_without_writing(h: IdentityHarness) -> None:
    tenant = h.tenants["bulk"]
    before = await _users_in(h, tenant.tenant_id)
    out = await _run(h, pb.ImportUsersRequest(request_id=rid(), csv=b"\xff\xfe\x00garbage"))
    assert (out[-1].done and out[-1].created == 0 and out[-1].errors == []) or out[0].errors
    assert out[0].errors[0].line == 1
    assert await _users_in(h, tenant.tenant_id) == before


async def test_batch_create_caps_at_100_and_reports_items(h: IdentityHarness) -> None:
    token = bearer(h.tenants["bulk"].admin_token)
    items = [
        pb.BatchCreateUsersItem(email=f"batch{i}@bulk.test", display_name=f"B{i}")
        for i in range(97)
    ] + [
        pb.BatchCreateUsersItem(
            email="withpw@bulk.test", display_name="P", password="violet-harbour-lantern-42"
        ),
        pb.BatchCreateUsersItem(
            email="weakpw@bulk.test", display_name="W", password="password1234"
        ),
        pb.BatchCreateUsersItem(email="nope", display_name="bad"),
    ]
    request = pb.BatchCreateUsersRequest(request_id=rid(), users=items)
    result = await h.users.BatchCreateUsers(request, metadata=token)
    assert sum(1 for r in result.results if r.user.user_id) == 98
    assert [r.index for r in result.results if r.error] == [98, 99]
    assert (await h.login("bulk", "withpw@bulk.test")).tokens.access_token
    assert await h.users.BatchCreateUsers(request, metadata=token) == result  # replay
    too_many = pb.BatchCreateUsersRequest(
        request_id=rid(),
        users=[
            pb.BatchCreateUsersItem(email=f"x{i}@bulk.test", display_name="x") for i in range(101)
        ],
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.users.BatchCreateUsers(too_many, metadata=token)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
