"""Pure notes rules: content checks, update masks, access levels, membership ordering, tokens."""

from __future__ import annotations

import datetime as dt

import pytest

from services.notes import domain
from suuupra_runtime.errors import InvalidArgument
from suuupra_runtime.updates import etag_of

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _content(**kw: object) -> domain.NoteContent:
    base: dict[str, object] = {
        "title": "t",
        "body": "",
        "tags": (),
        "attachment": domain.Attachment(),
    }
    base.update(kw)
    return domain.NoteContent(**base)  # type: ignore[arg-type]


def _fields(exc: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in exc.value.violations]


def test_tags_are_lowercased_and_deduplicated_in_order() -> None:
    assert domain.normalise_tags(["SQL", "graphs", "sql", " Graphs ", ""]) == ("sql", "graphs")


def test_content_checks_name_every_bad_field() -> None:
    with pytest.raises(InvalidArgument) as bad:
        domain.check_content(
            _content(
                title="  ",
                attachment=domain.Attachment(course_id="", lesson_id="l1", video_offset_ms=5),
            )
        )
    assert _fields(bad) == ["title", "attachment.course_id"]
    with pytest.raises(InvalidArgument) as offset_only:
        domain.check_content(
            _content(attachment=domain.Attachment(course_id="c", video_offset_ms=5))
        )
    assert _fields(offset_only) == ["attachment.lesson_id"]
    assert domain.check_content(_content(title=" x ")).title == "x"


def test_update_applies_only_masked_fields() -> None:
    current = _content(title="old", body="old body", tags=("a",))
    sent = _content(title="new", body="", tags=())
    merged = domain.apply_update(current, frozenset({"title"}), sent)
    assert (merged.title, merged.body, merged.tags) == ("new", "old body", ("a",))
    with pytest.raises(InvalidArgument) as blank:
        domain.apply_update(current, frozenset({"title"}), _content(title=""))
    assert _fields(blank) == ["title"]


def test_update_mask_must_name_known_fields() -> None:
    with pytest.raises(InvalidArgument):
        domain.check_update_mask([])
    with pytest.raises(InvalidArgument) as unknown:
        domain.check_update_mask(["title", "owner_id"])
    assert _fields(unknown) == ["update_mask"]
    assert domain.check_update_mask(["body", "tags"]) == {"body", "tags"}


def test_access_levels() -> None:
    assert domain.access_of("ada", "ada", None) is domain.Access.OWNER
    assert domain.access_of("ada", "bob", None) is domain.Access.NONE
    assert domain.access_of("ada", "bob", 1) is domain.Access.READ
    assert domain.access_of("ada", "bob", 2) is domain.Access.EDIT
    assert domain.Access.OWNER > domain.Access.EDIT > domain.Access.READ > domain.Access.NONE


def test_a_late_enrollment_event_never_overrides_a_newer_state() -> None:
    assert domain.supersedes(NOW, None)
    assert domain.supersedes(NOW, NOW)
    assert not domain.supersedes(NOW - dt.timedelta(seconds=1), NOW)


def test_page_tokens_are_bound_to_their_filters() -> None:
    note = domain.Note("n1", "t", "o", _content(), 1, NOW, NOW)
    token = domain.keyset_token(note, "fp-a")
    assert domain.keyset_after(token, "fp-a") == (NOW, "n1")
    assert domain.keyset_after("", "fp-a") is None
    for bad, fp in ((token, "fp-b"), ("garbage", "fp-a"), ("e30", "fp-a")):
        with pytest.raises(InvalidArgument) as err:
            domain.keyset_after(bad, fp)
        assert _fields(err) == ["page_token"]
    assert domain.page_size(0) == domain.DEFAULT_PAGE_SIZE
    assert domain.page_size(1000) == domain.MAX_PAGE_SIZE


def test_etags_follow_the_version() -> None:
    note = domain.Note("n1", "t", "o", _content(), 7, NOW, NOW)
    assert note.etag == etag_of(7) != etag_of(8)
