"""Identity rules: pure Python, no I/O, no proto types.

Handlers load state, ask these functions what to do, and persist the answer. Everything that
needs randomness takes it from `secrets`; everything that needs time takes `now` as an argument,
so the rules are deterministic under test.
"""

from __future__ import annotations

import base64
import binascii
import csv
import enum
import hashlib
import hmac
import io
import json
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pyotp

from services.identity.common_passwords import is_common_password

# ---------------------------------------------------------------------------------------------
# Roles and permissions

PLATFORM_ADMIN = "platform_admin"
TENANT_ADMIN = "tenant_admin"
INSTRUCTOR = "instructor"
TEACHING_ASSISTANT = "teaching_assistant"
STUDENT = "student"
STAFF = "staff"

_SELF = frozenset({"identity.self.read", "identity.self.manage"})
_IDENTITY_ADMIN = frozenset(
    {
        "identity.tenants.read",
        "identity.tenants.update",
        "identity.users.create",
        "identity.users.read",
        "identity.users.update",
        "identity.users.delete",
        "identity.users.import",
        "identity.roles.read",
        "identity.roles.manage",
        "identity.roles.assign",
        "identity.permissions.check",
        "identity.apikeys.create",
        "identity.apikeys.read",
        "identity.apikeys.revoke",
        "identity.audit.read",
    }
)

# Other services' permissions held by each system role, one block per service. The RPC-level
# permission only opens the door: each service still checks ownership and course roles itself
# (an instructor manages *their* courses; `*.administer` means every resource of the tenant).
# Each block is owned by its service; the service's docs explain what each permission allows.
_ALL_ROLES = (TENANT_ADMIN, INSTRUCTOR, TEACHING_ASSISTANT, STUDENT, STAFF)

_COURSES_GRANTS: Mapping[str, frozenset[str]] = {
    TENANT_ADMIN: frozenset(
        {
            "courses.courses.read",
            "courses.courses.manage",
            "courses.courses.administer",
            "courses.departments.manage",
            "courses.enrollments.read",
            "courses.enrollments.manage",
            "courses.enrollments.self",
            "courses.progress.read",
            "courses.progress.self",
        }
    ),
    INSTRUCTOR: frozenset(
        {
            "courses.courses.read",
            "courses.courses.manage",
            "courses.enrollments.read",
            "courses.enrollments.manage",
            "courses.enrollments.self",
            "courses.progress.read",
            "courses.progress.self",
        }
    ),
    TEACHING_ASSISTANT: frozenset(
        {
            "courses.courses.read",
            "courses.enrollments.read",
            "courses.enrollments.self",
            "courses.progress.read",
            "courses.progress.self",
        }
    ),
    STUDENT: frozenset(
        {"courses.courses.read", "courses.enrollments.self", "courses.progress.self"}
    ),
    STAFF: frozenset({"courses.courses.read", "courses.enrollments.self", "courses.progress.self"}),
}

_PROFILES_GRANTS: Mapping[str, frozenset[str]] = {
    **{role: frozenset({"profiles.profiles.read", "profiles.self.manage"}) for role in _ALL_ROLES},
    TENANT_ADMIN: frozenset(
        {"profiles.profiles.read", "profiles.self.manage", "profiles.profiles.administer"}
    ),
}

_FILES_GRANTS: Mapping[str, frozenset[str]] = {
    **{role: frozenset({"files.files.upload", "files.files.read"}) for role in _ALL_ROLES},
    TENANT_ADMIN: frozenset(
        {"files.files.upload", "files.files.read", "files.files.administer", "files.quotas.manage"}
    ),
}

_ASSESSMENT_GRANTS: Mapping[str, frozenset[str]] = {
    TENANT_ADMIN: frozenset(
        {
            "assessment.assignments.read",
            "assessment.assignments.manage",
            "assessment.assignments.administer",
            "assessment.submissions.create",
            "assessment.submissions.read",
            "assessment.grades.read",
            "assessment.grades.manage",
            "assessment.gradebook.read",
        }
    ),
    INSTRUCTOR: frozenset(
        {
            "assessment.assignments.read",
            "assessment.assignments.manage",
            "assessment.submissions.read",
            "assessment.grades.read",
            "assessment.grades.manage",
            "assessment.gradebook.read",
        }
    ),
    TEACHING_ASSISTANT: frozenset(
        {
            "assessment.assignments.read",
            "assessment.submissions.read",
            "assessment.grades.read",
            "assessment.grades.manage",
            "assessment.gradebook.read",
        }
    ),
    STUDENT: frozenset(
        {
            "assessment.assignments.read",
            "assessment.submissions.create",
            "assessment.submissions.read",
            "assessment.grades.read",
        }
    ),
    STAFF: frozenset({"assessment.assignments.read"}),
}

_NOTES_GRANTS: Mapping[str, frozenset[str]] = {
    role: frozenset({"notes.notes.read", "notes.notes.manage"}) for role in _ALL_ROLES
}

_NOTIFICATIONS_GRANTS: Mapping[str, frozenset[str]] = {
    **{
        role: frozenset({"notifications.inbox.read", "notifications.preferences.manage"})
        for role in _ALL_ROLES
    },
    INSTRUCTOR: frozenset(
        {
            "notifications.inbox.read",
            "notifications.preferences.manage",
            "notifications.sends.create",
        }
    ),
    TENANT_ADMIN: frozenset(
        {
            "notifications.inbox.read",
            "notifications.preferences.manage",
            "notifications.sends.create",
            "notifications.templates.manage",
            "notifications.history.read",
        }
    ),
}

_SERVICE_GRANTS = (
    _COURSES_GRANTS,
    _PROFILES_GRANTS,
    _FILES_GRANTS,
    _ASSESSMENT_GRANTS,
    _NOTES_GRANTS,
    _NOTIFICATIONS_GRANTS,
)


def _granted(role: str) -> frozenset[str]:
    out: set[str] = set()
    for grants in _SERVICE_GRANTS:
        out |= grants.get(role, frozenset())
    return frozenset(out)


_TENANT_ADMIN = _IDENTITY_ADMIN | _granted(TENANT_ADMIN)

#: System roles exist in every tenant; their permission sets are part of the platform's code.
SYSTEM_ROLES: Mapping[str, frozenset[str]] = {
    PLATFORM_ADMIN: _SELF
    | _TENANT_ADMIN
    | {"identity.tenants.create", "identity.keys.rotate", "identity.platform.manage"},
    TENANT_ADMIN: _SELF | _TENANT_ADMIN,
    INSTRUCTOR: _SELF | {"identity.users.read"} | _granted(INSTRUCTOR),
    TEACHING_ASSISTANT: _SELF | {"identity.users.read"} | _granted(TEACHING_ASSISTANT),
    STUDENT: _SELF | _granted(STUDENT),
    STAFF: _SELF | {"identity.users.read"} | _granted(STAFF),
}


def role_permissions(roles: Iterable[str]) -> frozenset[str]:
    """Union of the system roles' permissions (what a token for these roles carries)."""
    out: set[str] = set()
    for role in roles:
        out |= SYSTEM_ROLES.get(role, frozenset())
    return frozenset(out)


#: Roles a tenant admin may hand out; platform_admin only exists in the platform tenant.
TENANT_ASSIGNABLE_SYSTEM_ROLES = frozenset(SYSTEM_ROLES) - {PLATFORM_ADMIN}

_PERMISSION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){2}$")
_SCOPE_RE = re.compile(r"^[a-z][a-z0-9-]*/[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Assignment:
    role_name: str
    scope: str  # "" = tenant-wide


def permissions_of(role_name: str, custom_roles: Mapping[str, frozenset[str]]) -> frozenset[str]:
    if role_name in SYSTEM_ROLES:
        return SYSTEM_ROLES[role_name]
    return custom_roles.get(role_name, frozenset())


def tenant_wide_permissions(
    assignments: Iterable[Assignment], custom_roles: Mapping[str, frozenset[str]]
) -> frozenset[str]:
    """Permissions that go into the access token: only tenant-wide grants."""
    perms: set[str] = set()
    for a in assignments:
        if not a.scope:
            perms |= permissions_of(a.role_name, custom_roles)
    return frozenset(perms)


def has_permission(
    assignments: Iterable[Assignment],
    custom_roles: Mapping[str, frozenset[str]],
    permission: str,
    scope: str = "",
) -> bool:
    """A tenant-wide grant covers every scope; a scoped grant covers only its own scope."""
    return any(
        permission in permissions_of(a.role_name, custom_roles)
        for a in assignments
        if not a.scope or a.scope == scope
    )


SELF_SERVICE_PERMISSIONS = _SELF


def token_permissions(
    assignments: Iterable[Assignment],
    custom_roles: Mapping[str, frozenset[str]],
    *,
    mfa_required_roles: Iterable[str],
    mfa_enabled: bool,
) -> frozenset[str]:
    """The `perms` claim. A user holding a role for which the tenant requires MFA, without MFA
    enrolled, gets self-service permissions only: enough to enrol TOTP, nothing else."""
    perms = tenant_wide_permissions(assignments, custom_roles)
    required = set(mfa_required_roles)
    if not mfa_enabled and any(a.role_name in required for a in assignments):
        return perms & SELF_SERVICE_PERMISSIONS
    return perms


def validate_custom_role(name: str, permissions: Sequence[str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if name in SYSTEM_ROLES:
        problems.append(("name", f"'{name}' is a system role"))
    if not re.fullmatch(r"[a-z][a-z0-9_]{1,63}", name):
        problems.append(("name", "must be lower_snake_case, 2-64 characters"))
    for i, perm in enumerate(permissions):
        if not _PERMISSION_RE.fullmatch(perm):
            problems.append((f"permissions[{i}]", "must look like 'service.resource.action'"))
        elif (
            perm.startswith("identity.")
            and perm in SYSTEM_ROLES[PLATFORM_ADMIN] - SYSTEM_ROLES[TENANT_ADMIN]
        ):
            problems.append((f"permissions[{i}]", "platform permissions cannot be granted"))
    return problems


def validate_scope(scope: str) -> bool:
    return scope == "" or bool(_SCOPE_RE.fullmatch(scope))


# ---------------------------------------------------------------------------------------------
# Tenants, settings and password policy


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = 12
    max_length: int = 128
    block_common_passwords: bool = True


@dataclass(frozen=True)
class TenantSettings:
    password_policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    self_signup_enabled: bool = False
    allowed_email_domains: tuple[str, ...] = ()
    session_lifetime: timedelta = timedelta(days=30)
    mfa_required_roles: tuple[str, ...] = ()

    def to_json(self) -> str:
        p = self.password_policy
        return json.dumps(
            {
                "password_policy": {
                    "min_length": p.min_length,
                    "max_length": p.max_length,
                    "block_common_passwords": p.block_common_passwords,
                },
                "self_signup_enabled": self.self_signup_enabled,
                "allowed_email_domains": list(self.allowed_email_domains),
                "session_lifetime_seconds": int(self.session_lifetime.total_seconds()),
                "mfa_required_roles": list(self.mfa_required_roles),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, raw: str) -> TenantSettings:
        data = json.loads(raw)
        p = data.get("password_policy", {})
        return cls(
            password_policy=PasswordPolicy(
                min_length=int(p.get("min_length", 12)),
                max_length=int(p.get("max_length", 128)),
                block_common_passwords=bool(p.get("block_common_passwords", True)),
            ),
            self_signup_enabled=bool(data.get("self_signup_enabled", False)),
            allowed_email_domains=tuple(data.get("allowed_email_domains", ())),
            session_lifetime=timedelta(seconds=int(data.get("session_lifetime_seconds", 2592000))),
            mfa_required_roles=tuple(data.get("mfa_required_roles", ())),
        )


MIN_SESSION_LIFETIME = timedelta(minutes=15)
MAX_SESSION_LIFETIME = timedelta(days=365)


def validate_settings(settings: TenantSettings) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    p = settings.password_policy
    if p.min_length < 8:
        problems.append(("settings.password_policy.min_length", "must be at least 8"))
    if p.max_length < 64:
        problems.append(("settings.password_policy.max_length", "must be at least 64"))
    if p.max_length > 1024:
        problems.append(("settings.password_policy.max_length", "must be at most 1024"))
    if p.min_length > p.max_length:
        problems.append(("settings.password_policy.min_length", "must not exceed max_length"))
    if not MIN_SESSION_LIFETIME <= settings.session_lifetime <= MAX_SESSION_LIFETIME:
        problems.append(("settings.session_lifetime", "must be between 15 minutes and 365 days"))
    for i, domain in enumerate(settings.allowed_email_domains):
        if not re.fullmatch(r"[a-z0-9.-]+\.[a-z]{2,}", domain):
            problems.append((f"settings.allowed_email_domains[{i}]", "not a lower-case domain"))
    for i, role in enumerate(settings.mfa_required_roles):
        if not re.fullmatch(r"[a-z][a-z0-9_]{1,63}", role):
            problems.append((f"settings.mfa_required_roles[{i}]", "not a role name"))
    return problems


def validate_slug(slug: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9][a-z0-9-]{1,62}", slug))


def check_password(
    policy: PasswordPolicy, password: str, *, email: str = "", display_name: str = ""
) -> str | None:
    """Return why the password is unacceptable, or None. Length rules only (NIST 800-63B)."""
    normalised = unicodedata.normalize("NFKC", password)
    length = len(normalised)
    if length < policy.min_length:
        return f"must be at least {policy.min_length} characters"
    if length > policy.max_length:
        return f"must be at most {policy.max_length} characters"
    if policy.block_common_passwords:
        lowered = normalised.lower()
        if is_common_password(lowered):
            return "is too common; choose a less predictable password"
        local = email.split("@", 1)[0].lower()
        if local and len(local) >= 4 and lowered in {local, email.lower()}:
            return "must not be your email address"
        if display_name and lowered == display_name.lower().replace(" ", ""):
            return "must not be your name"
    return None


def normalise_password(password: str) -> str:
    """Passwords are compared after NFKC so the same visible text always matches."""
    return unicodedata.normalize("NFKC", password)


# ---------------------------------------------------------------------------------------------
# Emails

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9-]{1,63})+$")


def normalise_email(raw: str) -> str | None:
    """Trim, NFKC and lower-case the whole address; None when it is not an address.

    Lower-casing the local part deviates from RFC 5321 but matches every real provider and
    prevents look-alike duplicates within a tenant.
    """
    email = unicodedata.normalize("NFKC", raw).strip().lower()
    if len(email) > 320 or not _EMAIL_RE.fullmatch(email):
        return None
    return email


def email_domain_allowed(email: str, settings: TenantSettings) -> bool:
    if not settings.allowed_email_domains:
        return True
    return email.rsplit("@", 1)[1] in settings.allowed_email_domains


# ---------------------------------------------------------------------------------------------
# Users


class UserStatus(enum.StrEnum):
    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    DELETED = "deleted"


_TRANSITIONS: Mapping[UserStatus, frozenset[UserStatus]] = {
    UserStatus.ACTIVE: frozenset({UserStatus.DEACTIVATED, UserStatus.DELETED}),
    UserStatus.DEACTIVATED: frozenset({UserStatus.ACTIVE, UserStatus.DELETED}),
    UserStatus.DELETED: frozenset(),
}


def can_transition(current: UserStatus, target: UserStatus) -> bool:
    return target in _TRANSITIONS[current]


# ---------------------------------------------------------------------------------------------
# Secrets: refresh tokens, one-time tokens, recovery codes, API keys


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_opaque_token(nbytes: int = 32) -> tuple[str, str]:
    """A random token (256 bits by default) and the SHA-256 hash we store instead of it.

    A fast hash is right here: the token has full entropy, so brute force is hopeless anyway.
    """
    raw = secrets.token_urlsafe(nbytes)
    return raw, sha256_hex(raw)


@dataclass(frozen=True)
class RefreshTokenRecord:
    token_hash: str
    session_id: str
    used: bool
    expires_at: datetime


@dataclass(frozen=True)
class SessionState:
    session_id: str
    user_id: str
    revoked: bool
    expires_at: datetime


class RefreshOutcome(enum.Enum):
    ROTATE = "rotate"  # issue the next token of the family
    REUSE_DETECTED = "reuse"  # an already rotated token came back: revoke the whole family
    REJECT = "reject"  # unknown, expired or revoked


def decide_refresh(
    token: RefreshTokenRecord | None, session: SessionState | None, now: datetime
) -> RefreshOutcome:
    if token is None or session is None:
        return RefreshOutcome.REJECT
    if token.used:
        # Either the legitimate client or a thief holds the newer token; we cannot tell which,
        # so the whole family dies (OAuth 2.0 Security BCP, refresh token rotation).
        return RefreshOutcome.REUSE_DETECTED if not session.revoked else RefreshOutcome.REJECT
    if session.revoked or now >= session.expires_at or now >= token.expires_at:
        return RefreshOutcome.REJECT
    return RefreshOutcome.ROTATE


@dataclass(frozen=True)
class OneTimeToken:
    """A password-reset or email-verification token as stored (hash only)."""

    purpose: str
    user_id: str
    expires_at: datetime
    used_at: datetime | None


def one_time_token_usable(token: OneTimeToken | None, purpose: str, now: datetime) -> bool:
    return (
        token is not None
        and token.purpose == purpose
        and token.used_at is None
        and now < token.expires_at
    )


RECOVERY_CODE_COUNT = 10


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """Codes like "k3p9-x7m2-q4w8" (60 bits each); shown once, stored as SHA-256 hashes."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return [
        "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(3))
        for _ in range(count)
    ]


def normalise_recovery_code(code: str) -> str:
    return code.strip().lower().replace(" ", "")


API_KEY_PREFIX = "sk"


def new_api_key(key_id: str) -> tuple[str, str]:
    """The full key "sk_<id hex>_<secret>" and the hash of its secret part."""
    secret = secrets.token_urlsafe(32)
    return f"{API_KEY_PREFIX}_{key_id.replace('-', '')}_{secret}", sha256_hex(secret)


def api_key_prefix(key_id: str) -> str:
    return f"{API_KEY_PREFIX}_{key_id.replace('-', '')}"


def parse_api_key(key: str) -> tuple[str, str] | None:
    """(key id as UUID string, secret) or None when the format is wrong."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not re.fullmatch(r"[0-9a-f]{32}", parts[1]):
        return None
    hex_id = parts[1]
    key_id = f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"
    return key_id, parts[2]


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(sha256_hex(secret), stored_hash)


# ---------------------------------------------------------------------------------------------
# TOTP (RFC 6238): 30 s steps, 6 digits, ±1 step, each step accepted once per user

TOTP_STEP_SECONDS = 30


def new_totp_secret() -> str:
    return pyotp.random_base32(32)


def totp_provisioning_uri(secret: str, email: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def verify_totp(secret: str, code: str, now: datetime, last_used_step: int | None) -> int | None:
    """Return the time step the code belongs to when it is valid and newer than the last used
    step (so each code, and any older one, works once); None otherwise."""
    if not re.fullmatch(r"[0-9]{6}", code):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in (current - 1, current, current + 1):
        if last_used_step is not None and step <= last_used_step:
            continue
        candidate = totp.generate_otp(step)
        if hmac.compare_digest(candidate, code):
            return step
    return None


# ---------------------------------------------------------------------------------------------
# Login throttling


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int  # failures allowed before any delay
    base_delay: timedelta
    max_delay: timedelta  # the cap: no attacker can push the wait beyond this
    forget_after: timedelta  # failures older than this no longer count


#: Per account (tenant + normalised email, also for unknown emails so the throttle reveals
#: nothing). Short cap: an attacker can slow a user down by at most a minute, never lock them out.
ACCOUNT_THROTTLE = ThrottlePolicy(
    5, timedelta(seconds=1), timedelta(seconds=60), timedelta(hours=1)
)
#: Per source address: many accounts from one address (password spraying) get a long delay.
ADDRESS_THROTTLE = ThrottlePolicy(
    20, timedelta(seconds=1), timedelta(minutes=15), timedelta(hours=1)
)


@dataclass(frozen=True)
class ThrottleState:
    failures: int = 0
    last_failure_at: datetime | None = None
    blocked_until: datetime | None = None


def throttle_wait(state: ThrottleState, now: datetime) -> timedelta:
    """How long the caller must wait before another attempt is even checked."""
    if state.blocked_until is None or now >= state.blocked_until:
        return timedelta(0)
    return state.blocked_until - now


def record_failure(state: ThrottleState, policy: ThrottlePolicy, now: datetime) -> ThrottleState:
    failures = state.failures
    if state.last_failure_at is not None and now - state.last_failure_at > policy.forget_after:
        failures = 0
    failures += 1
    blocked_until = None
    if failures > policy.free_failures:
        exponent = min(failures - policy.free_failures - 1, 30)
        delay = min(policy.base_delay * (2**exponent), policy.max_delay)
        blocked_until = now + delay
    return ThrottleState(failures=failures, last_failure_at=now, blocked_until=blocked_until)


def record_success(state: ThrottleState) -> ThrottleState:
    return replace(state, failures=0, blocked_until=None)


# ---------------------------------------------------------------------------------------------
# Pagination: opaque tokens over a (created_at, id) keyset


def encode_page_token(created_at: datetime, row_id: str, filter_fingerprint: str) -> str:
    payload = json.dumps([created_at.isoformat(), row_id, filter_fingerprint]).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_page_token(token: str, filter_fingerprint: str) -> tuple[datetime, str] | None:
    """None when the token is malformed or was minted for different filters."""
    try:
        padded = token + "=" * (-len(token) % 4)
        created, row_id, fingerprint = json.loads(base64.urlsafe_b64decode(padded))
        if fingerprint != filter_fingerprint:
            return None
        parsed = datetime.fromisoformat(created)
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed, str(row_id)


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


DEFAULT_PAGE_SIZE = 50


def effective_page_size(requested: int, maximum: int = 500) -> int:
    return DEFAULT_PAGE_SIZE if requested <= 0 else min(requested, maximum)


# ---------------------------------------------------------------------------------------------
# Bulk import (CSV)

MAX_IMPORT_ROWS = 10_000
MAX_BATCH_CREATE = 100
IMPORTABLE_ROLES = frozenset({STUDENT, STAFF, INSTRUCTOR, TEACHING_ASSISTANT})


@dataclass(frozen=True)
class ImportRow:
    line: int
    email: str
    display_name: str
    role: str
    password: str  # "" = the user sets one through the reset flow


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    message: str


@dataclass(frozen=True)
class ParsedImport:
    rows: list[ImportRow]
    errors: list[RowError]
    total_rows: int


def parse_import_csv(
    data: bytes,
    *,
    default_role: str,
    settings: TenantSettings,
    password_check: Callable[[str, str, str], str | None] | None = None,
) -> ParsedImport:
    """Parse and validate a CSV. Errors carry the 1-based line number (header = line 1).

    A file-level problem (encoding, header, too many rows) is reported on line 1 with no rows.
    Duplicate emails inside the file: the first occurrence wins, later ones are errors.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return ParsedImport([], [RowError(1, "file", "not UTF-8 text")], 0)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except (StopIteration, csv.Error):
        return ParsedImport([], [RowError(1, "file", "missing header row")], 0)
    if "email" not in header or "display_name" not in header:
        return ParsedImport([], [RowError(1, "header", "needs columns email and display_name")], 0)
    index = {name: i for i, name in enumerate(header)}
    rows: list[ImportRow] = []
    errors: list[RowError] = []
    seen: set[str] = set()
    total = 0
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            total += 1
            if total > MAX_IMPORT_ROWS:
                return ParsedImport(
                    [], [RowError(line, "file", f"more than {MAX_IMPORT_ROWS} rows")], total
                )

            def cell(name: str, record: list[str] = record) -> str:
                i = index.get(name)
                return record[i].strip() if i is not None and i < len(record) else ""

            email = normalise_email(cell("email"))
            name = cell("display_name")
            role = cell("role").lower() or default_role
            password = cell("password")
            if email is None:
                errors.append(RowError(line, "email", "not a valid email address"))
                continue
            if not email_domain_allowed(email, settings):
                errors.append(RowError(line, "email", "email domain not allowed in this tenant"))
                continue
            if email in seen:
                errors.append(RowError(line, "email", "duplicate email in this file"))
                continue
            if not name or len(name) > 200:
                errors.append(RowError(line, "display_name", "required, at most 200 characters"))
                continue
            if role not in IMPORTABLE_ROLES:
                errors.append(
                    RowError(line, "role", f"must be one of {', '.join(sorted(IMPORTABLE_ROLES))}")
                )
                continue
            if password and password_check is not None:
                problem = password_check(password, email, name)
                if problem:
                    errors.append(RowError(line, "password", problem))
                    continue
            seen.add(email)
            rows.append(ImportRow(line, email, name, role, password))
    except csv.Error as exc:
        errors.append(RowError(reader.line_num, "file", f"malformed CSV: {exc}"))
    return ParsedImport(rows, errors, total)


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# Domain events (mapped to identity_events.proto by events.py)


@dataclass(frozen=True)
class UserCreated:
    tenant_id: str
    user_id: str
    email: str
    display_name: str
    roles: tuple[str, ...]
    occurred_at: datetime


@dataclass(frozen=True)
class UserUpdated:
    tenant_id: str
    user_id: str
    email: str
    display_name: str
    changed_fields: tuple[str, ...]
    occurred_at: datetime


@dataclass(frozen=True)
class UserStatusChanged:
    """Deactivated, activated or deleted (`status` is the new status)."""

    tenant_id: str
    user_id: str
    status: UserStatus
    occurred_at: datetime


@dataclass(frozen=True)
class RoleChanged:
    tenant_id: str
    user_id: str
    role_name: str
    scope: str
    assigned: bool  # False = revoked
    occurred_at: datetime


@dataclass(frozen=True)
class TokenIssued:
    """A reset or verification token for the notifications path (`purpose` says which)."""

    tenant_id: str
    user_id: str
    email: str
    display_name: str
    purpose: str
    raw_token: str = field(repr=False)
    expires_at: datetime
    occurred_at: datetime


DomainEvent = UserCreated | UserUpdated | UserStatusChanged | RoleChanged | TokenIssued

PURPOSE_PASSWORD_RESET = "password_reset"
PURPOSE_EMAIL_VERIFICATION = "email_verification"
PURPOSE_MFA_CHALLENGE = "mfa_challenge"
