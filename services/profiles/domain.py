"""Profiles' rules: field privacy, profile edits, preference schemas, follows, page tokens.

Pure Python: no I/O, no proto types. The store and the servicers translate to and from these.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import re
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from suuupra_runtime.errors import FieldViolation, InvalidArgument

# ---------------------------------------------------------------------------------------------
# Privacy


class Visibility(enum.Enum):
    PUBLIC = "public"
    TENANT = "tenant"
    FOLLOWERS = "followers"
    ONLY_ME = "only_me"


class Relation(enum.Enum):
    """What the caller is to the profile's owner (strongest relation wins)."""

    STRANGER = "stranger"  # anonymous, or not a member of the profile's tenant
    MEMBER = "member"  # signed-in member of the same tenant
    FOLLOWER = "follower"  # member who follows the owner
    SELF = "self"


# Which relations each visibility admits. FOLLOWERS does not include plain members: following is
# the opt-in that widens the audience.
_AUDIENCE: Mapping[Visibility, frozenset[Relation]] = {
    Visibility.PUBLIC: frozenset(Relation),
    Visibility.TENANT: frozenset({Relation.MEMBER, Relation.FOLLOWER, Relation.SELF}),
    Visibility.FOLLOWERS: frozenset({Relation.FOLLOWER, Relation.SELF}),
    Visibility.ONLY_ME: frozenset({Relation.SELF}),
}

# Privacy-controlled field groups, in the order the contract lists them.
PRIVACY_FIELDS = ("display_name", "headline", "bio", "avatar", "links", "locale", "connections")
# Profile fields each privacy group covers.
FIELDS_OF_GROUP: Mapping[str, tuple[str, ...]] = {
    "display_name": ("display_name",),
    "headline": ("headline",),
    "bio": ("bio",),
    "avatar": ("avatar_file_id",),
    "links": ("links",),
    "locale": ("locale", "time_zone"),
    "connections": (),
}

# Privacy by default: members of the tenant see the profile, nobody outside it; locale and time
# zone are personal settings rather than profile content.
DEFAULT_PRIVACY: Mapping[str, Visibility] = {
    "display_name": Visibility.TENANT,
    "headline": Visibility.TENANT,
    "bio": Visibility.TENANT,
    "avatar": Visibility.TENANT,
    "links": Visibility.TENANT,
    "locale": Visibility.ONLY_ME,
    "connections": Visibility.TENANT,
}


def can_see(visibility: Visibility, relation: Relation) -> bool:
    return relation in _AUDIENCE[visibility]


def relation_of(
    *, caller_id: str | None, caller_tenant: str | None, owner_id: str, owner_tenant: str,
    caller_follows: bool,
) -> Relation:  # fmt: skip
    if caller_id is None or caller_tenant != owner_tenant:
        return Relation.STRANGER
    if caller_id == owner_id:
        return Relation.SELF
    return Relation.FOLLOWER if caller_follows else Relation.MEMBER


def privacy_from(stored: Mapping[str, str] | None) -> dict[str, Visibility]:
    """Stored privacy (group → value) over the defaults; unknown stored groups are ignored."""
    out = dict(DEFAULT_PRIVACY)
    for group, value in (stored or {}).items():
        if group in out:
            out[group] = Visibility(value)
    return out


def privacy_to_store(privacy: Mapping[str, Visibility]) -> dict[str, str]:
    return {group: privacy[group].value for group in PRIVACY_FIELDS}


# ---------------------------------------------------------------------------------------------
# Profiles


@dataclass(frozen=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True)
class Profile:
    tenant_id: str
    user_id: str
    display_name: str
    headline: str = ""
    bio: str = ""
    avatar_file_id: str = ""
    locale: str = "en"
    time_zone: str = "UTC"
    links: tuple[Link, ...] = ()
    privacy: Mapping[str, Visibility] = field(default_factory=lambda: dict(DEFAULT_PRIVACY))
    version: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class ProfileView:
    """A profile as one caller may see it: hidden fields emptied, `visible` names the rest."""

    profile: Profile
    relation: Relation
    visible: tuple[str, ...]
    followed: bool = False  # the caller follows the owner

    @property
    def is_owner(self) -> bool:
        return self.relation is Relation.SELF


@cache
def _view_plan(
    privacy: tuple[Visibility, ...], relation: Relation
) -> tuple[tuple[str, ...], Mapping[str, Any]]:
    """(visible fields, blanked fields) for one privacy setting and relation. Cached: there are
    few distinct combinations, and reads compute this on every call."""
    groups = {g for g, v in zip(PRIVACY_FIELDS, privacy, strict=True) if can_see(v, relation)}
    visible = tuple(f for g in PRIVACY_FIELDS if g in groups for f in FIELDS_OF_GROUP[g])
    blank: dict[str, Any] = {}
    for group in PRIVACY_FIELDS:
        if group not in groups:
            for name in FIELDS_OF_GROUP[group]:
                blank[name] = () if name == "links" else ""
    return visible, MappingProxyType(blank)


def view_for(profile: Profile, relation: Relation, *, followed: bool = False) -> ProfileView:
    """`profile` with every field the relation may not see blanked out."""
    privacy = tuple(profile.privacy[g] for g in PRIVACY_FIELDS)
    visible, blank = _view_plan(privacy, relation)
    seen = replace(profile, **blank) if blank else profile
    return ProfileView(seen, relation, visible, followed)


# Limits for user-written fields.
MAX_DISPLAY_NAME = 100
MAX_HEADLINE = 160
MAX_BIO = 2000
MAX_LINKS = 10
MAX_LINK_LABEL = 50
MAX_URL = 500
_BCP47 = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

EDITABLE_FIELDS = frozenset(
    {"display_name", "headline", "bio", "avatar_file_id", "locale", "time_zone", "links"}
)


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def normalize_display_name(value: str) -> str:
    return " ".join(value.split())


@dataclass(frozen=True)
class ProfilePatch:
    """New values for the named fields (None = leave), and privacy groups to change."""

    display_name: str | None = None
    headline: str | None = None
    bio: str | None = None
    avatar_file_id: str | None = None
    locale: str | None = None
    time_zone: str | None = None
    links: tuple[Link, ...] | None = None
    privacy: Mapping[str, Visibility] = field(default_factory=dict)


def _text_violation(name: str, value: str, maximum: int, *, required: bool) -> str | None:
    if required and not value.strip():
        return "must not be empty"
    if len(value) > maximum:
        return f"at most {maximum} characters"
    if _CONTROL.search(value):
        return "must not contain control characters"
    return None


def validate_patch(patch: ProfilePatch, prefix: str = "profile.") -> ProfilePatch:
    """The patch with normalised values, or InvalidArgument naming every bad field."""
    bad: list[FieldViolation] = []

    def check(name: str, problem: str | None) -> None:
        if problem:
            bad.append(FieldViolation(prefix + name, problem))

    display_name = patch.display_name
    if display_name is not None:
        display_name = normalize_display_name(display_name)
        check(
            "display_name",
            _text_violation("display_name", display_name, MAX_DISPLAY_NAME, required=True),
        )
    if patch.headline is not None:
        check("headline", _text_violation("headline", patch.headline, MAX_HEADLINE, required=False))
    if patch.bio is not None:
        # Newlines are fine in a bio; other control characters are not.
        check("bio", _text_violation("bio", patch.bio, MAX_BIO, required=False))
    if patch.avatar_file_id and not _UUID.match(patch.avatar_file_id):
        check("avatar_file_id", "must be a files id (UUID) or empty")
    if patch.locale is not None and not _BCP47.match(patch.locale):
        check("locale", "must be a BCP 47 language tag such as en or en-IN")
    if patch.time_zone is not None and patch.time_zone not in _time_zones():
        check("time_zone", "must be an IANA time zone such as Asia/Kolkata")
    if patch.links is not None:
        if len(patch.links) > MAX_LINKS:
            check("links", f"at most {MAX_LINKS} links")
        for i, link in enumerate(patch.links):
            check(
                f"links[{i}].label",
                _text_violation("label", link.label, MAX_LINK_LABEL, required=True),
            )
            check(f"links[{i}].url", _url_violation(link.url))
    if bad:
        raise InvalidArgument(bad)
    return replace(patch, display_name=display_name)


def _url_violation(url: str) -> str | None:
    if len(url) > MAX_URL:
        return f"at most {MAX_URL} characters"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or _CONTROL.search(url):
        return "must be an absolute http(s) URL"
    return None


def apply_patch(profile: Profile, patch: ProfilePatch) -> tuple[Profile, list[str]]:
    """The edited profile (version bumped when anything changed) and the changed field paths."""
    changes: dict[str, Any] = {}
    for name in EDITABLE_FIELDS:
        value = getattr(patch, name)
        if value is not None and value != getattr(profile, name):
            changes[name] = value
    changed = sorted(changes)
    privacy = dict(profile.privacy)
    for group, visibility in patch.privacy.items():
        if privacy[group] is not visibility:
            privacy[group] = visibility
            changed.append(f"privacy.{group}")
    if not changed:
        return profile, []
    return replace(profile, **changes, privacy=privacy, version=profile.version + 1), changed


def tombstone(profile: Profile) -> Profile:
    """What is kept of a deleted user's profile: identity only, no personal data."""
    return Profile(
        tenant_id=profile.tenant_id,
        user_id=profile.user_id,
        display_name="",
        privacy=dict(DEFAULT_PRIVACY),
        version=profile.version + 1,
        created_at=profile.created_at,
    )


def initial_display_name(name: str, fallback: str = "") -> str:
    """Identity's display name, cut to what profiles accept (identity allows longer)."""
    cleaned = _CONTROL.sub("", normalize_display_name(name))[:MAX_DISPLAY_NAME]
    return cleaned or fallback


# ---------------------------------------------------------------------------------------------
# Preferences


@dataclass(frozen=True)
class PreferenceSpec:
    key: str
    description: str
    type: str  # "enum" | "bool" | "number"
    default: str
    allowed: tuple[str, ...] = ()
    minimum: float = 0.0
    maximum: float = 0.0

    def violation(self, value: str) -> str | None:
        if self.type == "enum":
            return None if value in self.allowed else "must be one of " + ", ".join(self.allowed)
        if self.type == "bool":
            return None if value in ("true", "false") else "must be true or false"
        try:
            number = float(value)
        except ValueError:
            return "must be a number"
        # NaN fails both comparisons, so it is refused here too.
        if not (self.minimum <= number <= self.maximum):
            return f"must be between {self.minimum:g} and {self.maximum:g}"
        return None

    def normalize(self, value: str) -> str:
        return f"{float(value):g}" if self.type == "number" else value


PREFERENCE_SCHEMA: Mapping[str, PreferenceSpec] = {
    spec.key: spec
    for spec in (
        PreferenceSpec(
            "theme", "Colour theme of the apps", "enum", "system", ("light", "dark", "system")
        ),
        PreferenceSpec(
            "email_digest",
            "How often activity is summarised by email",
            "enum",
            "weekly",
            ("off", "daily", "weekly"),
        ),
        PreferenceSpec("notifications.email", "Receive notifications by email", "bool", "true"),
        PreferenceSpec("notifications.push", "Receive push notifications", "bool", "true"),
        PreferenceSpec(
            "video.playback_speed",
            "Default video playback speed",
            "number",
            "1",
            minimum=0.5,
            maximum=2.0,
        ),
        PreferenceSpec("video.autoplay", "Play the next lesson automatically", "bool", "true"),
    )
}


@dataclass(frozen=True)
class PreferenceValue:
    key: str
    value: str
    is_default: bool


def effective_preferences(stored: Mapping[str, str]) -> list[PreferenceValue]:
    """Every known key: the stored value, else the default. Stored keys no longer known (a key
    retired from the schema) are not shown."""
    return [
        PreferenceValue(key, stored[key], False)
        if key in stored
        else PreferenceValue(key, spec.default, True)
        for key, spec in sorted(PREFERENCE_SCHEMA.items())
    ]


def apply_preferences(
    stored: Mapping[str, str], set_values: Mapping[str, str], reset: Sequence[str]
) -> dict[str, str]:
    """New stored preferences; InvalidArgument naming every unknown key or bad value."""
    bad: list[FieldViolation] = []
    for key, value in sorted(set_values.items()):
        spec = PREFERENCE_SCHEMA.get(key)
        if spec is None:
            bad.append(FieldViolation(f"set[{key}]", "unknown preference key"))
            continue
        problem = spec.violation(value)
        if problem:
            bad.append(FieldViolation(f"set[{key}]", problem))
    for i, key in enumerate(reset):
        if key not in PREFERENCE_SCHEMA:
            bad.append(FieldViolation(f"reset[{i}]", "unknown preference key"))
        elif key in set_values:
            bad.append(FieldViolation(f"reset[{i}]", "key is also being set"))
    if bad:
        raise InvalidArgument(bad)
    out = {k: v for k, v in stored.items() if k in PREFERENCE_SCHEMA and k not in reset}
    for key, value in set_values.items():
        out[key] = PREFERENCE_SCHEMA[key].normalize(value)
    return out


# ---------------------------------------------------------------------------------------------
# Follows


def check_follow(follower_id: str, followee_id: str, field_name: str = "user_id") -> None:
    if follower_id == followee_id:
        raise InvalidArgument(
            [FieldViolation(field_name, "you cannot follow yourself")], reason="SELF_FOLLOW"
        )


# ---------------------------------------------------------------------------------------------
# Pagination: opaque keyset tokens bound to the query they were minted for

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def effective_page_size(requested: int) -> int:
    return DEFAULT_PAGE_SIZE if requested <= 0 else min(requested, MAX_PAGE_SIZE)


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def encode_page_token(position: Iterable[str], query_fingerprint: str) -> str:
    payload = json.dumps([list(position), query_fingerprint]).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_page_token(token: str, query_fingerprint: str, size: int) -> tuple[str, ...]:
    """The keyset position, or InvalidArgument when malformed or minted for another query."""
    try:
        padded = token + "=" * (-len(token) % 4)
        position, fp = json.loads(base64.urlsafe_b64decode(padded))
        if fp != query_fingerprint or len(position) != size:
            raise ValueError("foreign token")
        if not all(isinstance(p, str) for p in position):
            raise ValueError("bad token")
    except (ValueError, TypeError, binascii.Error):
        raise InvalidArgument(
            [FieldViolation("page_token", "invalid or minted for a different query")]
        ) from None
    return tuple(position)
