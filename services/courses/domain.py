"""Courses domain: content trees, the publish lifecycle, enrollment and progress rules.

Pure Python: no I/O, no proto types. Handlers load state, ask these functions what to do, and
persist the answer.

Content is a tree (modules → lessons → items) kept as one document per course: the draft lives
on the course row and every publish copies it into an immutable version row. A learner's read is
therefore one row of one version, never a mix of two (see docs/courses.md).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from suuupra_runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
)

# ---------------------------------------------------------------------------------------------
# Vocabulary

PERM_ADMINISTER = "courses.courses.administer"
PERM_MANAGE = "courses.courses.manage"
PERM_ENROLLMENTS_MANAGE = "courses.enrollments.manage"
PERM_ENROLLMENTS_READ = "courses.enrollments.read"
PERM_PROGRESS_READ = "courses.progress.read"


class CourseState(enum.StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    ARCHIVED = "archived"


class BatchState(enum.StrEnum):
    SCHEDULED = "scheduled"
    OPEN = "open"
    CLOSED = "closed"


class Role(enum.StrEnum):
    INSTRUCTOR = "instructor"
    TEACHING_ASSISTANT = "teaching_assistant"
    STUDENT = "student"
    OBSERVER = "observer"


class Status(enum.StrEnum):
    ACTIVE = "active"
    WAITLISTED = "waitlisted"
    DROPPED = "dropped"
    WITHDRAWN = "withdrawn"
    COMPLETED = "completed"


#: An enrollment in one of these is "the" enrollment of its user in its batch: the database's
#: partial unique index allows one such row per (tenant, batch, user).
CURRENT_STATUSES = frozenset({Status.ACTIVE, Status.WAITLISTED, Status.COMPLETED})
#: Students in these hold a seat.
SEAT_STATUSES = frozenset({Status.ACTIVE, Status.COMPLETED})
#: Members in these may read the batch's published content.
READER_STATUSES = frozenset({Status.ACTIVE, Status.COMPLETED})
STAFF_ROLES = frozenset({Role.INSTRUCTOR, Role.TEACHING_ASSISTANT})

CONTENT_KINDS = ("article", "video", "document", "quiz", "external_link")


def new_id() -> str:
    return str(uuid.uuid4())


def now_utc() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# Who is acting


@dataclass(frozen=True)
class Actor:
    user_id: str | None
    tenant_id: str | None
    permissions: frozenset[str] = frozenset()
    is_service: bool = False

    @property
    def administers(self) -> bool:
        """Tenant admins (and platform services) act on every course of the tenant."""
        return self.is_service or PERM_ADMINISTER in self.permissions


def resolve_tenant(actor: Actor, requested: str) -> str:
    """The tenant a call acts in. Users act in their token's tenant; services name it."""
    if actor.is_service:
        if not requested:
            raise InvalidArgument(
                [FieldViolation("tenant_id", "service callers must name the tenant")]
            )
        return requested
    if not actor.tenant_id:
        raise PermissionDenied("the caller has no tenant", reason="NO_TENANT")
    if requested and requested != actor.tenant_id:
        raise PermissionDenied(
            "tenant_id may only name the caller's own tenant", reason="OTHER_TENANT"
        )
    return actor.tenant_id


@dataclass(frozen=True)
class CourseAuthority:
    """What the actor is for one course: owner, instructor/TA of one of its batches, admin."""

    administers: bool = False
    owner: bool = False
    roles: frozenset[Role] = frozenset()

    @property
    def can_edit(self) -> bool:
        return self.administers or self.owner or Role.INSTRUCTOR in self.roles

    @property
    def is_staff(self) -> bool:
        """Sees drafts, answer keys, everyone's progress and the statistics."""
        return self.can_edit or Role.TEACHING_ASSISTANT in self.roles


def authority(
    actor: Actor, owner_ids: Iterable[str], staff_roles: Iterable[Role]
) -> CourseAuthority:
    return CourseAuthority(
        administers=actor.administers,
        owner=actor.user_id is not None and actor.user_id in set(owner_ids),
        roles=frozenset(staff_roles),
    )


def require_edit(actor: Actor, auth: CourseAuthority, course_id: str) -> None:
    if PERM_MANAGE not in actor.permissions and not actor.is_service:
        raise PermissionDenied("missing permission courses.courses.manage")
    if not auth.can_edit:
        raise PermissionDenied(
            f"only the owners and instructors of course {course_id} may change it",
            reason="NOT_COURSE_STAFF",
        )


def require_staff(auth: CourseAuthority, what: str) -> None:
    if not auth.is_staff:
        raise PermissionDenied(f"only the course's staff may {what}", reason="NOT_COURSE_STAFF")


# ---------------------------------------------------------------------------------------------
# Courses


@dataclass(frozen=True)
class Department:
    department_id: str
    tenant_id: str
    code: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Course:
    course_id: str
    tenant_id: str
    code: str
    title: str
    description: str
    language: str
    tags: tuple[str, ...]
    department_id: str | None
    owner_ids: tuple[str, ...]
    state: CourseState
    published_version: int
    row_version: int
    created_at: datetime
    updated_at: datetime


def normalize_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Lower-cased, trimmed, de-duplicated, in first-seen order (tags filter the catalog)."""
    out: list[str] = []
    for tag in tags:
        t = tag.strip().lower()
        if t and t not in out:
            out.append(t)
    return tuple(out)


def require_mutable(course: Course) -> None:
    if course.state is CourseState.ARCHIVED:
        raise FailedPrecondition(f"course {course.course_id} is archived", reason="COURSE_ARCHIVED")


# ---------------------------------------------------------------------------------------------
# Content tree


@dataclass(frozen=True)
class Item:
    item_id: str
    title: str
    kind: str
    # Kind-specific fields, JSON-shaped (see `CONTENT_KINDS`); quizzes hold their answer keys.
    body: Mapping[str, Any]


@dataclass(frozen=True)
class Lesson:
    lesson_id: str
    title: str
    prerequisites: tuple[str, ...] = ()
    release_at: datetime | None = None
    items: tuple[Item, ...] = ()


@dataclass(frozen=True)
class Module:
    module_id: str
    title: str
    release_at: datetime | None = None
    lessons: tuple[Lesson, ...] = ()


@dataclass(frozen=True)
class Content:
    modules: tuple[Module, ...] = ()

    def lessons(self) -> list[Lesson]:
        """Every lesson in course order."""
        return [lesson for module in self.modules for lesson in module.lessons]

    def lesson_ids(self) -> list[str]:
        return [lesson.lesson_id for lesson in self.lessons()]

    def find_lesson(self, lesson_id: str) -> tuple[Module, Lesson] | None:
        for module in self.modules:
            for lesson in module.lessons:
                if lesson.lesson_id == lesson_id:
                    return module, lesson
        return None

    def find_item(self, item_id: str) -> tuple[Lesson, Item] | None:
        for lesson in self.lessons():
            for item in lesson.items:
                if item.item_id == item_id:
                    return lesson, item
        return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def content_to_json(content: Content) -> dict[str, Any]:
    return {
        "modules": [
            {
                "id": m.module_id,
                "title": m.title,
                "release": _iso(m.release_at),
                "lessons": [
                    {
                        "id": ls.lesson_id,
                        "title": ls.title,
                        "prereqs": list(ls.prerequisites),
                        "release": _iso(ls.release_at),
                        "items": [
                            {"id": i.item_id, "title": i.title, "kind": i.kind, "body": i.body}
                            for i in ls.items
                        ],
                    }
                    for ls in m.lessons
                ],
            }
            for m in content.modules
        ]
    }


def content_from_json(doc: Mapping[str, Any] | None) -> Content:
    if not doc:
        return Content()
    return Content(
        tuple(
            Module(
                module_id=m["id"],
                title=m["title"],
                release_at=_parse(m.get("release")),
                lessons=tuple(
                    Lesson(
                        lesson_id=ls["id"],
                        title=ls["title"],
                        prerequisites=tuple(ls.get("prereqs", ())),
                        release_at=_parse(ls.get("release")),
                        items=tuple(
                            Item(i["id"], i["title"], i["kind"], i.get("body", {}))
                            for i in ls.get("items", ())
                        ),
                    )
                    for ls in m.get("lessons", ())
                ),
            )
            for m in doc.get("modules", ())
        )
    )


def _replace_module(content: Content, module: Module) -> Content:
    return Content(tuple(module if m.module_id == module.module_id else m for m in content.modules))


def _module_of(content: Content, module_id: str, field_name: str = "module_id") -> Module:
    for module in content.modules:
        if module.module_id == module_id:
            return module
    raise NotFound(f"module {module_id} not found in the draft", reason="MODULE_NOT_FOUND")


def add_module(content: Content, module: Module) -> Content:
    return Content((*content.modules, module))


def _check_prerequisites(content: Content, lesson_id: str, prerequisites: Sequence[str]) -> None:
    known = set(content.lesson_ids())
    bad = [
        FieldViolation(f"prerequisite_lesson_ids[{i}]", "names no lesson of this course")
        for i, p in enumerate(prerequisites)
        if p not in known
    ]
    bad += [
        FieldViolation(f"prerequisite_lesson_ids[{i}]", "a lesson cannot require itself")
        for i, p in enumerate(prerequisites)
        if p == lesson_id
    ]
    if bad:
        raise InvalidArgument(bad)


def _has_cycle(content: Content) -> bool:
    graph = {ls.lesson_id: ls.prerequisites for ls in content.lessons()}
    state: dict[str, int] = {}

    def visit(node: str) -> bool:
        mark = state.get(node)
        if mark == 1:
            return True
        if mark == 2:
            return False
        state[node] = 1
        if any(visit(p) for p in graph.get(node, ()) if p in graph):
            return True
        state[node] = 2
        return False

    return any(visit(node) for node in graph)


def add_lesson(content: Content, module_id: str, lesson: Lesson) -> Content:
    module = _module_of(content, module_id)
    _check_prerequisites(content, lesson.lesson_id, lesson.prerequisites)
    return _replace_module(content, replace(module, lessons=(*module.lessons, lesson)))


def _locate_lesson(content: Content, lesson_id: str) -> tuple[Module, Lesson]:
    found = content.find_lesson(lesson_id)
    if found is None:
        raise NotFound(f"lesson {lesson_id} not found in the draft", reason="LESSON_NOT_FOUND")
    return found


def _replace_lesson(content: Content, lesson: Lesson) -> Content:
    module, _ = _locate_lesson(content, lesson.lesson_id)
    lessons = tuple(lesson if ls.lesson_id == lesson.lesson_id else ls for ls in module.lessons)
    return _replace_module(content, replace(module, lessons=lessons))


def get_lesson(content: Content, lesson_id: str) -> Lesson:
    return _locate_lesson(content, lesson_id)[1]


def _release_time(current: datetime | None, change: datetime | bool | None) -> datetime | None:
    """An update's release time: `False` keeps `current`, None clears it, a datetime sets it."""
    if change is False:
        return current
    return change if isinstance(change, datetime) else None


def update_lesson(
    content: Content,
    lesson_id: str,
    *,
    title: str | None = None,
    prerequisites: Sequence[str] | None = None,
    release_at: datetime | bool | None = False,
) -> tuple[Content, Lesson]:
    """`release_at=False` leaves the release time alone; None clears it."""
    lesson = get_lesson(content, lesson_id)
    if title is not None:
        lesson = replace(lesson, title=title)
    if prerequisites is not None:
        _check_prerequisites(content, lesson_id, prerequisites)
        lesson = replace(lesson, prerequisites=tuple(dict.fromkeys(prerequisites)))
    lesson = replace(lesson, release_at=_release_time(lesson.release_at, release_at))
    updated = _replace_lesson(content, lesson)
    if _has_cycle(updated):
        raise InvalidArgument(
            [FieldViolation("lesson.prerequisite_lesson_ids", "would create a prerequisite cycle")]
        )
    return updated, lesson


def add_item(content: Content, lesson_id: str, item: Item) -> Content:
    lesson = get_lesson(content, lesson_id)
    return _replace_lesson(content, replace(lesson, items=(*lesson.items, item)))


def delete_item(content: Content, item_id: str) -> Content:
    found = content.find_item(item_id)
    if found is None:
        raise NotFound(f"content item {item_id} not found in the draft", reason="ITEM_NOT_FOUND")
    lesson, _ = found
    items = tuple(i for i in lesson.items if i.item_id != item_id)
    return _replace_lesson(content, replace(lesson, items=items))


def _permutation(current: Sequence[str], wanted: Sequence[str], field_name: str) -> None:
    if sorted(current) != sorted(wanted):
        raise InvalidArgument(
            [FieldViolation(field_name, "must list every existing id exactly once")]
        )


def reorder_modules(content: Content, module_ids: Sequence[str]) -> Content:
    _permutation([m.module_id for m in content.modules], module_ids, "module_ids")
    by_id = {m.module_id: m for m in content.modules}
    return Content(tuple(by_id[i] for i in module_ids))


def reorder_lessons(content: Content, module_id: str, lesson_ids: Sequence[str]) -> Module:
    module = _module_of(content, module_id)
    _permutation([ls.lesson_id for ls in module.lessons], lesson_ids, "lesson_ids")
    by_id = {ls.lesson_id: ls for ls in module.lessons}
    return replace(module, lessons=tuple(by_id[i] for i in lesson_ids))


def replace_module(content: Content, module: Module) -> Content:
    return _replace_module(content, module)


def update_module(
    content: Content,
    module_id: str,
    *,
    title: str | None = None,
    release_at: datetime | bool | None = False,
) -> tuple[Content, Module]:
    """`release_at=False` leaves the release time alone; None clears it."""
    module = _module_of(content, module_id)
    if title is not None:
        module = replace(module, title=title)
    module = replace(module, release_at=_release_time(module.release_at, release_at))
    return _replace_module(content, module), module


def _require_not_prerequisite(content: Content, removed: Sequence[Lesson], what: str) -> None:
    """Refuse to remove lessons that surviving lessons still require: dropping the edge would
    silently open gated lessons (and their transitive requirements) to learners at the next
    publish, so the author removes each requirement explicitly first (see docs/courses.md)."""
    gone = {ls.lesson_id: ls for ls in removed}
    violations = [
        PreconditionViolation(
            "PREREQUISITE",
            f"lessons/{dependent.lesson_id}",
            f"lesson {dependent.lesson_id} ({dependent.title!r}) requires lesson "
            f"{prerequisite} ({gone[prerequisite].title!r})",
        )
        for dependent in content.lessons()
        if dependent.lesson_id not in gone
        for prerequisite in dependent.prerequisites
        if prerequisite in gone
    ]
    if violations:
        dependents = list(dict.fromkeys(v.subject.removeprefix("lessons/") for v in violations))
        raise FailedPrecondition(
            f"{what} is a prerequisite of lesson(s) {', '.join(dependents)}; remove it from "
            "their prerequisites first",
            violations,
            reason="LESSON_IS_PREREQUISITE",
            metadata={"dependent_lesson_ids": ",".join(dependents)},
        )


def delete_module(content: Content, module_id: str) -> Content:
    """Remove a module with its lessons and their items."""
    module = _module_of(content, module_id)
    _require_not_prerequisite(content, module.lessons, f"a lesson of module {module_id}")
    return Content(tuple(m for m in content.modules if m.module_id != module_id))


def delete_lesson(content: Content, lesson_id: str) -> Content:
    """Remove a lesson with its items."""
    module, lesson = _locate_lesson(content, lesson_id)
    _require_not_prerequisite(content, [lesson], f"lesson {lesson_id}")
    lessons = tuple(ls for ls in module.lessons if ls.lesson_id != lesson_id)
    return _replace_module(content, replace(module, lessons=lessons))


def move_lesson(content: Content, lesson_id: str, module_id: str, position: int) -> Content:
    """Move a lesson (same id, items, prerequisites) to `position` among `module_id`'s lessons.

    `position` counts the target's lessons without the moved one, so its lesson count appends.
    """
    source, lesson = _locate_lesson(content, lesson_id)
    target = _module_of(content, module_id)
    without = replace(
        source, lessons=tuple(ls for ls in source.lessons if ls.lesson_id != lesson_id)
    )
    content = _replace_module(content, without)
    if target.module_id == source.module_id:
        target = without
    if not 0 <= position <= len(target.lessons):
        raise InvalidArgument(
            [
                FieldViolation(
                    "position", f"must be between 0 and {len(target.lessons)} for this module"
                )
            ]
        )
    lessons = (*target.lessons[:position], lesson, *target.lessons[position:])
    return _replace_module(content, replace(target, lessons=lessons))


def validate_item(kind: str, body: Mapping[str, Any]) -> list[FieldViolation]:
    """Kind-specific rules protovalidate cannot express (answer keys name real choices)."""
    out: list[FieldViolation] = []
    if kind not in CONTENT_KINDS:
        return [FieldViolation("item.body", "one of article, video, document, quiz, external_link")]
    if kind in ("video", "document") and not body.get("file_id"):
        out.append(FieldViolation(f"item.{kind}.file_id", "a files service file id is required"))
    if kind == "external_link":
        url = str(body.get("url", ""))
        if not url.startswith(("https://", "http://")):
            out.append(FieldViolation("item.external_link.url", "must be an http(s) URL"))
    if kind == "quiz":
        questions = body.get("questions", [])
        if not questions:
            out.append(FieldViolation("item.quiz.questions", "a quiz needs at least one question"))
        for qi, q in enumerate(questions):
            choice_ids = [c["id"] for c in q.get("choices", [])]
            if len(choice_ids) < 2:
                out.append(
                    FieldViolation(f"item.quiz.questions[{qi}].choices", "at least two choices")
                )
            if len(set(choice_ids)) != len(choice_ids):
                out.append(
                    FieldViolation(
                        f"item.quiz.questions[{qi}].choices", "choice ids must be unique"
                    )
                )
            correct = q.get("correct", [])
            if not correct or any(c not in choice_ids for c in correct):
                out.append(
                    FieldViolation(
                        f"item.quiz.questions[{qi}].correct_choice_ids",
                        "must name at least one of the question's choices",
                    )
                )
    return out


def require_publishable(content: Content) -> None:
    if not content.lessons():
        raise FailedPrecondition(
            "a course needs at least one lesson to be published", reason="EMPTY_COURSE"
        )


# ---------------------------------------------------------------------------------------------
# Learner views


def released(module: Module, lesson: Lesson, now: datetime) -> bool:
    return all(at is None or at <= now for at in (module.release_at, lesson.release_at))


def learner_view(content: Content, now: datetime) -> tuple[Content, set[str]]:
    """The content a learner may see: answer keys removed, unreleased lessons emptied.

    Returns the view and the ids of the lessons that are locked (not released yet).
    """
    locked: set[str] = set()
    modules = []
    for module in content.modules:
        lessons = []
        for lesson in module.lessons:
            if not released(module, lesson, now):
                locked.add(lesson.lesson_id)
                lessons.append(replace(lesson, items=()))
                continue
            lessons.append(replace(lesson, items=tuple(_without_answers(i) for i in lesson.items)))
        modules.append(replace(module, lessons=tuple(lessons)))
    return Content(tuple(modules)), locked


def _without_answers(item: Item) -> Item:
    if item.kind != "quiz":
        return item
    questions = [{k: v for k, v in q.items() if k != "correct"} for q in item.body["questions"]]
    return replace(item, body={**item.body, "questions": questions})


# ---------------------------------------------------------------------------------------------
# Batches and enrollment


@dataclass(frozen=True)
class Batch:
    batch_id: str
    tenant_id: str
    course_id: str
    name: str
    capacity: int
    start_at: datetime | None
    end_at: datetime | None
    schedule: str
    state: BatchState
    created_at: datetime


def validate_batch_dates(start_at: datetime | None, end_at: datetime | None) -> None:
    if start_at and end_at and end_at <= start_at:
        raise InvalidArgument([FieldViolation("end_time", "must be after start_time")])


def open_batch(batch: Batch, course: Course) -> Batch:
    require_mutable(course)
    if batch.state is BatchState.CLOSED:
        raise FailedPrecondition("a closed batch cannot be reopened", reason="BATCH_CLOSED")
    return replace(batch, state=BatchState.OPEN)


def close_batch(batch: Batch) -> Batch:
    return replace(batch, state=BatchState.CLOSED)


@dataclass(frozen=True)
class Enrollment:
    enrollment_id: str
    tenant_id: str
    course_id: str
    batch_id: str
    section_id: str | None
    user_id: str
    role: Role
    status: Status
    seq: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Seats:
    taken: int
    waitlisted: int


def decide_enrollment(
    *,
    course: Course,
    batch: Batch,
    role: Role,
    by_staff: bool,
    seats: Seats,
) -> Status:
    """ACTIVE or WAITLISTED for a new enrollment, or why it is refused.

    Self-enrollment needs an open batch of a published course; staff and services may also
    enroll into a scheduled batch. Nobody enrolls into a closed batch or an archived course.
    Students beyond capacity wait; staff roles never take seats.
    """
    if course.state is CourseState.ARCHIVED:
        raise FailedPrecondition("the course is archived", reason="COURSE_ARCHIVED")
    if batch.state is BatchState.CLOSED:
        raise FailedPrecondition("the batch is closed to enrollment", reason="BATCH_CLOSED")
    if not by_staff:
        if role is not Role.STUDENT:
            raise PermissionDenied(
                "only course staff can enroll with a role other than student",
                reason="ROLE_NEEDS_STAFF",
            )
        if batch.state is not BatchState.OPEN:
            raise FailedPrecondition(
                "the batch is not open for enrollment", reason="BATCH_NOT_OPEN"
            )
        if course.state is not CourseState.PUBLISHED:
            raise FailedPrecondition("the course is not published", reason="COURSE_NOT_PUBLISHED")
    if role is not Role.STUDENT:
        return Status.ACTIVE
    if batch.capacity == 0 or seats.taken < batch.capacity:
        return Status.ACTIVE
    return Status.WAITLISTED


def status_after_drop(batch: Batch, now: datetime) -> Status:
    """Before the batch starts a learner drops; after, it is a withdrawal (kept on transcripts)."""
    if batch.start_at is not None and batch.start_at <= now:
        return Status.WITHDRAWN
    return Status.DROPPED


def require_droppable(enrollment: Enrollment) -> None:
    if enrollment.status not in (Status.ACTIVE, Status.WAITLISTED):
        raise FailedPrecondition(
            f"enrollment is {enrollment.status.value}", reason="ENROLLMENT_NOT_ACTIVE"
        )


def frees_seat(enrollment: Enrollment) -> bool:
    return enrollment.role is Role.STUDENT and enrollment.status in SEAT_STATUSES


def seats_to_fill(batch: Batch, seats: Seats) -> int:
    """How many waitlisted students may be promoted now."""
    if batch.capacity == 0:
        return seats.waitlisted
    return max(0, min(batch.capacity - seats.taken, seats.waitlisted))


# ---------------------------------------------------------------------------------------------
# Progress


@dataclass(frozen=True)
class ProgressView:
    course_id: str
    batch_id: str
    user_id: str
    version: int
    total: int
    completed_ids: tuple[str, ...]
    next_lesson_id: str
    course_completed: bool

    @property
    def percent(self) -> int:
        return (len(self.completed_ids) * 100) // self.total if self.total else 0


def progress(
    content: Content,
    completed: Iterable[str],
    *,
    course_id: str,
    batch_id: str,
    user_id: str,
    version: int,
) -> ProgressView:
    """Progress over the lessons of `content` (a published version), in course order."""
    done = set(completed)
    order = content.lesson_ids()
    completed_ids = tuple(i for i in order if i in done)
    next_id = next((i for i in order if i not in done), "")
    return ProgressView(
        course_id=course_id,
        batch_id=batch_id,
        user_id=user_id,
        version=version,
        total=len(order),
        completed_ids=completed_ids,
        next_lesson_id=next_id,
        course_completed=bool(order) and not next_id,
    )


def require_completable(
    content: Content, lesson_id: str, completed: Iterable[str], now: datetime
) -> None:
    found = content.find_lesson(lesson_id)
    if found is None:
        raise NotFound(
            f"lesson {lesson_id} is not in the published course", reason="LESSON_NOT_FOUND"
        )
    module, lesson = found
    if not released(module, lesson, now):
        raise FailedPrecondition("the lesson is not released yet", reason="LESSON_NOT_RELEASED")
    done = set(completed)
    missing = [p for p in lesson.prerequisites if p not in done]
    if missing:
        raise FailedPrecondition(
            "complete the lesson's prerequisites first",
            reason="PREREQUISITES_INCOMPLETE",
            metadata={"missing": ",".join(missing)},
        )


@dataclass(frozen=True)
class QuestionScore:
    question_id: str
    correct: bool
    points: int


def score_quiz(
    body: Mapping[str, Any], answers: Mapping[str, Sequence[str]]
) -> tuple[int, int, list[QuestionScore]]:
    """All-or-nothing per question: the chosen set must equal the answer key."""
    score = max_score = 0
    results: list[QuestionScore] = []
    for q in body.get("questions", []):
        points = int(q.get("points") or 1)
        max_score += points
        correct = set(answers.get(q["id"], ())) == set(q.get("correct", ()))
        got = points if correct else 0
        score += got
        results.append(QuestionScore(q["id"], correct, got))
    return score, max_score, results


# ---------------------------------------------------------------------------------------------
# Pagination tokens

K = TypeVar("K", str, int)


def encode_page_token(key: Sequence[Any], fingerprint: str) -> str:
    payload = json.dumps([list(key), fingerprint]).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_page_token(token: str, fingerprint: str) -> list[Any]:
    """The keyset position; INVALID_ARGUMENT when malformed or minted for other filters."""
    try:
        padded = token + "=" * (-len(token) % 4)
        key, minted_for = json.loads(base64.urlsafe_b64decode(padded))
        if minted_for != fingerprint or not isinstance(key, list):
            raise ValueError("other filters")
    except (ValueError, TypeError, binascii.Error):
        raise InvalidArgument(
            [FieldViolation("page_token", "is not a token from this listing")]
        ) from None
    return key


def page_key(token: str, fingerprint: str, kind: type[K]) -> K:
    """The single keyset value of a token, checked to be of `kind` (a forged token with the right
    fingerprint but another shape is bad input, never an internal error)."""
    key = decode_page_token(token, fingerprint)
    if len(key) != 1 or type(key[0]) is not kind:
        raise InvalidArgument([FieldViolation("page_token", "is not a token from this listing")])
    value: K = key[0]
    return value


def page_size(requested: int, default: int = 20, maximum: int = 100) -> int:
    return min(requested or default, maximum)


# ---------------------------------------------------------------------------------------------
# Domain events (mapped to courses_events.proto by events.py)


@dataclass(frozen=True)
class CourseCreated:
    tenant_id: str
    course_id: str
    code: str
    title: str
    department_id: str
    owner_ids: tuple[str, ...]
    occurred_at: datetime = field(default_factory=now_utc)


@dataclass(frozen=True)
class CoursePublished:
    tenant_id: str
    course_id: str
    version: int
    title: str
    batch_ids: tuple[str, ...]
    occurred_at: datetime = field(default_factory=now_utc)


@dataclass(frozen=True)
class CourseArchived:
    tenant_id: str
    course_id: str
    occurred_at: datetime = field(default_factory=now_utc)


@dataclass(frozen=True)
class BatchOpened:
    batch: Batch
    occurred_at: datetime = field(default_factory=now_utc)


@dataclass(frozen=True)
class BatchClosed:
    batch: Batch
    occurred_at: datetime = field(default_factory=now_utc)


@dataclass(frozen=True)
class EnrollmentCreated:
    enrollment: Enrollment
    waitlist_position: int
    occurred_at: datetime = field(default_factory=now_utc)


@dataclass(frozen=True)
class EnrollmentPromoted:
    enrollment: Enrollment
    occurred_at: datetime = field(default_factory=now_utc)


@dataclass(frozen=True)
class EnrollmentDropped:
    enrollment: Enrollment
    reason: str
    occurred_at: datetime = field(default_factory=now_utc)


@dataclass(frozen=True)
class LessonCompleted:
    tenant_id: str
    course_id: str
    batch_id: str
    lesson_id: str
    user_id: str
    occurred_at: datetime = field(default_factory=now_utc)


@dataclass(frozen=True)
class CourseCompleted:
    tenant_id: str
    course_id: str
    batch_id: str
    user_id: str
    occurred_at: datetime = field(default_factory=now_utc)


DomainEvent = (
    CourseCreated
    | CoursePublished
    | CourseArchived
    | BatchOpened
    | BatchClosed
    | EnrollmentCreated
    | EnrollmentPromoted
    | EnrollmentDropped
    | LessonCompleted
    | CourseCompleted
)
