"""Use cases: load → decide (domain) → commit through a unit of work; bytes via staging/storage.

Upload visibility: bytes are staged, verified (size, SHA-256, content type, scan), moved into the
object store under a key no row references yet, and only then does one transaction reserve quota,
insert the file/version rows, complete the upload and queue `FileStored`. Any failure before that
commit leaves no row, no reserved quota and (after cleanup) no object.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from services.files import domain, store
from services.files.config import FilesConfig
from services.files.domain import Principal, Purpose, UploadRequest
from services.files.links import PATH_PREFIX, LinkClaims, LinkSigner
from services.files.scanning import PassThroughScanner, Scanner, ScanSubject
from services.files.staging import (
    StagedBytesLostError,
    StagedUpload,
    Staging,
    finish_despite_cancellation,
)
from services.files.storage import ObjectStore, object_key
from services.files.thumbnails import make_thumbnail
from suuupra_runtime.db import Database, UnitOfWork
from suuupra_runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)

log = logging.getLogger(__name__)

VARIANT_ORIGINAL = 1
VARIANT_THUMBNAIL = 2
IN_PROGRESS = "in_progress"
COMPLETED = "completed"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class FileView:
    file_id: str
    tenant_id: str
    owner_id: str
    purpose: int
    name: str
    content_type: str
    size_bytes: int
    sha256: str
    version: int
    current_version: int
    has_thumbnail: bool
    created_by: str
    create_time: dt.datetime
    update_time: dt.datetime
    version_time: dt.datetime


def _view(row: store.VersionRow) -> FileView:
    return FileView(
        file_id=row.file_id,
        tenant_id=row.tenant_id,
        owner_id=row.owner_id,
        purpose=row.purpose,
        name=row.name,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        version=row.version,
        current_version=row.current_version,
        has_thumbnail=row.thumbnail_key is not None,
        created_by=row.created_by,
        create_time=row.file_created_at,
        update_time=row.file_updated_at,
        version_time=row.created_at,
    )


@dataclass(frozen=True)
class UploadStatus:
    upload_id: str
    completed: bool
    committed_offset: int
    size_bytes: int
    file: FileView | None


@dataclass(frozen=True)
class Download:
    file: FileView
    key: str
    range: domain.ByteRange
    size: int
    content_type: str


@dataclass(frozen=True)
class StoredEvent:
    file: FileView
    occurred_at: dt.datetime


@dataclass(frozen=True)
class DeletedEvent:
    tenant_id: str
    file_id: str
    owner_id: str
    purge_time: dt.datetime
    occurred_at: dt.datetime


EventSink = Callable[[UnitOfWork, StoredEvent | DeletedEvent], None]


class _Checkpoints:
    """Saves the committed offset every `every` bytes without pausing the stream: the save runs
    beside it, one at a time (a save still running when the next is due absorbs that one)."""

    def __init__(self, save: Callable[[], Awaitable[None]], every: int, start: int) -> None:
        self._save = save
        self._every = every
        self._last = start
        self._running: asyncio.Task[None] | None = None

    def passed(self, offset: int) -> None:
        if offset - self._last < self._every:
            return
        if self._running is not None and not self._running.done():
            return
        self._last = offset
        self._running = asyncio.ensure_future(self._save())

    async def settle(self) -> None:
        """Wait for the save in progress (even if cancelled meanwhile): saves stay in order."""
        if self._running is not None:
            await finish_despite_cancellation(self._running)
            self._running = None


@dataclass(frozen=True)
class _Upload:
    """One upload call's facts, passed through the steps of receiving it."""

    principal: Principal
    user_id: str
    meta: UploadRequest
    upload_id: str
    target_file_id: str | None

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id


@dataclass(frozen=True)
class _StoredObject:
    content_type: str
    sha256: str
    key: str
    thumbnail_key: str | None
    thumbnail_size: int | None


class Files:
    def __init__(
        self,
        db: Database,
        config: FilesConfig,
        objects: ObjectStore,
        staging: Staging,
        emit: EventSink,
        *,
        scanner: Scanner | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.objects = objects
        self.staging = staging
        self.emit = emit
        self.scanner: Scanner = scanner or PassThroughScanner()
        self.links = LinkSigner(config.link_key)
        # An upload id is streamed by one call at a time; a second concurrent stream waits.
        self._upload_locks: dict[str, tuple[asyncio.Lock, int]] = {}

    # --- upload -----------------------------------------------------------------------------

    async def upload(
        self,
        principal: Principal,
        meta: UploadRequest,
        *,
        upload_id: str | None,
        target_file_id: str | None,
        chunks: AsyncIterator[bytes],
        announce: Callable[[str], Awaitable[None]],
    ) -> tuple[str, FileView]:
        domain.check_declared(meta)
        up = _Upload(
            principal=principal,
            user_id=_require_user(principal),
            meta=meta,
            upload_id=upload_id or str(uuid.uuid4()),
            target_file_id=target_file_id or None,
        )
        # One stream per upload id at a time in this process (a second one waits, then resumes
        # from where the first stopped); entries live only while someone holds or awaits them.
        lock, users = self._upload_locks.get(up.upload_id) or (asyncio.Lock(), 0)
        self._upload_locks[up.upload_id] = (lock, users + 1)
        try:
            async with lock:
                return up.upload_id, await self._upload_locked(up, chunks, announce)
        finally:
            lock, users = self._upload_locks[up.upload_id]
            if users <= 1:
                del self._upload_locks[up.upload_id]
            else:
                self._upload_locks[up.upload_id] = (lock, users - 1)

    async def _upload_locked(
        self,
        up: _Upload,
        chunks: AsyncIterator[bytes],
        announce: Callable[[str], Awaitable[None]],
    ) -> FileView:
        async with self.db.unit_of_work(tenant_id=up.tenant_id) as uow:
            row = await store.get_upload(uow.session, up.tenant_id, up.upload_id)
            if row is None:
                committed = await self._start_upload(uow, up)
            else:
                if row.owner_id != up.user_id:
                    raise NotFound(f"upload {up.upload_id} not found", reason="UPLOAD_NOT_FOUND")
                stored = UploadRequest(
                    name=row.name,
                    purpose=Purpose(row.purpose),
                    size_bytes=int(row.size_bytes),
                    sha256=row.sha256,
                    offset=0,
                )
                if row.state == COMPLETED:
                    # A retry of a finished upload: the same answer, nothing stored twice.
                    domain.check_resume(stored, up.meta, up.meta.offset)
                    version = await store.get_version(
                        uow.session, up.tenant_id, row.file_id, row.version
                    )
                    if version is None:
                        raise NotFound(
                            f"upload {up.upload_id} not found", reason="UPLOAD_NOT_FOUND"
                        )
                    return _view(version)
                if (row.target_file_id or None) != up.target_file_id:
                    raise InvalidArgument(
                        [FieldViolation("metadata.file_id", "differs from the upload resumed")],
                        reason="UPLOAD_MISMATCH",
                    )
                committed = int(row.committed_offset)
                domain.check_resume(stored, up.meta, committed)
        await announce(up.upload_id)
        try:
            staged = await self.staging.open(up.upload_id, committed)
        except StagedBytesLostError:
            # The partial bytes are not here (another replica, a wiped disk): start over.
            async with self.db.unit_of_work(tenant_id=up.tenant_id) as uow:
                await store.set_committed(uow.session, up.tenant_id, up.upload_id, 0, _now())
            await self.staging.discard(up.upload_id)
            raise FailedPrecondition(
                "the partial upload is no longer available; send it again from offset 0",
                reason="UPLOAD_OFFSET_MISMATCH",
                metadata={"committed_offset": "0"},
            ) from None
        try:
            return await self._receive(up, staged, chunks)
        finally:
            await staged.close()

    async def _start_upload(self, uow: UnitOfWork, up: _Upload) -> int:
        """Checks for a new upload, then its session row (committed with offset 0)."""
        if await store.upload_exists(uow.session, up.upload_id):
            raise InvalidArgument(
                [FieldViolation("metadata.upload_id", "is already used")],
                reason="UPLOAD_ID_TAKEN",
            )
        if up.target_file_id:
            await self._check_new_version(uow, up.principal, up.target_file_id, up.meta.purpose)
        if up.meta.offset != 0:
            raise FailedPrecondition(
                "a new upload starts at offset 0",
                reason="UPLOAD_OFFSET_MISMATCH",
                metadata={"committed_offset": "0"},
            )
        limit, used = await store.quota(uow.session, up.tenant_id, self.config.default_quota_bytes)
        domain.check_quota(used, limit, up.meta.size_bytes)
        now = _now()
        await store.insert_upload(
            uow.session,
            {
                "upload_id": up.upload_id,
                "tenant_id": up.tenant_id,
                "owner_id": up.user_id,
                "name": up.meta.name,
                "purpose": int(up.meta.purpose),
                "size_bytes": up.meta.size_bytes,
                "sha256": up.meta.sha256,
                "target_file_id": up.target_file_id,
                "committed_offset": 0,
                "state": IN_PROGRESS,
                "created_at": now,
                "updated_at": now,
            },
        )
        return 0

    async def _check_new_version(
        self, uow: UnitOfWork, principal: Principal, file_id: str, purpose: Purpose
    ) -> None:
        current = await store.get_version(uow.session, principal.tenant_id, file_id)
        if current is None or current.deleted_at is not None:
            raise NotFound(f"file {file_id} not found", reason="FILE_NOT_FOUND")
        if not domain.can_manage(principal, _facts(current)):
            raise PermissionDenied("only the owner or a tenant admin may add versions")
        if current.purpose != purpose:
            raise InvalidArgument(
                [FieldViolation("metadata.purpose", "must match the file's purpose")],
                reason="PURPOSE_MISMATCH",
            )

    async def _receive(
        self, up: _Upload, staged: StagedUpload, chunks: AsyncIterator[bytes]
    ) -> FileView:
        meta = up.meta
        sniff = min(domain.SNIFF_BYTES, meta.size_bytes)
        type_checked = staged.size >= sniff and staged.size > 0
        content_type = ""
        if type_checked:
            content_type = domain.detect_content_type(await staged.read_head(sniff))
        checkpoints = _Checkpoints(
            lambda: self._checkpoint_batched(up, staged), self.config.checkpoint_bytes, staged.size
        )
        try:
            async for chunk in chunks:
                if staged.size + len(chunk) > meta.size_bytes:
                    raise InvalidArgument(
                        [
                            FieldViolation(
                                "metadata.size_bytes",
                                f"declared {meta.size_bytes} bytes, received more",
                            )
                        ],
                        reason="SIZE_MISMATCH",
                    )
                await staged.append(chunk)
                if not type_checked and staged.size >= sniff:
                    # Reject a disallowed type as soon as its magic bytes are in, not at the end.
                    content_type = domain.detect_content_type(await staged.read_head(sniff))
                    domain.check_content_type(meta.purpose, content_type)
                    type_checked = True
                checkpoints.passed(staged.batched)
        except asyncio.CancelledError:
            # The client went away: keep what arrived so the upload can resume from here.
            await checkpoints.settle()
            await self._checkpoint(up, staged)
            raise
        except (InvalidArgument, ResourceExhausted, FailedPrecondition):
            await checkpoints.settle()
            await self._discard(up)
            raise
        except Exception:
            await checkpoints.settle()
            await self._checkpoint(up, staged)
            raise
        await checkpoints.settle()
        if staged.size < meta.size_bytes:
            # The stream ended early (half-closed): durable up to here, resumable.
            await self._checkpoint(up, staged)
            raise FailedPrecondition(
                f"upload incomplete: {staged.size} of {meta.size_bytes} bytes received",
                reason="UPLOAD_INCOMPLETE",
                metadata={"committed_offset": str(staged.size)},
            )
        try:
            return await self._finish(up, staged, content_type)
        except (InvalidArgument, ResourceExhausted, FailedPrecondition, PermissionDenied, NotFound):
            await self._discard(up)
            raise

    async def _checkpoint_batched(self, up: _Upload, staged: StagedUpload) -> None:
        """A checkpoint taken while the stream goes on: durable up to what was handed over."""
        try:
            covered = await staged.sync_batched()
            async with self.db.unit_of_work(tenant_id=up.tenant_id) as uow:
                await store.set_committed(uow.session, up.tenant_id, up.upload_id, covered, _now())
        except Exception:
            log.exception("could not checkpoint upload %s", up.upload_id)

    async def _checkpoint(self, up: _Upload, staged: StagedUpload) -> None:
        await finish_despite_cancellation(self._checkpoint_now(up, staged))

    async def _checkpoint_now(self, up: _Upload, staged: StagedUpload) -> None:
        try:
            await staged.sync()
            async with self.db.unit_of_work(tenant_id=up.tenant_id) as uow:
                await store.set_committed(
                    uow.session, up.tenant_id, up.upload_id, staged.size, _now()
                )
        except Exception:
            log.exception("could not checkpoint upload %s", up.upload_id)

    async def _discard(self, up: _Upload) -> None:
        """Forget a rejected upload entirely: no session row, no staged bytes."""
        async with self.db.unit_of_work(tenant_id=up.tenant_id) as uow:
            await store.delete_upload(uow.session, up.tenant_id, up.upload_id)
        await self.staging.discard(up.upload_id)

    async def _finish(self, up: _Upload, staged: StagedUpload, content_type: str) -> FileView:
        meta = up.meta
        await staged.sync()
        digest = staged.hexdigest()
        domain.check_complete(meta.size_bytes, meta.sha256, staged.size, digest)
        if not content_type:
            content_type = domain.detect_content_type(await staged.read_head(domain.SNIFF_BYTES))
        domain.check_content_type(meta.purpose, content_type)
        verdict = await self.scanner.scan(
            staged.path,
            ScanSubject(up.tenant_id, up.user_id, meta.name, content_type, staged.size, digest),
        )
        if not verdict.clean:
            raise FailedPrecondition(
                f"the file was rejected by the scanner: {verdict.reason or 'unsafe content'}",
                reason="FILE_REJECTED_BY_SCAN",
            )
        thumbnail: bytes | None = None
        if domain.thumbnail_wanted(content_type):
            thumbnail = await asyncio.to_thread(make_thumbnail, staged.path)
        stored = _StoredObject(
            content_type=content_type,
            sha256=digest,
            key=object_key(up.tenant_id, digest),
            thumbnail_key=object_key(up.tenant_id, digest, thumbnail=True) if thumbnail else None,
            thumbnail_size=len(thumbnail) if thumbnail else None,
        )
        await staged.close()
        # Stored before any row names it: invisible until the transaction below commits.
        await self.objects.put_file(stored.key, staged.path)
        if thumbnail is not None and stored.thumbnail_key is not None:
            await self.objects.put_bytes(stored.thumbnail_key, thumbnail)
        try:
            return await self._commit_upload(up, stored)
        except BaseException:
            await self._drop_unreferenced([k for k in (stored.key, stored.thumbnail_key) if k])
            raise

    async def _commit_upload(self, up: _Upload, stored: _StoredObject) -> FileView:
        tenant, meta = up.tenant_id, up.meta
        now = _now()
        async with self.db.unit_of_work(tenant_id=tenant) as uow:
            row = await store.get_upload(uow.session, tenant, up.upload_id, lock=True)
            if row is None or row.state != IN_PROGRESS:
                raise FailedPrecondition(
                    "the upload is no longer in progress", reason="UPLOAD_GONE"
                )
            default_limit = self.config.default_quota_bytes
            if not await store.reserve_quota(uow.session, tenant, default_limit, meta.size_bytes):
                limit, used = await store.quota(uow.session, tenant, default_limit)
                domain.check_quota(used, limit, meta.size_bytes)
            file_id = row.target_file_id
            if file_id:
                locked = await store.lock_file(uow.session, tenant, file_id)
                if locked is None or locked.deleted_at is not None:
                    raise NotFound(f"file {file_id} not found", reason="FILE_NOT_FOUND")
                version = int(locked.current_version) + 1
                await uow.session.execute(
                    store.files.update()
                    .where(store.files.c.file_id == file_id)
                    .values(current_version=version, updated_at=now)
                )
            else:
                file_id = str(uuid.uuid4())
                version = 1
                await uow.session.execute(
                    store.files.insert().values(
                        file_id=file_id,
                        tenant_id=tenant,
                        owner_id=up.user_id,
                        purpose=int(meta.purpose),
                        current_version=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
            await uow.session.execute(
                store.file_versions.insert().values(
                    file_id=file_id,
                    version=version,
                    tenant_id=tenant,
                    name=meta.name,
                    content_type=stored.content_type,
                    size_bytes=meta.size_bytes,
                    sha256=stored.sha256,
                    storage_key=stored.key,
                    thumbnail_key=stored.thumbnail_key,
                    thumbnail_size=stored.thumbnail_size,
                    created_by=up.user_id,
                    created_at=now,
                )
            )
            await uow.session.execute(
                store.uploads.update()
                .where(store.uploads.c.upload_id == up.upload_id)
                .values(
                    state=COMPLETED,
                    committed_offset=meta.size_bytes,
                    file_id=file_id,
                    version=version,
                    updated_at=now,
                )
            )
            written = await store.get_version(uow.session, tenant, file_id, version)
            assert written is not None
            view = _view(written)
            self.emit(uow, StoredEvent(view, now))
        return view

    async def _drop_unreferenced(self, keys: list[str]) -> None:
        with contextlib.suppress(Exception):
            async with self.db.unit_of_work(tenant_id=None) as uow:
                orphans = await store.unreferenced(uow.session, keys)
            for key in orphans:
                await self.objects.delete(key)

    async def upload_status(self, principal: Principal, upload_id: str) -> UploadStatus:
        user_id = _require_user(principal)
        async with self.db.unit_of_work(tenant_id=principal.tenant_id) as uow:
            row = await store.get_upload(uow.session, principal.tenant_id, upload_id)
            if row is None or row.owner_id != user_id:
                raise NotFound(f"upload {upload_id} not found", reason="UPLOAD_NOT_FOUND")
            file = None
            if row.state == COMPLETED:
                version = await store.get_version(
                    uow.session, principal.tenant_id, row.file_id, row.version
                )
                file = _view(version) if version is not None else None
        return UploadStatus(
            upload_id=upload_id,
            completed=row.state == COMPLETED,
            committed_offset=int(row.committed_offset),
            size_bytes=int(row.size_bytes),
            file=file,
        )

    # --- reads ------------------------------------------------------------------------------

    async def _readable(
        self,
        uow: UnitOfWork,
        principal: Principal,
        file_id: str,
        version: int = 0,
        via_resource: str | None = None,
    ) -> store.VersionRow:
        row = await store.get_version(uow.session, principal.tenant_id, file_id, version)
        current = (
            row
            if version == 0
            else await store.get_version(uow.session, principal.tenant_id, file_id)
        )
        if current is None or current.deleted_at is not None:
            raise NotFound(f"file {file_id} not found", reason="FILE_NOT_FOUND")
        grants = await store.grants_of(uow.session, principal.tenant_id, file_id)
        if not domain.can_read(principal, _facts(current), grants, via_resource or None):
            # Same answer as a missing file: no probing for other people's file ids.
            raise NotFound(f"file {file_id} not found", reason="FILE_NOT_FOUND")
        if row is None:
            raise NotFound(
                f"version {version} of file {file_id} not found", reason="VERSION_NOT_FOUND"
            )
        return row

    async def get_file(
        self, principal: Principal, file_id: str, via_resource: str | None = None
    ) -> FileView:
        async with self.db.unit_of_work(tenant_id=principal.tenant_id) as uow:
            return _view(await self._readable(uow, principal, file_id, 0, via_resource))

    async def list_versions(self, principal: Principal, file_id: str) -> list[FileView]:
        async with self.db.unit_of_work(tenant_id=principal.tenant_id) as uow:
            await self._readable(uow, principal, file_id)
            return [
                _view(r)
                for r in await store.list_versions(uow.session, principal.tenant_id, file_id)
            ]

    async def list_files(
        self, principal: Principal, owner_id: str, purpose: int, page_size: int, page_token: str
    ) -> tuple[list[FileView], str]:
        user_id = _require_user(principal) if not principal.is_admin else principal.user_id
        owner = owner_id or user_id or ""
        if owner != user_id and not principal.is_admin:
            raise PermissionDenied("only tenant admins may list other users' files")
        size = page_size or 50
        after = _decode_token(page_token)
        async with self.db.unit_of_work(tenant_id=principal.tenant_id) as uow:
            rows = await store.list_current(
                uow.session,
                tenant_id=principal.tenant_id,
                owner_id=owner,
                purpose=purpose,
                after=after,
                limit=size + 1,
            )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = _encode_token(rows[-1].file_created_at, rows[-1].file_id)
        return [_view(r) for r in rows], token

    async def download(
        self,
        principal: Principal,
        file_id: str,
        *,
        version: int,
        variant: int,
        offset: int,
        length: int,
        via_resource: str | None = None,
    ) -> Download:
        async with self.db.unit_of_work(tenant_id=principal.tenant_id) as uow:
            row = await self._readable(uow, principal, file_id, version, via_resource)
        return self._download_of(row, variant, offset, length)

    def _download_of(
        self, row: store.VersionRow, variant: int, offset: int, length: int
    ) -> Download:
        if variant == VARIANT_THUMBNAIL:
            if row.thumbnail_key is None or row.thumbnail_size is None:
                raise NotFound("this file has no thumbnail", reason="THUMBNAIL_NOT_FOUND")
            key, size, content_type = row.thumbnail_key, int(row.thumbnail_size), "image/webp"
        else:
            key, size, content_type = row.storage_key, row.size_bytes, row.content_type
        return Download(_view(row), key, domain.rpc_range(size, offset, length), size, content_type)

    def read(self, download: Download) -> AsyncIterator[bytes]:
        return self.objects.read(
            download.key,
            download.range.start,
            download.range.length,
            self.config.download_chunk_bytes,
        )

    # --- links ------------------------------------------------------------------------------

    async def create_link(
        self,
        principal: Principal,
        file_id: str,
        *,
        version: int,
        variant: int,
        ttl_seconds: int,
        via_resource: str | None = None,
    ) -> tuple[str, dt.datetime]:
        async with self.db.unit_of_work(tenant_id=principal.tenant_id) as uow:
            row = await self._readable(uow, principal, file_id, version, via_resource)
        self._download_of(row, variant, 0, 0)  # refuses a missing thumbnail now, not at GET
        expires = int(_now().timestamp()) + (ttl_seconds or self.config.link_ttl_seconds)
        token = self.links.token(
            LinkClaims(
                principal.tenant_id, file_id, row.version, variant or VARIANT_ORIGINAL, expires
            )
        )
        return PATH_PREFIX + token, dt.datetime.fromtimestamp(expires, dt.UTC)

    async def resolve_link(self, token: str) -> Download | None:
        """The download a link grants (whole object), or None for a bad/expired link or a file
        deleted since the link was made."""
        claims = self.links.verify(token, _now().timestamp())
        if claims is None:
            return None
        async with self.db.unit_of_work(tenant_id=claims.tenant_id) as uow:
            row = await store.get_version(
                uow.session, claims.tenant_id, claims.file_id, claims.version
            )
        if row is None or row.deleted_at is not None:
            return None
        try:
            return self._download_of(row, claims.variant, 0, 0)
        except NotFound:
            return None

    # --- delete, grants, quota --------------------------------------------------------------

    async def delete(self, uow: UnitOfWork, principal: Principal, file_id: str) -> dt.datetime:
        tenant = principal.tenant_id
        locked = await store.lock_file(uow.session, tenant, file_id)
        if locked is None or locked.deleted_at is not None:
            raise NotFound(f"file {file_id} not found", reason="FILE_NOT_FOUND")
        facts = domain.FileFacts(file_id, tenant, locked.owner_id, None)
        if not domain.can_manage(principal, facts):
            grants = await store.grants_of(uow.session, tenant, file_id)
            if domain.can_read(principal, facts, grants):
                raise PermissionDenied("only the owner or a tenant admin may delete this file")
            raise NotFound(f"file {file_id} not found", reason="FILE_NOT_FOUND")
        now = _now()
        purge = now + dt.timedelta(seconds=self.config.retention_seconds)
        await uow.session.execute(
            store.files.update()
            .where(store.files.c.file_id == file_id)
            .values(deleted_at=now, purge_after=purge, updated_at=now)
        )
        self.emit(uow, DeletedEvent(tenant, file_id, locked.owner_id, purge, now))
        return purge

    async def _grantable(
        self, uow: UnitOfWork, principal: Principal, file_id: str, grantee: str
    ) -> None:
        row = await store.get_version(uow.session, principal.tenant_id, file_id)
        if row is None or row.deleted_at is not None:
            raise NotFound(f"file {file_id} not found", reason="FILE_NOT_FOUND")
        grants = await store.grants_of(uow.session, principal.tenant_id, file_id)
        if not domain.can_read(principal, _facts(row), grants):
            raise NotFound(f"file {file_id} not found", reason="FILE_NOT_FOUND")
        domain.check_can_grant(principal, _facts(row), domain.Grantee(grantee))

    async def grant(
        self, uow: UnitOfWork, principal: Principal, file_id: str, grantee: str
    ) -> None:
        await self._grantable(uow, principal, file_id, grantee)
        await store.add_grant(
            uow.session,
            principal.tenant_id,
            file_id,
            grantee,
            by=principal.user_id or principal.service or "",
            now=_now(),
        )

    async def revoke(
        self, uow: UnitOfWork, principal: Principal, file_id: str, grantee: str
    ) -> bool:
        await self._grantable(uow, principal, file_id, grantee)
        return await store.remove_grant(uow.session, principal.tenant_id, file_id, grantee)

    async def quota(self, principal: Principal) -> tuple[int, int]:
        async with self.db.unit_of_work(tenant_id=principal.tenant_id) as uow:
            return await store.quota(
                uow.session, principal.tenant_id, self.config.default_quota_bytes
            )

    async def set_quota(self, uow: UnitOfWork, principal: Principal, limit: int) -> tuple[int, int]:
        return await store.set_quota(
            uow.session, principal.tenant_id, self.config.default_quota_bytes, limit
        )

    # --- background -------------------------------------------------------------------------

    async def purge_due(self, batch: int = 100) -> int:
        """Purge soft-deleted files past retention and expired partial uploads; returns files
        purged. Rows go first (one transaction, quota released), then unreferenced objects."""
        now = _now()
        purged = 0
        keys: list[str] = []
        async with self.db.unit_of_work(tenant_id=None) as uow:
            for row in await store.due_for_purge(uow.session, now, batch):
                released, file_keys = await store.purge_file(
                    uow.session, row.tenant_id, row.file_id
                )
                await store.release_quota(uow.session, row.tenant_id, released)
                keys += file_keys
                purged += 1
            stale = await store.stale_uploads(
                uow.session, now - dt.timedelta(seconds=self.config.upload_expiry_seconds), batch
            )
            for upload in stale:
                await store.delete_upload(uow.session, upload.tenant_id, upload.upload_id)
        for upload in stale:
            await self.staging.discard(upload.upload_id)
        if keys:
            async with self.db.unit_of_work(tenant_id=None) as uow:
                orphans = await store.unreferenced(uow.session, keys)
            for key in orphans:
                await self.objects.delete(key)
        return purged

    async def purge_forever(self) -> None:
        while True:
            try:
                await self.purge_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("purge pass failed; retrying later")
            await asyncio.sleep(self.config.purge_interval_seconds)


def _facts(row: store.VersionRow) -> domain.FileFacts:
    return domain.FileFacts(row.file_id, row.tenant_id, row.owner_id, row.deleted_at)


def _require_user(principal: Principal) -> str:
    if principal.user_id is None:
        raise PermissionDenied("this call needs a user (an access token)", reason="USER_REQUIRED")
    return principal.user_id


def _encode_token(created: dt.datetime, file_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created.isoformat()}|{file_id}".encode()).decode()


def _decode_token(token: str) -> tuple[dt.datetime, str] | None:
    if not token:
        return None
    try:
        created, _, file_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return dt.datetime.fromisoformat(created), file_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            [FieldViolation("page_token", "is not a token this service issued")],
            reason="INVALID_PAGE_TOKEN",
        ) from exc


__all__ = ["Download", "FileView", "Files", "UploadStatus"]
