# mypy: disable-error-code="import-untyped"
"""A real files server for integration/contract tests: fresh database, NATS, a temporary data
directory, in-process on loopback, plus tokens and upload helpers."""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from PIL import Image
from suuupra.files.v1 import files_service_pb2 as pb
from suuupra.files.v1 import files_service_pb2_grpc as rpc

from services.files.config import FilesConfig
from services.files.scanning import Scanner
from services.files.server import MIGRATIONS, Wiring, build_wiring
from services.files.storage import ObjectStore
from services.identity.domain import role_permissions
from suuupra_runtime.testing.harness import RunningService, fresh_service_database, running_service
from suuupra_runtime.testing.tokens import TestIssuer, bearer

CHUNK = 1024 * 1024
# A minimal PDF header: enough for content sniffing to say application/pdf.
PDF_HEAD = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"


def pdf_bytes(size: int, seed: int = 0) -> bytes:
    """`size` bytes that sniff as a PDF (header, then pseudo-random filler)."""
    filler = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    return (PDF_HEAD + filler)[:size]


def png_bytes(width: int = 640, height: int = 480) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(out, format="PNG")
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_messages(
    data: bytes,
    *,
    name: str = "notes.pdf",
    purpose: int = 3,
    upload_id: str = "",
    offset: int = 0,
    file_id: str = "",
    declared_size: int | None = None,
    declared_sha256: str | None = None,
    chunk: int = CHUNK,
) -> Iterator[pb.UploadFileRequest]:
    yield pb.UploadFileRequest(
        metadata=pb.UploadMetadata(
            upload_id=upload_id,
            name=name,
            purpose=purpose,  # type: ignore[arg-type]
            size_bytes=len(data) if declared_size is None else declared_size,
            sha256=sha256(data) if declared_sha256 is None else declared_sha256,
            file_id=file_id,
            offset=offset,
        )
    )
    for start in range(offset, len(data), chunk):
        yield pb.UploadFileRequest(chunk=data[start : start + chunk])


@dataclass
class User:
    user_id: str
    tenant_id: str
    token: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)


@dataclass
class FilesHarness:
    wiring: Wiring
    service: RunningService
    issuer: TestIssuer
    data_dir: Path
    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def stub(self) -> rpc.FileServiceStub:
        return rpc.FileServiceStub(self.service.channel)

    def user(self, roles: Sequence[str] = ("student",), *, tenant_id: str | None = None) -> User:
        user_id = str(uuid.uuid4())
        tenant = tenant_id or self.tenant_id
        token = self.issuer.token(user_id, tenant, roles=roles, perms=role_permissions(list(roles)))
        return User(user_id, tenant, token)

    async def upload(self, user: User, data: bytes, **kwargs: Any) -> pb.UploadFileResponse:
        response: pb.UploadFileResponse = await self.stub.UploadFile(
            upload_messages(data, **kwargs), metadata=user.md
        )
        return response

    async def download(self, user: User, file_id: str, **kwargs: Any) -> bytes:
        out = bytearray()
        async for part in self.stub.DownloadFile(
            pb.DownloadFileRequest(file_id=file_id, **kwargs), metadata=user.md
        ):
            out += part.data
        return bytes(out)

    async def counts(self) -> dict[str, int]:
        """Rows per table, to prove a rejected upload stored nothing."""
        out: dict[str, int] = {}
        for table in ("files", "file_versions", "uploads"):
            rows = await self.wiring.database.fetch(f"SELECT count(*) FROM {table}")
            out[table] = int(rows[0][0])
        return out

    def stored_objects(self) -> list[Path]:
        root = self.data_dir / "objects"
        return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []

    def staged(self) -> list[Path]:
        root = self.data_dir / "staging"
        return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_config(data_dir: Path, **overrides: Any) -> FilesConfig:
    base = FilesConfig(data_dir=data_dir, link_key=b"l" * 32, purge_interval_seconds=3600.0)
    return replace(base, **overrides)


test_config.__test__ = False  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def files_harness(
    postgres_server_url: str,
    nats_url: str,
    *,
    objects: ObjectStore | None = None,
    scanner: Scanner | None = None,
    **config: Any,
) -> AsyncIterator[FilesHarness]:
    data_dir = Path(tempfile.mkdtemp(prefix="suuupra-files-test-"))
    issuer = TestIssuer()
    try:
        async with fresh_service_database(postgres_server_url, "files", MIGRATIONS) as url:
            wiring = await build_wiring(
                url, nats_url, test_config(data_dir, **config), objects=objects, scanner=scanner
            )
            async with running_service(wiring.definition, issuer=issuer) as service:
                yield FilesHarness(wiring, service, issuer, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK
