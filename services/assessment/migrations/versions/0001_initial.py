"""Initial assessment schema: enrollment projection, assignments, exceptions, submissions with a
database-enforced attempt limit, grades with their audit trail, gradebook categories.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SCHEMA = """
CREATE TABLE batch_members (
    tenant_id   text NOT NULL,
    batch_id    text NOT NULL,
    user_id     text NOT NULL,
    role        text NOT NULL,
    course_id   text NOT NULL,
    section_id  text NOT NULL DEFAULT '',
    active      boolean NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, batch_id, user_id, role)
);
CREATE INDEX batch_members_user ON batch_members (tenant_id, user_id);

CREATE TABLE assignments (
    assignment_id        text PRIMARY KEY,
    tenant_id            text NOT NULL,
    course_id            text NOT NULL,
    batch_id             text NOT NULL,
    section_id           text NOT NULL DEFAULT '',
    title                text NOT NULL,
    instructions         text NOT NULL,
    attachment_file_ids  text[] NOT NULL,
    max_points_centi     bigint NOT NULL CHECK (max_points_centi > 0),
    submission_types     text[] NOT NULL,
    allowed_file_types   text[] NOT NULL,
    max_attempts         integer NOT NULL CHECK (max_attempts >= 1),
    open_time            timestamptz NOT NULL,
    due_time             timestamptz NOT NULL,
    close_time           timestamptz NOT NULL,
    rubric               jsonb NOT NULL,
    late_per_day_bp      integer NOT NULL,
    late_floor_bp        integer NOT NULL,
    category             text NOT NULL,
    state                text NOT NULL,
    created_by           text NOT NULL,
    created_at           timestamptz NOT NULL,
    published_at         timestamptz,
    CHECK (open_time < due_time AND due_time <= close_time)
);
CREATE INDEX assignments_batch ON assignments (tenant_id, batch_id, due_time, assignment_id);

CREATE TABLE student_exceptions (
    tenant_id            text NOT NULL,
    assignment_id        text NOT NULL REFERENCES assignments (assignment_id),
    student_id           text NOT NULL,
    extended_due_time    timestamptz,
    extended_close_time  timestamptz,
    exempt               boolean NOT NULL,
    reason               text NOT NULL,
    granted_by           text NOT NULL,
    updated_at           timestamptz NOT NULL,
    PRIMARY KEY (assignment_id, student_id)
);

-- The attempt limit lives in the database: a submit claims the next attempt with one atomic
-- upsert that only succeeds while used < max_attempts (the row lock serialises concurrent
-- submits of one student), and the CHECKs below refuse anything past the limit regardless.
CREATE TABLE attempt_counters (
    tenant_id      text NOT NULL,
    assignment_id  text NOT NULL REFERENCES assignments (assignment_id),
    student_id     text NOT NULL,
    used           integer NOT NULL,
    max_attempts   integer NOT NULL,
    PRIMARY KEY (assignment_id, student_id),
    CHECK (used >= 1 AND used <= max_attempts)
);

CREATE TABLE submissions (
    submission_id        text PRIMARY KEY,
    tenant_id            text NOT NULL,
    assignment_id        text NOT NULL REFERENCES assignments (assignment_id),
    batch_id             text NOT NULL,
    student_id           text NOT NULL,
    attempt              integer NOT NULL,
    max_attempts         integer NOT NULL,
    body_text            text NOT NULL,
    file_ids             text[] NOT NULL,
    link                 text NOT NULL,
    submitted_at         timestamptz NOT NULL,
    late                 boolean NOT NULL,
    penalty_bp           integer NOT NULL,
    penalty_explanation  text NOT NULL,
    UNIQUE (assignment_id, student_id, attempt),
    CHECK (attempt >= 1 AND attempt <= max_attempts)
);
CREATE INDEX submissions_assignment ON submissions (tenant_id, assignment_id, submitted_at);

CREATE TABLE grades (
    grade_id           text PRIMARY KEY,
    tenant_id          text NOT NULL,
    assignment_id      text NOT NULL REFERENCES assignments (assignment_id),
    batch_id           text NOT NULL,
    student_id         text NOT NULL,
    submission_id      text NOT NULL REFERENCES submissions (submission_id),
    raw_score_centi    bigint NOT NULL CHECK (raw_score_centi >= 0),
    penalty_bp         integer NOT NULL,
    score_centi        bigint NOT NULL CHECK (score_centi >= 0),
    max_points_centi   bigint NOT NULL,
    rubric_scores      jsonb NOT NULL,
    feedback           text NOT NULL,
    feedback_file_ids  text[] NOT NULL,
    grader_id          text NOT NULL,
    released           boolean NOT NULL,
    version            bigint NOT NULL,
    updated_at         timestamptz NOT NULL,
    UNIQUE (assignment_id, student_id)
);
CREATE INDEX grades_batch ON grades (tenant_id, batch_id);

CREATE TABLE grade_audit (
    audit_id              text PRIMARY KEY,
    seq                   bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id             text NOT NULL,
    grade_id              text NOT NULL REFERENCES grades (grade_id),
    action                text NOT NULL,
    actor_id              text NOT NULL,
    reason                text NOT NULL,
    previous_score_centi  bigint,
    score_centi           bigint NOT NULL,
    previous_released     boolean NOT NULL,
    released              boolean NOT NULL,
    changes               jsonb NOT NULL,
    created_at            timestamptz NOT NULL
);
CREATE INDEX grade_audit_grade ON grade_audit (grade_id, seq);

CREATE TABLE gradebook_categories (
    tenant_id    text NOT NULL,
    batch_id     text NOT NULL,
    position     integer NOT NULL,
    name         text NOT NULL,
    weight_bp    integer NOT NULL CHECK (weight_bp BETWEEN 0 AND 10000),
    drop_lowest  integer NOT NULL CHECK (drop_lowest >= 0),
    PRIMARY KEY (tenant_id, batch_id, name)
);
"""

_TABLES = (
    "gradebook_categories",
    "grade_audit",
    "grades",
    "submissions",
    "attempt_counters",
    "student_exceptions",
    "assignments",
    "batch_members",
)


def upgrade() -> None:
    for statement in _SCHEMA.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in _TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
