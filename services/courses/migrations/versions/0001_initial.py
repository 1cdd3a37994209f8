"""Initial courses schema: departments, courses and their versions, batches, sections,
enrollments with status history, lesson completions and quiz attempts.

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

_STATEMENTS = [
    """
    CREATE TABLE departments (
        department_id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL,
        code text NOT NULL,
        name text NOT NULL,
        created_at timestamptz NOT NULL,
        UNIQUE (tenant_id, code)
    )
    """,
    """
    CREATE TABLE courses (
        course_id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL,
        code text NOT NULL,
        title text NOT NULL,
        description text NOT NULL DEFAULT '',
        language text NOT NULL DEFAULT 'en',
        tags text[] NOT NULL DEFAULT '{}',
        department_id uuid REFERENCES departments (department_id),
        owner_ids uuid[] NOT NULL DEFAULT '{}',
        state text NOT NULL,
        published_version integer NOT NULL DEFAULT 0,
        -- The content authors edit (modules -> lessons -> items); see domain.content_to_json.
        draft jsonb NOT NULL DEFAULT '{"modules": []}',
        row_version integer NOT NULL DEFAULT 1,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        UNIQUE (tenant_id, code)
    )
    """,
    # The catalog: published courses of a tenant in code order (keyset pagination).
    "CREATE INDEX courses_catalog ON courses (tenant_id, code) WHERE state = 'published'",
    "CREATE INDEX courses_tags ON courses USING gin (tags)",
    """
    CREATE TABLE course_versions (
        course_id uuid NOT NULL REFERENCES courses (course_id),
        version integer NOT NULL,
        tenant_id uuid NOT NULL,
        title text NOT NULL,
        -- Immutable snapshot of the draft at publish time: one row is one whole version.
        content jsonb NOT NULL,
        lesson_count integer NOT NULL,
        published_by uuid,
        published_at timestamptz NOT NULL,
        PRIMARY KEY (course_id, version)
    )
    """,
    """
    CREATE TABLE batches (
        batch_id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL,
        course_id uuid NOT NULL REFERENCES courses (course_id),
        name text NOT NULL,
        capacity integer NOT NULL CHECK (capacity >= 0),
        start_at timestamptz,
        end_at timestamptz,
        schedule text NOT NULL DEFAULT '',
        state text NOT NULL,
        created_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX batches_course ON batches (tenant_id, course_id)",
    """
    CREATE TABLE sections (
        section_id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL,
        batch_id uuid NOT NULL REFERENCES batches (batch_id),
        name text NOT NULL,
        created_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX sections_batch ON sections (batch_id)",
    """
    CREATE TABLE enrollments (
        enrollment_id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL,
        course_id uuid NOT NULL REFERENCES courses (course_id),
        batch_id uuid NOT NULL REFERENCES batches (batch_id),
        section_id uuid REFERENCES sections (section_id),
        user_id uuid NOT NULL,
        role text NOT NULL,
        status text NOT NULL,
        -- Arrival order: enrollments of a batch are inserted under the batch's row lock, so
        -- this sequence orders the waitlist.
        seq bigint GENERATED ALWAYS AS IDENTITY,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    )
    """,
    # One current (active, waitlisted or completed) enrollment per user per batch, enforced by
    # the database whatever the application does.
    """
    CREATE UNIQUE INDEX enrollments_one_current ON enrollments (tenant_id, batch_id, user_id)
        WHERE status IN ('active', 'waitlisted', 'completed')
    """,
    "CREATE INDEX enrollments_batch ON enrollments (batch_id, seq)",
    "CREATE INDEX enrollments_user ON enrollments (tenant_id, user_id, seq)",
    "CREATE INDEX enrollments_course_staff ON enrollments (course_id, user_id) "
    "WHERE role IN ('instructor', 'teaching_assistant')",
    """
    CREATE TABLE enrollment_history (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enrollment_id uuid NOT NULL REFERENCES enrollments (enrollment_id),
        status text NOT NULL,
        reason text NOT NULL,
        actor_id uuid,
        changed_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX enrollment_history_enrollment ON enrollment_history (enrollment_id, id)",
    """
    CREATE TABLE lesson_completions (
        tenant_id uuid NOT NULL,
        batch_id uuid NOT NULL,
        user_id uuid NOT NULL,
        lesson_id uuid NOT NULL,
        course_id uuid NOT NULL,
        completed_at timestamptz NOT NULL,
        PRIMARY KEY (batch_id, user_id, lesson_id)
    )
    """,
    """
    CREATE TABLE quiz_attempts (
        attempt_id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL,
        batch_id uuid NOT NULL,
        user_id uuid NOT NULL,
        course_id uuid NOT NULL,
        lesson_id uuid NOT NULL,
        item_id uuid NOT NULL,
        version integer NOT NULL,
        attempt_number integer NOT NULL,
        score integer NOT NULL,
        max_score integer NOT NULL,
        results jsonb NOT NULL,
        submitted_at timestamptz NOT NULL,
        UNIQUE (batch_id, user_id, item_id, attempt_number)
    )
    """,
]


def upgrade() -> None:
    for statement in _STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for table in (
        "quiz_attempts",
        "lesson_completions",
        "enrollment_history",
        "enrollments",
        "sections",
        "batches",
        "course_versions",
        "courses",
        "departments",
    ):
        op.execute(f"DROP TABLE {table}")
