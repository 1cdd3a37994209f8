"""Pure rules: content sniffing, limits, ranges, link tokens, access decisions."""

from __future__ import annotations

import pytest

from services.files import domain
from services.files.domain import FileFacts, Grantee, Principal, Purpose, UploadRequest
from services.files.links import LinkClaims, LinkSigner
from suuupra_runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 32
EXE = b"MZ\x90\x00" + b"\x00" * 60


def test_content_type_comes_from_the_bytes() -> None:
    assert domain.detect_content_type(PNG) == "image/png"
    assert domain.detect_content_type(b"%PDF-1.7\n...") == "application/pdf"
    assert domain.detect_content_type(EXE) == "application/x-msdownload"
    assert domain.detect_content_type("héllo wörld\n".encode()) == "text/plain"
    assert domain.detect_content_type(b"\x00\x01\x02binary") == "application/octet-stream"
    # A multi-byte character cut at the sniff boundary is still text.
    assert domain.detect_content_type("aé".encode()[:-1]) == "text/plain"


def test_allow_lists_per_purpose() -> None:
    domain.check_content_type(Purpose.AVATAR, "image/png")
    for purpose, content_type in [
        (Purpose.AVATAR, "application/pdf"),
        (Purpose.SUBMISSION, "application/x-msdownload"),
        (Purpose.VIDEO_SOURCE, "image/png"),
        (Purpose.COURSE_MATERIAL, "application/octet-stream"),
    ]:
        with pytest.raises(InvalidArgument) as err:
            domain.check_content_type(purpose, content_type)
        assert err.value.reason == "CONTENT_TYPE_NOT_ALLOWED"


def _req(**kw: object) -> UploadRequest:
    base: dict[str, object] = {
        "name": "a.pdf",
        "purpose": Purpose.SUBMISSION,
        "size_bytes": 10,
        "sha256": "0" * 64,
        "offset": 0,
    }
    base.update(kw)
    return UploadRequest(**base)  # type: ignore[arg-type]


def test_declared_limits_and_names() -> None:
    domain.check_declared(_req())
    with pytest.raises(InvalidArgument) as err:
        domain.check_declared(_req(purpose=Purpose.AVATAR, size_bytes=6 * domain.MiB))
    assert err.value.reason == "FILE_TOO_LARGE"
    for bad in ("../etc/passwd", "a\\b", "..", "line\nbreak"):
        with pytest.raises(InvalidArgument):
            domain.check_declared(_req(name=bad))


def test_quota_and_completion_checks() -> None:
    domain.check_quota(90, 100, 10)
    with pytest.raises(ResourceExhausted):
        domain.check_quota(91, 100, 10)
    domain.check_complete(10, "ab", 10, "ab")
    with pytest.raises(InvalidArgument) as err:
        domain.check_complete(10, "ab", 10, "cd")
    assert err.value.reason == "CHECKSUM_MISMATCH"
    with pytest.raises(InvalidArgument) as err:
        domain.check_complete(10, "ab", 9, "ab")
    assert err.value.reason == "SIZE_MISMATCH"


def test_resume_must_match_and_continue_at_the_committed_offset() -> None:
    stored = _req()
    domain.check_resume(stored, _req(offset=4), 4)
    with pytest.raises(FailedPrecondition) as err:
        domain.check_resume(stored, _req(offset=3), 4)
    assert err.value.metadata["committed_offset"] == "4"
    with pytest.raises(InvalidArgument):
        domain.check_resume(stored, _req(sha256="1" * 64, offset=4), 4)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=90-", (90, 10)),
        ("bytes=-5", (95, 5)),
        ("bytes=-500", (0, 100)),
        ("bytes=10-1000", (10, 90)),
        ("bytes=0-1,5-6", None),  # multi-range: whole file
        ("items=0-1", None),
        ("bytes=9-3", None),
    ],
)
def test_http_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    got = domain.http_range(header, 100)
    assert (None if got is None else (got.start, got.length)) == expected


def test_unsatisfiable_ranges() -> None:
    for header in ("bytes=100-", "bytes=-0"):
        with pytest.raises(domain.RangeNotSatisfiableError):
            domain.http_range(header, 100)
    with pytest.raises(InvalidArgument):
        domain.rpc_range(100, 101, 0)
    assert domain.rpc_range(100, 100, 0).length == 0
    assert domain.rpc_range(100, 40, 1000).length == 60


def test_link_tokens_are_signed_and_expire() -> None:
    signer = LinkSigner(b"k" * 32)
    claims = LinkClaims("t", "f", 2, 1, 1_000)
    token = signer.token(claims)
    assert signer.verify(token, 999) == claims
    assert signer.verify(token, 1_000) is None  # expired
    assert LinkSigner(b"x" * 32).verify(token, 999) is None  # other key
    payload, _, signature = token.partition(".")
    assert signer.verify(payload + "." + signature[::-1], 999) is None
    assert signer.verify("garbage", 999) is None
    with pytest.raises(ValueError, match="32 bytes"):
        LinkSigner(b"short")


OWNER = Principal("t1", "u1", is_admin=False, service=None)
FILE = FileFacts("f1", "t1", "u1", None)


def test_access_decisions() -> None:
    stranger = Principal("t1", "u2", is_admin=False, service=None)
    admin = Principal("t1", "u3", is_admin=True, service=None)
    foreign_admin = Principal("t2", "u4", is_admin=True, service=None)
    assert domain.can_read(OWNER, FILE, frozenset())
    assert domain.can_read(admin, FILE, frozenset())
    assert not domain.can_read(foreign_admin, FILE, frozenset({"users/u4"}))
    assert not domain.can_read(stranger, FILE, frozenset())
    assert domain.can_read(stranger, FILE, frozenset({"users/u2"}))
    grader = Principal("t1", "u5", is_admin=False, service="assessment")
    grants = frozenset({"assessment.submission/9"})
    assert domain.can_read(grader, FILE, grants, "assessment.submission/9")
    assert not domain.can_read(grader, FILE, grants, "assessment.submission/8")
    notes = Principal("t1", "u5", is_admin=False, service="notes")
    assert not domain.can_read(notes, FILE, grants, "assessment.submission/9")


def test_who_may_grant() -> None:
    domain.check_can_grant(OWNER, FILE, Grantee("users/u2"))
    with pytest.raises(PermissionDenied):
        domain.check_can_grant(OWNER, FILE, Grantee("assessment.submission/1"))
    via_assessment = Principal("t1", "u1", is_admin=False, service="assessment")
    domain.check_can_grant(via_assessment, FILE, Grantee("assessment.submission/1"))
    other_user = Principal("t1", "u9", is_admin=False, service="assessment")
    with pytest.raises(PermissionDenied):
        domain.check_can_grant(other_user, FILE, Grantee("assessment.submission/1"))
    assert Grantee("assessment.submission/1").service == "assessment"
    assert Grantee("users/u1").user_id == "u1"
