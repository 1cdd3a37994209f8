# mypy: disable-error-code="import-untyped"
"""SubmitAssignment end to end through the edge and sidecars vs the same handlers called directly.

    PYTHONPATH=.:gen .venv/bin/python bench/assessment_submit.py [--rounds 3] [--seconds 4]

Starts the real platform (`./dev up` on a free port offset, demo data loaded), logs the demo
instructor and students in through the edge (real identity tokens), makes them members of a
bench batch (rows written straight into assessment's enrollment projection: the courses service
is not what is measured), then measures submissions carrying 64 KiB of text (the files service
is not on the platform yet, so no file part) at 16 in-flight calls:

  direct   client → assessment's gRPC port (the same process and handlers, no Envoy)
  edge     client → edge (JWT check, rate limit, buffer) → mTLS → assessment's sidecar → app

in alternating rounds; the median of each is quoted and their ratio is the result. The load
generator is pinned to CPU 1; the platform's processes run where the kernel puts them. The
edge's per-address rate limit (200 rps for this single client) stays on: it caps the edge figure
only if the direct one comes near it, which `failed_calls` would show.

Afterwards every SubmissionCreated event of the run is read back from the ASSESSMENT stream and
compared with the submissions the RPCs returned: lost and duplicated events must both be 0.
Results: bench/results/assessment_submit.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform as host
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import jwt
import nats

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402
from suuupra.assessment.v1 import assessment_events_pb2 as ev  # noqa: E402
from suuupra.assessment.v1 import assessment_resources_pb2 as res  # noqa: E402
from suuupra.assessment.v1 import assessment_service_pb2 as pb  # noqa: E402
from suuupra.assessment.v1 import assessment_service_pb2_grpc as rpc  # noqa: E402
from suuupra.files.v1 import files_service_pb2_grpc as files_rpc  # noqa: E402
from suuupra.identity.v1 import identity_service_pb2 as identity_pb  # noqa: E402
from suuupra.identity.v1 import identity_service_pb2_grpc as identity_rpc  # noqa: E402

from services.files.tests.harness import pdf_bytes, upload_messages  # noqa: E402
from suuupra_runtime.infra.postgres import SUPERUSER  # noqa: E402
from tests.e2e.platform_process import RunningPlatform, start_platform  # noqa: E402
from tools.demo_data import DEMO_INSTRUCTOR, DEMO_STUDENTS, DEMO_TENANT_SLUG  # noqa: E402

CLIENT_CPU = 1
CONCURRENCY = 16
TEXT = "My answer, with the details in the attached PDF."
FILE_BYTES = 65_536
ATTEMPTS = 100  # the contract's maximum per (assignment, student)
RESULTS = ROOT / "bench" / "results" / "assessment_submit.json"


def _ts(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


async def _login(edge: str, email: str, password: str) -> tuple[str, str, str]:
    async with grpc.aio.insecure_channel(edge) as channel:
        reply = await identity_rpc.AuthServiceStub(channel).Login(
            identity_pb.LoginRequest(tenant_slug=DEMO_TENANT_SLUG, email=email, password=password),
            timeout=20,
        )
    token = reply.tokens.access_token
    claims = jwt.decode(token, options={"verify_signature": False})
    return token, str(claims["sub"]), str(claims["tenant"])


async def _enroll(dsn: str, tenant: str, batch: str, members: list[tuple[str, str]]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO batch_members (tenant_id, batch_id, user_id, role, course_id, active)"
            " VALUES ($1, $2, $3, $4, 'bench-course', true) ON CONFLICT DO NOTHING",
            [(tenant, batch, user, role) for user, role in members],
        )
    finally:
        await conn.close()


async def _assignments(target: str, token: str, batch: str, count: int) -> list[str]:
    md = (("authorization", f"Bearer {token}"),)
    now = datetime.now(UTC)
    out = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = rpc.AssignmentServiceStub(channel)
        for i in range(count):
            created = await stub.CreateAssignment(
                pb.CreateAssignmentRequest(
                    request_id=str(uuid.uuid4()),
                    course_id="bench-course",
                    batch_id=batch,
                    title=f"bench {i}",
                    max_points_centi=10_000,
                    submission_types=[res.SUBMISSION_TYPE_TEXT, res.SUBMISSION_TYPE_FILES],
                    allowed_file_types=["application/pdf"],
                    max_attempts=ATTEMPTS,
                    open_time=_ts(now - timedelta(days=1)),
                    due_time=_ts(now + timedelta(days=1)),
                    close_time=_ts(now + timedelta(days=2)),
                ),
                metadata=md,
                timeout=20,
            )
            await stub.PublishAssignment(
                pb.PublishAssignmentRequest(
                    request_id=str(uuid.uuid4()), assignment_id=created.assignment.assignment_id
                ),
                metadata=md,
                timeout=20,
            )
            out.append(created.assignment.assignment_id)
    return out


async def _upload(edge: str, token: str, seed: int) -> str:
    async with grpc.aio.insecure_channel(edge) as channel:
        reply = await files_rpc.FileServiceStub(channel).UploadFile(
            upload_messages(pdf_bytes(FILE_BYTES, seed=seed), name="answer.pdf", purpose=2),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=30,
        )
    return str(reply.file.file_id)


async def _run(
    target: str, students: list[tuple[str, str]], assignments: list[str], seconds: float
) -> tuple[float, list[str], int]:
    """Submissions per second, the ids the service returned, and the failures."""
    slots = iter(
        [(s, a) for a in assignments for s in students for _ in range(ATTEMPTS)]
    )  # every (student, assignment) pair at most ATTEMPTS times
    ids: list[str] = []
    failures = 0
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_send_message_length", 8 << 20)]
    ) as channel:
        stub = rpc.SubmissionServiceStub(channel)
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < stop:
                slot = next(slots, None)
                if slot is None:
                    raise RuntimeError("ran out of attempts: raise the assignment count")
                (token, file_id), assignment = slot
                try:
                    reply = await stub.SubmitAssignment(
                        pb.SubmitAssignmentRequest(
                            request_id=str(uuid.uuid4()),
                            assignment_id=assignment,
                            text=TEXT,
                            file_ids=[file_id],
                        ),
                        metadata=(("authorization", f"Bearer {token}"),),
                        timeout=20,
                    )
                    ids.append(reply.submission.submission_id)
                except grpc.aio.AioRpcError:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return len(ids) / elapsed, ids, failures


async def _stream_submissions(nats_url: str, assignments: set[str], expected: int) -> list[str]:
    """Every SubmissionCreated of these assignments on the stream (waits for the relay)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + 60
        while True:
            sub = await js.pull_subscribe(
                "suuupra.assessment.v1.SubmissionCreated", durable=None, stream="ASSESSMENT"
            )
            seen: list[str] = []
            with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
                while True:
                    for msg in await sub.fetch(500, timeout=1.0):
                        event = ev.SubmissionCreated.FromString(msg.data)
                        if event.assignment_id in assignments:
                            seen.append(event.submission_id)
                        await msg.ack()
            await sub.unsubscribe()
            if len(seen) >= expected or time.monotonic() > deadline:
                return seen
            await asyncio.sleep(1)
    finally:
        await nc.close()


async def _bench(platform: RunningPlatform, rounds: int, seconds: float) -> dict[str, Any]:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {CLIENT_CPU})
    topology = platform.topology
    edge = platform.edge
    direct = f"127.0.0.1:{topology.service('assessment').app_port}"
    instructor, instructor_id, tenant = await _login(
        edge, DEMO_INSTRUCTOR.email, DEMO_INSTRUCTOR.password
    )
    students = [await _login(edge, s.email, s.password) for s in DEMO_STUDENTS]
    batch = f"bench-{uuid.uuid4().hex[:8]}"
    dsn = f"postgresql://{SUPERUSER}@127.0.0.1:{topology.infrastructure.postgres_port}/assessment"
    await _enroll(
        dsn,
        tenant,
        batch,
        [(instructor_id, "instructor"), *((sid, "student") for _, sid, _ in students)],
    )
    tokens = [(t, await _upload(edge, t, seed)) for seed, (t, _, _) in enumerate(students)]
    targets = {"direct": direct, "edge": edge}
    rps: dict[str, list[float]] = {k: [] for k in targets}
    failures: dict[str, int] = dict.fromkeys(targets, 0)
    returned: list[str] = []
    all_assignments: set[str] = set()
    # Capacity per measurement: students x ATTEMPTS x assignments, well above what 4 s can use.
    per_run = max(4, int(seconds * 400 / (len(tokens) * ATTEMPTS)) + 1)
    for warm in targets.values():  # warm connections, caches and code paths
        ids = await _assignments(warm, instructor, batch, 1)
        all_assignments.update(ids)
        _, got, _ = await _run(warm, tokens, ids, 1.0)
        returned += got
    for i in range(rounds):
        order = list(targets) if i % 2 == 0 else list(reversed(targets))
        for name in order:
            ids = await _assignments(targets[name], instructor, batch, per_run)
            all_assignments.update(ids)
            rate, got, failed = await _run(targets[name], tokens, ids, seconds)
            rps[name].append(rate)
            failures[name] += failed
            returned += got
        print(
            f"round {i + 1}: " + ", ".join(f"{n} {rps[n][-1]:.0f}/s" for n in targets), flush=True
        )
    nats_url = f"nats://127.0.0.1:{topology.infrastructure.nats_port}"
    streamed = await _stream_submissions(nats_url, all_assignments, len(returned))
    lost = len(set(returned) - set(streamed))
    duplicated = len(streamed) - len(set(streamed))
    unexpected = len(set(streamed) - set(returned))
    median = {k: statistics.median(v) for k, v in rps.items()}
    return {
        "benchmark": "assessment_submit",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": host.python_version()},
        "load_average_1m": os.getloadavg()[0],
        "payload": "short text + one 64 KiB PDF (files GetFile + GrantAccess per submit)",
        "concurrency": CONCURRENCY,
        "rounds": rounds,
        "seconds_per_round": seconds,
        "rps": {k: [round(x, 1) for x in v] for k, v in rps.items()},
        "median_rps": {k: round(v, 1) for k, v in median.items()},
        "ratio_edge_vs_direct": round(median["edge"] / median["direct"], 3),
        "target_ratio": 0.6,
        "failed_calls": failures,
        "events": {
            "submissions_returned": len(returned),
            "events_on_stream": len(streamed),
            "lost": lost,
            "duplicated": duplicated,
            "unexpected": unexpected,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="suuupra-bench-assessment-") as state:
        running = start_platform(
            Path(state) / "state", extra_args=("--log-level", "warning"), ready_timeout=180
        )
        try:
            result = asyncio.run(_bench(running, args.rounds, args.seconds))
        finally:
            running.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
