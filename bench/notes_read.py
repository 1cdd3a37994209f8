# mypy: disable-error-code="import-untyped"
"""Notes read throughput: `GetNote` by a grantee (bearer token, access check, the note-with-access
query) through the notes service vs a bare grpc.aio `NoteService.GetNote` running the same SQL on
a raw asyncpg pool (no interceptors, no auth). Both servers pinned to CPU 0, the load generator
to CPU 1, the same PostgreSQL for both.

    PYTHONPATH=.:gen .venv/bin/python bench/notes_read.py [--rounds 3] [--seconds 3]

Alternating rounds, median quoted; results in bench/results/notes_read.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.server
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

import asyncpg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from suuupra.notes.v1 import note_pb2  # noqa: E402
from suuupra.notes.v1 import notes_service_pb2 as pb  # noqa: E402
from suuupra.notes.v1 import notes_service_pb2_grpc as rpc  # noqa: E402

from bench.identity_common import (  # noqa: E402
    CLIENT_CPU,
    RESULTS,
    _pinned,
    infrastructure,
    pin_self,
    wait_serving,
)
from suuupra_runtime.infra import free_port  # noqa: E402

CONCURRENCY = 32
TENANT = "bench-tenant"


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# -- the baseline: bare grpc.aio + the same SQL on raw asyncpg ----------------------------------


class _BareNotes(rpc.NoteServiceServicer):
    def __init__(self, pool: Any, user_id: str) -> None:
        self.pool = pool
        self.user_id = user_id  # no token: the caller is fixed

    async def GetNote(self, request: pb.GetNoteRequest, context: Any) -> pb.GetNoteResponse:  # noqa: N802
        from services.notes.store import NOTE_WITH_ACCESS_SQL

        row = await self.pool.fetchrow(
            NOTE_WITH_ACCESS_SQL, TENANT, uuid.UUID(request.note_id), self.user_id
        )
        note = note_pb2.Note(
            note_id=str(row["note_id"]),
            tenant_id=row["tenant_id"],
            owner_id=row["owner_id"],
            title=row["title"],
            body=row["body"],
            tags=row["tags"],
            version=row["version"],
            etag=f'W/"{row["version"]}"',
            access=note_pb2.NOTE_ACCESS_READ,
        )
        note.create_time.FromDatetime(row["created_at"])
        note.update_time.FromDatetime(row["updated_at"])
        return pb.GetNoteResponse(note=note)


async def _serve_bare(port: int, dsn: str, user_id: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    server = grpc.aio.server()
    rpc.add_NoteServiceServicer_to_server(_BareNotes(pool, user_id), server)  # type: ignore[abstract]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# -- processes ------------------------------------------------------------------------------------


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _jwks_server(jwks: dict[str, Any]) -> Iterator[str]:
    body = json.dumps(jwks).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()


@contextlib.contextmanager
def _notes_process(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        _pinned([sys.executable, "-m", "services.notes"]),
        env={**env, "SUUUPRA_GRPC_ADDR": f"127.0.0.1:{port}"},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(wait_serving(f"127.0.0.1:{port}"))
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)


@contextlib.contextmanager
def _bare_process(dsn: str, user_id: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        _pinned([sys.executable, str(Path(__file__)), "bare", str(port), dsn, user_id]),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)


# -- load -----------------------------------------------------------------------------------------


async def _rate(target: str, note_id: str, token: str, seconds: float) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = rpc.NoteServiceStub(channel)
        request = pb.GetNoteRequest(note_id=note_id)
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        deadline = time.monotonic() + 30
        while True:  # the bare server has no health service: wait for its first answer
            try:
                await stub.GetNote(request, metadata=metadata, timeout=2)
                break
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        for _ in range(50):
            await stub.GetNote(request, metadata=metadata)
        done = 0
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await stub.GetNote(request, metadata=metadata)
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return done / (time.perf_counter() - start)


async def _seed(dsn: str, owner: str, reader: str) -> str:
    """A note of `owner` shared read-only with `reader`, among a few hundred other notes."""
    conn = await asyncpg.connect(dsn)
    try:
        now = dt.datetime.now(dt.UTC)
        rows = [
            (
                uuid.uuid4(),
                TENANT,
                owner,
                f"note {i}",
                "# body\n" + "text " * 200,
                ["bench"],
                1,
                now,
                now,
            )
            for i in range(300)
        ]
        await conn.executemany(
            "INSERT INTO notes (note_id, tenant_id, owner_id, title, body, tags, version, "
            "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            rows,
        )
        note_id = rows[0][0]
        await conn.execute(
            "INSERT INTO note_shares (share_id, tenant_id, note_id, user_id, permission, "
            "created_by, created_at) VALUES ($1, $2, $3, $4, 1, $5, $6)",
            uuid.uuid4(), TENANT, note_id, reader, owner, now,
        )  # fmt: skip
        return str(note_id)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    pin_self(CLIENT_CPU)

    from services.identity.domain import role_permissions
    from services.notes.server import prepare_database
    from suuupra_runtime.testing.tokens import TestIssuer

    issuer = TestIssuer()
    owner, reader = str(uuid.uuid4()), str(uuid.uuid4())
    token = issuer.token(reader, TENANT, roles=["student"], perms=role_permissions(["student"]))
    service_rps: list[float] = []
    bare_rps: list[float] = []
    with infrastructure() as infra, _jwks_server(issuer.jwks) as jwks_url:
        db_name = f"notes_bench_{uuid.uuid4().hex[:8]}"
        os.environ["SUUUPRA_NOTES_DATABASE_NAME"] = db_name
        database_url = asyncio.run(prepare_database(infra.database_url))
        dsn = _plain(database_url)
        note_id = asyncio.run(_seed(dsn, owner, reader))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "gen"))),
            "DATABASE_URL": infra.database_url,
            "NATS_URL": infra.nats_url,
            "SUUUPRA_HTTP_ADDR": f"127.0.0.1:{free_port()}",
            "SUUUPRA_JWKS_URL": jwks_url,
            "SUUUPRA_JWT_ISSUER": issuer.issuer,
            "SUUUPRA_JWT_AUDIENCE": issuer.audience,
            "SUUUPRA_LOG_LEVEL": "WARNING",
            "SUUUPRA_GRACE_SECONDS": "1",
            "SUUUPRA_DRAIN_DELAY_SECONDS": "0",
        }
        with _notes_process(env) as notes, _bare_process(dsn, reader) as bare:
            for _ in range(args.rounds):
                service_rps.append(asyncio.run(_rate(notes, note_id, token, args.seconds)))
                bare_rps.append(asyncio.run(_rate(bare, note_id, "", args.seconds)))
    ratios = [s / b for s, b in zip(service_rps, bare_rps, strict=True)]
    result = {
        "benchmark": "notes_read",
        "rpc": "NoteService/GetNote by a read grantee (bearer token, access check, one query)",
        "baseline": "bare grpc.aio NoteService.GetNote (uvloop, no interceptors) running the "
        "same SQL on a raw asyncpg pool; same CPU pinning, same PostgreSQL",
        "concurrency": CONCURRENCY,
        "rounds": args.rounds,
        "seconds_per_round": args.seconds,
        "notes_rps": service_rps,
        "bare_rps": bare_rps,
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
        "load_average": os.getloadavg(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "notes_read.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "bare":
    import uvloop

    uvloop.run(_serve_bare(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
elif __name__ == "__main__":
    main()
