"""Data-layer cost: the runtime's DB path vs the same SQL on raw asyncpg (DESIGN.md §9).

What a DB-backed RPC handler does, without the gRPC transport (measured elsewhere):
- `point_read`: one primary-key SELECT through a pooled `AsyncSession`, and through the hot-path
  `Database.fetchrow` (raw asyncpg on a pooled connection), each vs `asyncpg` `fetchrow` on one
  dedicated connection;
- `idempotent_write`: `run_idempotent` (unit of work: key claim, INSERT, stored response,
  outbox event, commit) vs the same INSERT in a raw asyncpg transaction (the baseline does less:
  the ratio is the full price of exactly-once writes plus the transactional outbox).

An embedded PostgreSQL (pinned to the last core) and this process (pinned to the first) run in the
same benchmark; several alternating rounds, the median ratio is reported and written as JSON:

    PYTHONPATH=.:gen .venv/bin/python -m bench.db_rpc --rounds 5 --ops 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text
from suuupra.testing.v1.echo_service_pb2 import CreateNoteRequest, CreateNoteResponse

from suuupra_runtime.db import Database, UnitOfWork, migrate
from suuupra_runtime.idempotency import run_idempotent
from suuupra_runtime.infra import EmbeddedPostgres, free_port
from suuupra_runtime.testing.postgres import create_database

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "tests" / "runtime" / "integration" / "service_migrations"
RESULTS = ROOT / "bench" / "results" / "db_rpc.json"


async def _timed(ops: int, one: Callable[[int], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    for i in range(ops):
        await one(i)
    return ops / (time.perf_counter() - start)


async def _round(db: Database, raw: Any, ops: int) -> dict[str, float]:
    async def runtime_read(i: int) -> None:
        async with db.sessions() as session:
            await session.execute(text("SELECT id, title FROM notes WHERE id = :id"), {"id": "n1"})

    async def runtime_fast_read(i: int) -> None:
        await db.fetchrow("SELECT id, title FROM notes WHERE id = $1", "n1")

    async def raw_read(i: int) -> None:
        await raw.fetchrow("SELECT id, title FROM notes WHERE id = $1", "n1")

    async def runtime_write(i: int) -> None:
        request = CreateNoteRequest(request_id=str(uuid.uuid4()), title="bench")

        async def work(uow: UnitOfWork) -> CreateNoteResponse:
            note_id = uuid.uuid4().hex
            await uow.session.execute(
                text("INSERT INTO notes (id, tenant_id, title) VALUES (:id, 't', :title)"),
                {"id": note_id, "title": request.title},
            )
            uow.add_event(CreateNoteResponse(note_id=note_id, title=request.title))
            return CreateNoteResponse(note_id=note_id, title=request.title)

        await run_idempotent(
            db, tenant_id="t", method="/bench/Create", request=request,
            response_type=CreateNoteResponse, work=work,
        )  # fmt: skip

    async def raw_write(i: int) -> None:
        async with raw.transaction():
            await raw.execute(
                "INSERT INTO notes (id, tenant_id, title) VALUES ($1, 't', $2)",
                uuid.uuid4().hex,
                "bench",
            )

    result: dict[str, float] = {}
    # Alternate baseline and subject inside the round so drift hits both alike.
    result["raw_read_ops"] = await _timed(ops, raw_read)
    result["runtime_read_ops"] = await _timed(ops, runtime_read)
    result["runtime_fetchrow_ops"] = await _timed(ops, runtime_fast_read)
    result["raw_write_ops"] = await _timed(ops // 4, raw_write)
    result["runtime_write_ops"] = await _timed(ops // 4, runtime_write)
    return result


async def _main(rounds: int, ops: int, server_url: str) -> dict[str, Any]:
    url = await create_database(server_url, prefix="bench")
    await migrate(url, MIGRATIONS)
    db = await Database.connect(url, pool_size=2)
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    raw = await asyncpg.connect(dsn)
    await raw.execute("INSERT INTO notes (id, tenant_id, title) VALUES ('n1', 't', 'x')")
    runs = [await _round(db, raw, ops) for _ in range(rounds)]
    await raw.close()
    await db.dispose()
    read_ratio = statistics.median(r["runtime_read_ops"] / r["raw_read_ops"] for r in runs)
    fast_ratio = statistics.median(r["runtime_fetchrow_ops"] / r["raw_read_ops"] for r in runs)
    write_ratio = statistics.median(r["runtime_write_ops"] / r["raw_write_ops"] for r in runs)
    return {
        "benchmark": "db_rpc",
        "rounds": runs,
        "median_ratio_point_read_runtime_vs_asyncpg": round(read_ratio, 3),
        "median_ratio_db_fetchrow_vs_asyncpg": round(fast_ratio, 3),
        "median_ratio_idempotent_write_vs_raw_insert": round(write_ratio, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=2000)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="suuupra-bench-") as directory:
        server = EmbeddedPostgres(Path(directory) / "pg", free_port())
        with server:
            if len(cores) > 1 and server.pid is not None:
                os.sched_setaffinity(server.pid, {cores[-1]})  # backends fork from it: inherited
                os.sched_setaffinity(0, {cores[0]})
            result = asyncio.run(_main(args.rounds, args.ops, server.url))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
