"""Assessment rules: windows, late penalties, rubric scores, access by batch role, gradebook.

Pure Python: no I/O, no proto types. Points are integer hundredths ("centi"), penalties and
weights integer basis points (10000 = 100 %), so every number here is exact; percentages are
computed with `Fraction` and rounded only when shown.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from suuupra_runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    PreconditionViolation,
)

FULL_BP = 10_000
DAY = timedelta(days=1)


class SubmissionType(enum.Enum):
    TEXT = "text"
    FILES = "files"
    LINK = "link"


class AssignmentState(enum.Enum):
    DRAFT = "draft"
    PUBLISHED = "published"


class BatchRole(enum.Enum):
    INSTRUCTOR = "instructor"
    TEACHING_ASSISTANT = "teaching_assistant"
    STUDENT = "student"
    OBSERVER = "observer"


STAFF_ROLES = frozenset({BatchRole.INSTRUCTOR, BatchRole.TEACHING_ASSISTANT})


@dataclass(frozen=True)
class RubricLevel:
    title: str
    points_centi: int
    description: str = ""


@dataclass(frozen=True)
class RubricCriterion:
    criterion_id: str
    title: str
    levels: tuple[RubricLevel, ...]

    @property
    def max_points_centi(self) -> int:
        return max(level.points_centi for level in self.levels)


@dataclass(frozen=True)
class LatePolicy:
    percent_per_day_bp: int = 0
    floor_bp: int = 0


@dataclass(frozen=True)
class Assignment:
    assignment_id: str
    tenant_id: str
    course_id: str
    batch_id: str
    section_id: str
    title: str
    instructions: str
    attachment_file_ids: tuple[str, ...]
    max_points_centi: int
    submission_types: frozenset[SubmissionType]
    allowed_file_types: tuple[str, ...]
    max_attempts: int
    open_time: datetime
    due_time: datetime
    close_time: datetime
    rubric: tuple[RubricCriterion, ...]
    late_policy: LatePolicy
    category: str
    state: AssignmentState
    created_by: str
    created_at: datetime
    published_at: datetime | None = None
    # Increases with every write; the etag is derived from it.
    version: int = 1
    updated_at: datetime | None = None


@dataclass(frozen=True)
class StudentException:
    assignment_id: str
    student_id: str
    extended_due_time: datetime | None
    extended_close_time: datetime | None
    exempt: bool
    reason: str
    granted_by: str
    updated_at: datetime


# --------------------------------------------------------------------------------------------
# Creating assignments


def check_new_assignment(
    *,
    open_time: datetime,
    due_time: datetime,
    close_time: datetime,
    rubric: Sequence[RubricCriterion],
    max_points_centi: int,
    submission_types: Iterable[SubmissionType],
    allowed_file_types: Sequence[str],
    late_policy: LatePolicy,
    prefix: str = "",
) -> int:
    """Validate what protovalidate cannot (relations between fields); returns the max points.
    `prefix` names the message holding the fields in violations (`assignment.` on updates)."""
    violations: list[FieldViolation] = []
    if not open_time < due_time:
        violations.append(FieldViolation(f"{prefix}due_time", "must be after open_time"))
    if close_time < due_time:
        violations.append(FieldViolation(f"{prefix}close_time", "must not be before due_time"))
    ids = [c.criterion_id for c in rubric]
    if len(set(ids)) != len(ids):
        violations.append(FieldViolation(f"{prefix}rubric", "criterion ids must be unique"))
    if allowed_file_types and SubmissionType.FILES not in set(submission_types):
        violations.append(
            FieldViolation(f"{prefix}allowed_file_types", "only for assignments that accept files")
        )
    if late_policy.percent_per_day_bp and close_time == due_time:
        violations.append(
            FieldViolation(
                f"{prefix}late_policy", "a late policy needs a close_time after due_time"
            )
        )
    points = sum(c.max_points_centi for c in rubric) if rubric else max_points_centi
    if points <= 0:
        violations.append(
            FieldViolation(
                f"{prefix}max_points_centi", "must be positive (or give a rubric with points)"
            )
        )
    if violations:
        raise InvalidArgument(violations)
    return points


def with_criterion_ids(rubric: Sequence[RubricCriterion]) -> tuple[RubricCriterion, ...]:
    """Criteria without an id get `c<position>` (ids are stable once given)."""
    return tuple(
        c if c.criterion_id else replace(c, criterion_id=f"c{index + 1}")
        for index, c in enumerate(rubric)
    )


# --------------------------------------------------------------------------------------------
# Editing and deleting assignments
#
# Drafts change freely. Publishing fixes the audience (section). Once anyone has submitted, the
# terms may only become more lenient (later due/close time, earlier open time, more attempts,
# more accepted kinds and types, a milder late policy), and they apply from then on: work
# already handed in keeps the lateness it was given at submit time, as with extensions. Once
# anything is graded, the points and the rubric's structure are fixed, because every grade was
# given against them (rubric wording may still change). Deleting needs no work to exist.

UPDATABLE_FIELDS = (
    "section_id",
    "title",
    "instructions",
    "attachment_file_ids",
    "max_points_centi",
    "submission_types",
    "allowed_file_types",
    "max_attempts",
    "open_time",
    "due_time",
    "close_time",
    "rubric",
    "late_policy",
    "category",
)

# Changes students are not told about: the gradebook category is the staff's bookkeeping.
UNANNOUNCED_FIELDS = frozenset({"category"})


@dataclass(frozen=True)
class WorkFacts:
    """What exists for an assignment that edits and deletes must not invalidate."""

    submissions: int = 0
    grades: int = 0


def _rubric_structure(rubric: Sequence[RubricCriterion]) -> list[tuple[str, tuple[int, ...]]]:
    return [(c.criterion_id, tuple(lv.points_centi for lv in c.levels)) for c in rubric]


def _harsher_terms(before: Assignment, after: Assignment, changed: set[str]) -> list[str]:
    """The changed fields whose new value is stricter for students than the old one."""
    harsher = []
    if "open_time" in changed and after.open_time > before.open_time:
        harsher.append("open_time")
    if "due_time" in changed and after.due_time < before.due_time:
        harsher.append("due_time")
    if "close_time" in changed and after.close_time < before.close_time:
        harsher.append("close_time")
    if "max_attempts" in changed and after.max_attempts < before.max_attempts:
        harsher.append("max_attempts")
    if "submission_types" in changed and not after.submission_types >= before.submission_types:
        harsher.append("submission_types")
    # Empty allows every type: widening means "any" or every type allowed before still allowed.
    if (
        "allowed_file_types" in changed
        and after.allowed_file_types
        and (
            not before.allowed_file_types
            or not set(after.allowed_file_types) >= set(before.allowed_file_types)
        )
    ):
        harsher.append("allowed_file_types")
    if "late_policy" in changed and (
        after.late_policy.percent_per_day_bp > before.late_policy.percent_per_day_bp
        or after.late_policy.floor_bp < before.late_policy.floor_bp
    ):
        harsher.append("late_policy")
    return harsher


_HARSHER = {
    "open_time": "may only move earlier",
    "due_time": "may only move later",
    "close_time": "may only move later",
    "max_attempts": "may only grow",
    "submission_types": "may only gain kinds",
    "allowed_file_types": "may only allow more types",
    "late_policy": "may only become milder (lower rate per day, higher floor)",
}


def edit_assignment(
    current: Assignment,
    changes: Mapping[str, Any],
    work: WorkFacts,
    at: datetime,
) -> tuple[Assignment, tuple[str, ...]]:
    """The assignment with `changes` (field name → new value) applied, and the names of the
    fields that really changed (in `UPDATABLE_FIELDS` order). Nothing changed: the current
    assignment as it is. Raises InvalidArgument for values that do not fit together and
    FailedPrecondition for changes the assignment's state or existing work forbid."""
    unknown = sorted(set(changes) - set(UPDATABLE_FIELDS))
    if unknown:
        raise InvalidArgument(
            [FieldViolation("update_mask", f"unknown or read-only path {p!r}") for p in unknown]
        )
    proposed = replace(current, **changes)
    if "rubric" in changes:
        proposed = replace(proposed, rubric=with_criterion_ids(proposed.rubric))
    if (
        "max_points_centi" in changes
        and "rubric" not in changes
        and proposed.rubric
        and changes["max_points_centi"] != current.max_points_centi
    ):
        raise InvalidArgument(
            [
                FieldViolation(
                    "assignment.max_points_centi",
                    "set by the rubric (the sum of each criterion's best level): change the rubric",
                )
            ]
        )
    points = check_new_assignment(
        open_time=proposed.open_time,
        due_time=proposed.due_time,
        close_time=proposed.close_time,
        rubric=proposed.rubric,
        max_points_centi=proposed.max_points_centi,
        submission_types=proposed.submission_types,
        allowed_file_types=proposed.allowed_file_types,
        late_policy=proposed.late_policy,
        prefix="assignment.",
    )
    proposed = replace(proposed, max_points_centi=points)
    changed = {f for f in UPDATABLE_FIELDS if getattr(proposed, f) != getattr(current, f)}
    if not changed:
        return current, ()

    subject = f"assignments/{current.assignment_id}"
    refused: list[PreconditionViolation] = []
    reason = ""
    if work.grades:
        if "max_points_centi" in changed:
            refused.append(
                PreconditionViolation(
                    "GRADES_EXIST", subject, "max_points_centi is fixed once anything is graded"
                )
            )
        if _rubric_structure(proposed.rubric) != _rubric_structure(current.rubric):
            refused.append(
                PreconditionViolation(
                    "GRADES_EXIST",
                    subject,
                    "the rubric's criteria, levels and points are fixed once anything is "
                    "graded (titles and descriptions may change)",
                )
            )
        reason = reason or ("ASSIGNMENT_GRADED" if refused else "")
    if work.submissions:
        before = len(refused)
        refused.extend(
            PreconditionViolation(
                "SUBMISSIONS_EXIST", subject, f"{name} {_HARSHER[name]} once students submitted"
            )
            for name in _harsher_terms(current, proposed, changed)
        )
        if len(refused) > before:
            reason = reason or "ASSIGNMENT_HAS_SUBMISSIONS"
    if current.state is AssignmentState.PUBLISHED and "section_id" in changed:
        refused.append(
            PreconditionViolation(
                "PUBLISHED",
                subject,
                "the audience (section_id) of a published assignment is fixed",
            )
        )
        reason = reason or "ASSIGNMENT_PUBLISHED"
    if refused:
        raise FailedPrecondition("; ".join(v.description for v in refused), refused, reason=reason)
    edited = replace(proposed, version=current.version + 1, updated_at=at)
    return edited, tuple(f for f in UPDATABLE_FIELDS if f in changed)


def announced_changes(assignment: Assignment, changed: Sequence[str]) -> tuple[str, ...]:
    """The changes students hear about (AssignmentUpdated): only on published assignments,
    never the gradebook category alone."""
    if assignment.state is not AssignmentState.PUBLISHED:
        return ()
    return tuple(f for f in changed if f not in UNANNOUNCED_FIELDS)


def check_deletable(assignment: Assignment, work: WorkFacts) -> None:
    """Drafts and published assignments nobody has submitted to may go; submitted work never
    does (grades need a submission, so no grade is lost either)."""
    if work.submissions:
        raise FailedPrecondition(
            f"{work.submissions} submission(s) exist: an assignment with work handed in is "
            "never deleted",
            [
                PreconditionViolation(
                    "SUBMISSIONS_EXIST",
                    f"assignments/{assignment.assignment_id}",
                    "students have submitted",
                )
            ],
            reason="ASSIGNMENT_HAS_SUBMISSIONS",
        )


# --------------------------------------------------------------------------------------------
# Submitting


@dataclass(frozen=True)
class Window:
    """One student's effective times for an assignment (extensions applied)."""

    open_time: datetime
    due_time: datetime
    close_time: datetime
    extended: bool


def window_for(assignment: Assignment, exception: StudentException | None) -> Window:
    """An extension moves this student's due time and/or cut-off; it never shortens them."""
    due, close, extended = assignment.due_time, assignment.close_time, False
    if exception is not None:
        if exception.extended_due_time is not None and exception.extended_due_time > due:
            due, extended = exception.extended_due_time, True
        if exception.extended_close_time is not None and exception.extended_close_time > close:
            close, extended = exception.extended_close_time, True
        close = max(close, due)
    return Window(assignment.open_time, due, close, extended)


@dataclass(frozen=True)
class LateVerdict:
    late: bool
    penalty_bp: int
    explanation: str


def _fmt_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days} d"] if days else []
    if hours:
        parts.append(f"{hours} h")
    if minutes or not parts:
        parts.append(f"{minutes} min")
    return " ".join(parts)


def _pct(bp: int) -> str:
    return f"{bp / 100:g}%"


def late_verdict(window: Window, policy: LatePolicy, submitted_at: datetime) -> LateVerdict:
    """Penalty = per-day rate x started days late, capped so the score keeps `floor_bp`."""
    if submitted_at <= window.due_time:
        return LateVerdict(False, 0, "on time")
    lateness = submitted_at - window.due_time
    days = math.ceil(lateness / DAY)
    uncapped = policy.percent_per_day_bp * days
    cap = FULL_BP - policy.floor_bp
    penalty = min(uncapped, cap)
    due_label = "extended due time" if window.extended else "due time"
    text = (
        f"submitted {_fmt_duration(lateness)} after the {due_label} "
        f"{window.due_time.isoformat()}: {days} started day(s) late x "
        f"{_pct(policy.percent_per_day_bp)}/day = {_pct(uncapped)}"
    )
    if penalty < uncapped:
        text += f", capped at {_pct(cap)} by the {_pct(policy.floor_bp)} floor"
    return LateVerdict(True, penalty, text + f" → penalty {_pct(penalty)}")


@dataclass(frozen=True)
class SubmissionContent:
    text: str
    file_ids: tuple[str, ...]
    link: str


def check_submission(
    assignment: Assignment,
    window: Window,
    content: SubmissionContent,
    now: datetime,
) -> None:
    """Refuse submissions outside the window, of the wrong kind, or empty."""
    subject = f"assignments/{assignment.assignment_id}"
    if assignment.state is not AssignmentState.PUBLISHED:
        raise FailedPrecondition(
            "the assignment is not published",
            [PreconditionViolation("STATE", subject, "not published")],
            reason="ASSIGNMENT_NOT_PUBLISHED",
        )
    if now < window.open_time:
        raise FailedPrecondition(
            f"the assignment opens at {window.open_time.isoformat()}",
            [PreconditionViolation("WINDOW", subject, "not open yet")],
            reason="ASSIGNMENT_NOT_OPEN",
        )
    if now > window.close_time:
        raise FailedPrecondition(
            f"the assignment closed at {window.close_time.isoformat()} (hard cut-off)",
            [PreconditionViolation("WINDOW", subject, "closed")],
            reason="ASSIGNMENT_CLOSED",
        )
    violations: list[FieldViolation] = []
    given = {
        SubmissionType.TEXT: bool(content.text.strip()),
        SubmissionType.FILES: bool(content.file_ids),
        SubmissionType.LINK: bool(content.link),
    }
    field_names = {
        SubmissionType.TEXT: "text",
        SubmissionType.FILES: "file_ids",
        SubmissionType.LINK: "link",
    }
    for kind, present in given.items():
        if present and kind not in assignment.submission_types:
            violations.append(
                FieldViolation(field_names[kind], "this assignment does not accept it")
            )
    if not any(given.values()):
        violations.append(FieldViolation("text", "a submission needs text, files or a link"))
    if violations:
        raise InvalidArgument(violations)


def file_type_allowed(content_type: str, allowed: Sequence[str]) -> bool:
    """`allowed` entries are exact types or `major/*`; empty allows every type."""
    if not allowed:
        return True
    content_type = content_type.lower()
    for entry in allowed:
        pattern = entry.lower()
        if pattern == content_type:
            return True
        if pattern.endswith("/*") and content_type.startswith(pattern[:-1]):
            return True
    return False


# --------------------------------------------------------------------------------------------
# Access by batch role (the RPC permission has already been checked by the runtime)


@dataclass(frozen=True)
class Actor:
    user_id: str
    tenant_id: str
    permissions: frozenset[str]
    # Roles of this user in the batch in question (from the enrollment projection).
    batch_roles: frozenset[BatchRole] = frozenset()
    is_service: bool = False

    @property
    def administers(self) -> bool:
        return self.is_service or "assessment.assignments.administer" in self.permissions

    @property
    def is_staff(self) -> bool:
        return self.administers or bool(self.batch_roles & STAFF_ROLES)

    @property
    def is_student(self) -> bool:
        return BatchRole.STUDENT in self.batch_roles


def require_instructor(actor: Actor, batch_id: str) -> None:
    if actor.administers or BatchRole.INSTRUCTOR in actor.batch_roles:
        return
    raise PermissionDenied(
        f"only instructors of batch {batch_id} manage its assignments",
        reason="NOT_BATCH_INSTRUCTOR",
    )


def require_grader(actor: Actor, batch_id: str) -> None:
    if actor.is_staff:
        return
    raise PermissionDenied(
        f"only instructors and teaching assistants of batch {batch_id} grade it",
        reason="NOT_BATCH_GRADER",
    )


def require_student(actor: Actor, batch_id: str) -> None:
    if actor.is_student:
        return
    raise PermissionDenied(
        f"only students enrolled in batch {batch_id} submit to it", reason="NOT_BATCH_STUDENT"
    )


def require_member(actor: Actor, batch_id: str) -> None:
    if actor.is_staff or actor.is_student:
        return
    raise PermissionDenied(f"not a member of batch {batch_id}", reason="NOT_BATCH_MEMBER")


def may_see_student_work(actor: Actor, student_id: str) -> bool:
    """Staff see everything of their batch; a student only their own."""
    return actor.is_staff or (actor.is_student and actor.user_id == student_id)


# --------------------------------------------------------------------------------------------
# Grading


@dataclass(frozen=True)
class RubricChoice:
    criterion_id: str
    level_index: int


def raw_score(
    assignment: Assignment, score_centi: int | None, rubric_scores: Sequence[RubricChoice]
) -> int:
    """The given score, else the sum of the chosen rubric levels; a given score and rubric
    scores together must agree (the rubric explains the score)."""
    violations: list[FieldViolation] = []
    by_id = {c.criterion_id: c for c in assignment.rubric}
    rubric_total = 0
    seen: set[str] = set()
    for index, choice in enumerate(rubric_scores):
        criterion = by_id.get(choice.criterion_id)
        path = f"rubric_scores[{index}]"
        if criterion is None:
            violations.append(FieldViolation(f"{path}.criterion_id", "not in the rubric"))
            continue
        if choice.criterion_id in seen:
            violations.append(FieldViolation(f"{path}.criterion_id", "scored twice"))
            continue
        seen.add(choice.criterion_id)
        if not 0 <= choice.level_index < len(criterion.levels):
            violations.append(FieldViolation(f"{path}.level_index", "no such level"))
            continue
        rubric_total += criterion.levels[choice.level_index].points_centi
    if rubric_scores and not violations and seen != set(by_id):
        violations.append(FieldViolation("rubric_scores", "score every criterion of the rubric"))
    if score_centi is None and not rubric_scores:
        violations.append(FieldViolation("score_centi", "give a score or rubric scores"))
    if score_centi is not None and score_centi > assignment.max_points_centi:
        violations.append(FieldViolation("score_centi", "above the assignment's maximum"))
    if score_centi is not None and rubric_scores and not violations and score_centi != rubric_total:
        violations.append(
            FieldViolation("score_centi", "differs from the sum of the rubric scores")
        )
    if violations:
        raise InvalidArgument(violations)
    return score_centi if score_centi is not None else rubric_total


def apply_penalty(raw_centi: int, penalty_bp: int) -> int:
    """Score after the penalty, rounded half up to a hundredth of a point."""
    return (raw_centi * (FULL_BP - penalty_bp) * 2 + FULL_BP) // (2 * FULL_BP)


# --------------------------------------------------------------------------------------------
# Gradebook


@dataclass(frozen=True)
class Category:
    name: str
    weight_bp: int
    drop_lowest: int = 0


def check_categories(categories: Sequence[Category]) -> None:
    violations: list[FieldViolation] = []
    names = [c.name for c in categories]
    if len(set(names)) != len(names):
        violations.append(FieldViolation("categories", "names must be unique"))
    if categories and sum(c.weight_bp for c in categories) != FULL_BP:
        violations.append(FieldViolation("categories", "weights must add up to 10000 (100 %)"))
    if violations:
        raise InvalidArgument(violations)


class CellStatus(enum.Enum):
    GRADED = "graded"
    UNGRADED = "ungraded"
    EXEMPT = "exempt"
    DROPPED = "dropped"
    UNCATEGORIZED = "uncategorized"


@dataclass(frozen=True)
class Column:
    assignment_id: str
    title: str
    category: str
    max_points_centi: int


@dataclass(frozen=True)
class ReleasedGrade:
    score_centi: int
    raw_score_centi: int
    penalty_bp: int
    attempt: int
    penalty_explanation: str


@dataclass
class Cell:
    assignment_id: str
    status: CellStatus
    score_centi: int
    max_points_centi: int
    explanation: list[str] = field(default_factory=list)


@dataclass
class Row:
    student_id: str
    cells: list[Cell]
    current: Fraction | None
    final: Fraction | None
    explanation: list[str]


IMPLICIT_CATEGORY = Category("all", FULL_BP, 0)


def percent(value: Fraction | None) -> float:
    """0.0-100.0 rounded half up to two decimals (None → 0)."""
    if value is None:
        return 0.0
    hundredths = math.floor(value * 10_000 + Fraction(1, 2))
    return hundredths / 100


def _fmt_points(centi: int) -> str:
    return f"{centi / 100:g}"


def _category_share(
    cells: list[Cell], drop_lowest: int, *, final: bool
) -> tuple[Fraction | None, list[Cell]]:
    """(earned / possible after drops, dropped cells) over graded cells, plus zeros if final."""
    counted = [c for c in cells if c.status is CellStatus.GRADED]
    if final:
        counted += [c for c in cells if c.status is CellStatus.UNGRADED]
    counted = [c for c in counted if c.max_points_centi > 0]
    drops = min(drop_lowest, max(len(counted) - 1, 0))

    def share(c: Cell) -> Fraction:
        earned = c.score_centi if c.status is CellStatus.GRADED else 0
        return Fraction(earned, c.max_points_centi)

    # Lowest percentage first; ties by column order keep the choice deterministic.
    order = sorted(range(len(counted)), key=lambda i: (share(counted[i]), i))
    dropped = [counted[i] for i in order[:drops]]
    kept = [c for c in counted if all(c is not d for d in dropped)]
    possible = sum(c.max_points_centi for c in kept)
    if not kept or possible == 0:
        return None, dropped
    earned = sum(c.score_centi for c in kept if c.status is CellStatus.GRADED)
    return Fraction(earned, possible), dropped


def compute_row(
    student_id: str,
    columns: Sequence[Column],
    categories: Sequence[Category],
    grades: Mapping[str, ReleasedGrade],
    exempt: frozenset[str],
) -> Row:
    """One student's cells and totals, with the explanation of every number."""
    weighted = list(categories) or [IMPLICIT_CATEGORY]
    by_name = {c.name: c for c in weighted}
    cells: list[Cell] = []
    for column in columns:
        grade = grades.get(column.assignment_id)
        category = by_name.get(column.category) if categories else IMPLICIT_CATEGORY
        lines = [f"assignment '{column.title}' worth {_fmt_points(column.max_points_centi)} points"]
        if column.assignment_id in exempt:
            status, score = CellStatus.EXEMPT, 0
            lines.append("the student is exempt: left out of every total")
        elif category is None:
            status, score = CellStatus.UNCATEGORIZED, grade.score_centi if grade else 0
            lines.append(
                f"category '{column.category}' is not a weighted category of the batch: "
                "left out of the totals"
            )
        elif grade is None:
            status, score = CellStatus.UNGRADED, 0
            lines.append(
                "no released grade: left out of the current percentage, counts as 0 "
                "in the final percentage"
            )
        else:
            status, score = CellStatus.GRADED, grade.score_centi
            lines.append(
                f"released grade of attempt {grade.attempt}: raw "
                f"{_fmt_points(grade.raw_score_centi)}"
            )
            if grade.penalty_bp:
                lines.append(f"late: {grade.penalty_explanation}")
            lines.append(
                f"score {_fmt_points(grade.score_centi)} / {_fmt_points(column.max_points_centi)}"
            )
        if category is not None and column.assignment_id not in exempt:
            lines.append(
                f"category '{category.name}' weighs {_pct(category.weight_bp)}"
                + (f", drops the lowest {category.drop_lowest}" if category.drop_lowest else "")
            )
        cells.append(Cell(column.assignment_id, status, score, column.max_points_centi, lines))

    totals: dict[bool, Fraction | None] = {}
    explanation: list[str] = []
    # Marked after both passes: the final pass must still see the graded cells it may drop.
    dropped_now: list[tuple[Cell, Category]] = []
    for final in (False, True):
        label = "final" if final else "current"
        weight_sum = 0
        acc = Fraction(0)
        for category in weighted:
            members = [
                cell
                for cell, column in zip(cells, columns, strict=True)
                if (column.category == category.name or not categories)
                and cell.status not in (CellStatus.EXEMPT, CellStatus.UNCATEGORIZED)
            ]
            share, dropped = _category_share(members, category.drop_lowest, final=final)
            if not final:
                dropped_now.extend((cell, category) for cell in dropped)
            if share is None:
                explanation.append(f"{label}: category '{category.name}' has nothing counted")
                continue
            weight_sum += category.weight_bp
            acc += share * category.weight_bp
            explanation.append(
                f"{label}: category '{category.name}' {percent(share):.2f}% "
                f"x weight {_pct(category.weight_bp)}"
                + (f" ({len(dropped)} dropped)" if dropped else "")
            )
        total = acc / weight_sum if weight_sum else None
        totals[final] = total
        scale = (
            f", re-scaled over the {_pct(weight_sum)} of weight counted"
            if weight_sum and weight_sum != FULL_BP
            else ""
        )
        explanation.append(f"{label} = {percent(total):.2f}%{scale}")
    for cell, category in dropped_now:
        cell.status = CellStatus.DROPPED
        cell.explanation.append(
            f"dropped from the current percentage: among the lowest {category.drop_lowest} "
            f"of '{category.name}'"
        )
    return Row(student_id, cells, totals[False], totals[True], explanation)


# --------------------------------------------------------------------------------------------
# Domain events (mapped to assessment_events.proto by events.py)


@dataclass(frozen=True)
class AssignmentPublished:
    assignment: Assignment
    occurred_at: datetime


@dataclass(frozen=True)
class AssignmentUpdated:
    assignment: Assignment
    changed_fields: tuple[str, ...]
    previous_due_time: datetime | None
    updated_by: str
    occurred_at: datetime


@dataclass(frozen=True)
class AssignmentDeleted:
    assignment: Assignment
    deleted_by: str
    occurred_at: datetime


@dataclass(frozen=True)
class SubmissionCreated:
    tenant_id: str
    submission_id: str
    assignment_id: str
    course_id: str
    batch_id: str
    student_id: str
    attempt: int
    late: bool
    penalty_bp: int
    file_ids: tuple[str, ...]
    submitted_at: datetime


@dataclass(frozen=True)
class GradeReleased:
    tenant_id: str
    grade_id: str
    assignment_id: str
    submission_id: str
    course_id: str
    batch_id: str
    student_id: str
    assignment_title: str
    score_centi: int
    max_points_centi: int
    occurred_at: datetime


@dataclass(frozen=True)
class GradeChanged:
    tenant_id: str
    grade_id: str
    assignment_id: str
    submission_id: str
    student_id: str
    previous_score_centi: int | None
    score_centi: int
    changed_by: str
    reason: str
    released: bool
    occurred_at: datetime


@dataclass(frozen=True)
class AssignmentDueSoon:
    assignment: Assignment
    student_ids: tuple[str, ...]
    occurred_at: datetime


DomainEvent = (
    AssignmentPublished
    | AssignmentUpdated
    | AssignmentDeleted
    | AssignmentDueSoon
    | SubmissionCreated
    | GradeReleased
    | GradeChanged
)


@dataclass(frozen=True)
class FileFacts:
    owner_id: str
    content_type: str


def check_files(
    file_ids: Sequence[str],
    known: Mapping[str, FileFacts],
    owner_id: str,
    allowed_types: Sequence[str],
    *,
    field_name: str = "file_ids",
) -> None:
    """Every file must exist, be the caller's own, and have an allowed content type."""
    violations: list[FieldViolation] = []
    for index, file_id in enumerate(file_ids):
        facts = known.get(file_id)
        path = f"{field_name}[{index}]"
        if facts is None or facts.owner_id != owner_id:
            # The same answer for "missing" and "someone else's": ids reveal nothing.
            violations.append(FieldViolation(path, "no such file of yours"))
        elif not file_type_allowed(facts.content_type, allowed_types):
            violations.append(
                FieldViolation(
                    path,
                    f"type {facts.content_type} is not allowed "
                    f"(allowed: {', '.join(allowed_types)})",
                )
            )
    if violations:
        raise InvalidArgument(violations)
