"""Profiles' pure rules: who sees which field, profile edits, preference schemas, follows and
page tokens."""

from __future__ import annotations

import pytest

from services.profiles import domain, store
from services.profiles.domain import Relation, Visibility
from suuupra_runtime.errors import InvalidArgument

T = "11111111-1111-1111-1111-111111111111"
OWNER = "22222222-2222-2222-2222-222222222222"
OTHER = "33333333-3333-3333-3333-333333333333"


def _violations(exc: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {v.field for v in exc.value.violations}


@pytest.mark.parametrize(
    ("visibility", "allowed"),
    [
        (Visibility.PUBLIC, {Relation.STRANGER, Relation.MEMBER, Relation.FOLLOWER, Relation.SELF}),
        (Visibility.TENANT, {Relation.MEMBER, Relation.FOLLOWER, Relation.SELF}),
        (Visibility.FOLLOWERS, {Relation.FOLLOWER, Relation.SELF}),
        (Visibility.ONLY_ME, {Relation.SELF}),
    ],
)
def test_each_visibility_admits_exactly_its_audience(
    visibility: Visibility, allowed: set[Relation]
) -> None:
    assert {r for r in Relation if domain.can_see(visibility, r)} == allowed


def test_relation_of_caller() -> None:
    def rel(caller: str | None, tenant: str | None, follows: bool = False) -> Relation:
        return domain.relation_of(
            caller_id=caller, caller_tenant=tenant, owner_id=OWNER, owner_tenant=T,
            caller_follows=follows,
        )  # fmt: skip

    assert rel(None, None) is Relation.STRANGER
    assert rel(OTHER, "another-tenant", follows=True) is Relation.STRANGER
    assert rel(OTHER, T) is Relation.MEMBER
    assert rel(OTHER, T, follows=True) is Relation.FOLLOWER
    assert rel(OWNER, T) is Relation.SELF


def test_view_blanks_every_field_the_relation_may_not_see() -> None:
    profile = domain.Profile(
        tenant_id=T, user_id=OWNER, display_name="Ada", headline="Head", bio="Bio",
        avatar_file_id=OTHER, locale="en-IN", time_zone="Asia/Kolkata",
        links=(domain.Link("site", "https://ada.example"),),
        privacy={
            **domain.DEFAULT_PRIVACY, "display_name": Visibility.PUBLIC,
            "headline": Visibility.FOLLOWERS, "bio": Visibility.ONLY_ME,
            "locale": Visibility.TENANT,
        },
    )  # fmt: skip
    stranger = domain.view_for(profile, Relation.STRANGER)
    assert stranger.visible == ("display_name",)
    p = stranger.profile
    assert (p.display_name, p.headline, p.bio, p.avatar_file_id, p.links, p.locale) == (
        "Ada", "", "", "", (), "",
    )  # fmt: skip
    member = domain.view_for(profile, Relation.MEMBER)
    assert member.profile.headline == "" and member.profile.time_zone == "Asia/Kolkata"
    assert member.profile.avatar_file_id == OTHER and member.profile.links == profile.links
    follower = domain.view_for(profile, Relation.FOLLOWER)
    assert follower.profile.headline == "Head" and follower.profile.bio == ""
    me = domain.view_for(profile, Relation.SELF)
    assert me.profile == profile and me.is_owner


def test_validate_patch_names_every_bad_field() -> None:
    with pytest.raises(InvalidArgument) as exc:
        domain.validate_patch(
            domain.ProfilePatch(
                display_name=" \t ", headline="x" * 161, bio="bad\x00byte", avatar_file_id="nope",
                locale="english please", time_zone="Nowhere/City",
                links=(domain.Link("", "https://ok.example"), domain.Link("x", "ftp://a")),
            )
        )  # fmt: skip
    assert _violations(exc) == {
        "profile.display_name", "profile.headline", "profile.bio", "profile.avatar_file_id",
        "profile.locale", "profile.time_zone", "profile.links[0].label", "profile.links[1].url",
    }  # fmt: skip


def test_validate_patch_normalises_and_apply_reports_changes() -> None:
    patch = domain.validate_patch(
        domain.ProfilePatch(display_name="  Ada   King ", locale="en-IN", time_zone="UTC")
    )
    assert patch.display_name == "Ada King"
    profile = domain.Profile(tenant_id=T, user_id=OWNER, display_name="Ada")
    updated, changed = domain.apply_patch(
        profile, domain.ProfilePatch(display_name="Ada King", time_zone="UTC",
                                     privacy={"bio": Visibility.ONLY_ME})
    )  # fmt: skip
    assert changed == ["display_name", "privacy.bio"]
    assert updated.version == profile.version + 1
    same, nothing = domain.apply_patch(updated, domain.ProfilePatch(display_name="Ada King"))
    assert nothing == [] and same.version == updated.version


def test_tombstone_keeps_no_personal_data() -> None:
    profile = domain.Profile(tenant_id=T, user_id=OWNER, display_name="Ada", bio="secret",
                             links=(domain.Link("a", "https://a.example"),))  # fmt: skip
    dead = domain.tombstone(profile)
    assert (dead.display_name, dead.bio, dead.links) == ("", "", ())
    assert dead.user_id == OWNER


def test_preferences_reject_unknown_keys_and_bad_values_all_or_nothing() -> None:
    with pytest.raises(InvalidArgument) as exc:
        domain.apply_preferences(
            {}, {"theme": "neon", "nope": "1", "video.playback_speed": "nan",
                 "notifications.email": "yes"}, ["also-nope"],
        )  # fmt: skip
    assert _violations(exc) == {
        "set[theme]", "set[nope]", "set[video.playback_speed]", "set[notifications.email]",
        "reset[0]",
    }  # fmt: skip
    stored = domain.apply_preferences({"theme": "dark"}, {"video.playback_speed": "1.50"}, [])
    assert stored == {"theme": "dark", "video.playback_speed": "1.5"}
    assert domain.apply_preferences(stored, {}, ["theme"]) == {"video.playback_speed": "1.5"}
    values = {v.key: v for v in domain.effective_preferences({"theme": "dark", "retired": "x"})}
    assert values["theme"].value == "dark" and not values["theme"].is_default
    assert values["email_digest"].is_default and "retired" not in values


def test_no_self_follow() -> None:
    with pytest.raises(InvalidArgument) as exc:
        domain.check_follow(OWNER, OWNER)
    assert _violations(exc) == {"user_id"} and exc.value.reason == "SELF_FOLLOW"
    domain.check_follow(OWNER, OTHER)


def test_page_tokens_round_trip_and_are_bound_to_their_query() -> None:
    fp = domain.fingerprint("search", T, "ada")
    token = domain.encode_page_token(("ada", OWNER), fp)
    assert domain.decode_page_token(token, fp, 2) == ("ada", OWNER)
    for bad, size in ((token, 3), ("%%%", 2), (domain.encode_page_token(("x", OTHER), "other"), 2)):
        with pytest.raises(InvalidArgument) as exc:
            domain.decode_page_token(bad, fp, size)
        assert _violations(exc) == {"page_token"}
    assert domain.effective_page_size(0) == domain.DEFAULT_PAGE_SIZE
    assert domain.effective_page_size(10_000) == domain.MAX_PAGE_SIZE


@pytest.mark.parametrize("prefix", ["a", "zo", "é", "z_"])
def test_prefix_range_holds_exactly_the_names_starting_with_the_prefix(prefix: str) -> None:
    low, high = store.prefix_range(prefix)
    names = ["", "a", "ab", "b", "zo", "zoe", "zp", "z_x", "z`", "é", "éa", "ê", prefix + "x"]
    inside = {n for n in names if low <= n < high}
    expected = {n for n in names if n.startswith(prefix)}
    assert inside == expected
