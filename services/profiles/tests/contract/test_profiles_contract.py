# mypy: disable-error-code="import-untyped"
"""Profiles through gRPC: field privacy for stranger / tenant member / follower / self, tenant
isolation, bad input (field violations, nothing changed), follows, search, preferences and
request-id retries."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from suuupra.profiles.v1 import profile_pb2
from suuupra.profiles.v1 import profiles_service_pb2 as pb

from services.profiles.tests.harness import ProfilesHarness, profiles_harness
from suuupra_runtime.testing.rpc_errors import error_reason, field_violations, rid

TENANT_A = str(uuid.uuid4())
TENANT_B = str(uuid.uuid4())
V = profile_pb2


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[ProfilesHarness]:
    async with profiles_harness(postgres_server_url, nats_url) as harness:
        for name in ("olivia", "fred", "mia"):
            await harness.add_member(name, TENANT_A, f"{name.title()} Alpha")
        await harness.add_member("bob", TENANT_B, "Olivia Beta")
        yield harness


async def _fails(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def _update(h: ProfilesHarness, who: str, profile: V.Profile, *paths: str) -> V.Profile:
    response: pb.UpdateMyProfileResponse = await h.profiles.UpdateMyProfile(
        pb.UpdateMyProfileRequest(
            request_id=rid(), profile=profile, update_mask=FieldMask(paths=list(paths))
        ),
        metadata=h.members[who].metadata,
    )
    return response.profile


async def test_field_privacy_for_stranger_member_follower_and_self(h: ProfilesHarness) -> None:
    olivia, fred, mia = h.members["olivia"], h.members["fred"], h.members["mia"]
    mine = await _update(
        h,
        "olivia",
        V.Profile(
            headline="Physics TA",
            bio="Secret bio",
            locale="en-IN",
            time_zone="Asia/Kolkata",
            links=[V.ProfileLink(label="site", url="https://olivia.example")],
            privacy=V.PrivacySettings(
                display_name=V.VISIBILITY_PUBLIC,
                headline=V.VISIBILITY_FOLLOWERS,
                bio=V.VISIBILITY_ONLY_ME,
                links=V.VISIBILITY_TENANT,
                locale=V.VISIBILITY_FOLLOWERS,
            ),
        ),
        "headline", "bio", "locale", "time_zone", "links", "privacy",
    )  # fmt: skip
    assert mine.bio == "Secret bio" and mine.privacy.bio == V.VISIBILITY_ONLY_ME
    await h.follows.Follow(pb.FollowRequest(request_id=rid(), user_id=olivia.user_id),
                           metadata=fred.metadata)  # fmt: skip

    stranger = (
        await h.profiles.GetPublicProfile(
            pb.GetPublicProfileRequest(tenant_id=TENANT_A, user_id=olivia.user_id)
        )
    ).profile
    member = (
        await h.profiles.GetProfile(
            pb.GetProfileRequest(user_id=olivia.user_id), metadata=mia.metadata
        )
    ).profile
    follower = (
        await h.profiles.GetProfile(
            pb.GetProfileRequest(user_id=olivia.user_id), metadata=fred.metadata
        )
    ).profile
    me = (
        await h.profiles.GetProfile(
            pb.GetProfileRequest(user_id=olivia.user_id), metadata=olivia.metadata
        )
    ).profile

    def seen(p: V.Profile) -> dict[str, object]:
        return {
            "display_name": p.display_name, "headline": p.headline, "bio": p.bio,
            "links": [link.url for link in p.links], "locale": p.locale,
            "time_zone": p.time_zone, "avatar": p.avatar_file_id,
        }  # fmt: skip

    name = "Olivia Alpha"
    link = ["https://olivia.example"]
    assert seen(stranger) == {
        "display_name": name, "headline": "", "bio": "", "links": [], "locale": "",
        "time_zone": "", "avatar": "",
    }  # fmt: skip
    assert list(stranger.visible_fields) == ["display_name"]
    assert seen(member) == {
        "display_name": name, "headline": "", "bio": "", "links": link, "locale": "",
        "time_zone": "", "avatar": "",
    }  # fmt: skip
    assert seen(follower) == {
        "display_name": name, "headline": "Physics TA", "bio": "", "links": link,
        "locale": "en-IN", "time_zone": "Asia/Kolkata", "avatar": "",
    }  # fmt: skip
    assert follower.followed_by_caller and not member.followed_by_caller
    assert seen(me)["bio"] == "Secret bio" and me.etag and me.privacy.headline
    # Only the owner sees privacy settings and the etag.
    assert not follower.HasField("privacy") and not follower.etag


async def test_public_profile_hides_profiles_with_nothing_public(h: ProfilesHarness) -> None:
    mia = h.members["mia"]  # default privacy: nothing public
    err = await _fails(
        h.profiles.GetPublicProfile(
            pb.GetPublicProfileRequest(tenant_id=TENANT_A, user_id=mia.user_id)
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_tenant_b_sees_nothing_of_tenant_a(h: ProfilesHarness) -> None:
    olivia, bob = h.members["olivia"], h.members["bob"]
    b = bob.metadata
    for call in (
        h.profiles.GetProfile(pb.GetProfileRequest(user_id=olivia.user_id), metadata=b),
        h.follows.Follow(pb.FollowRequest(request_id=rid(), user_id=olivia.user_id), metadata=b),
        h.follows.ListFollowers(pb.ListFollowersRequest(user_id=olivia.user_id), metadata=b),
        h.follows.ListFollowing(pb.ListFollowingRequest(user_id=olivia.user_id), metadata=b),
    ):
        assert (await _fails(call)).code() == grpc.StatusCode.NOT_FOUND
    # Bob's own tenant has an "Olivia Beta"; tenant A's "Olivia Alpha" (public name) is not found.
    found = await h.profiles.SearchProfiles(pb.SearchProfilesRequest(prefix="oli"), metadata=b)
    assert [p.user_id for p in found.profiles] == [bob.user_id]
    # And A's member searching sees only A's Olivia.
    found = await h.profiles.SearchProfiles(
        pb.SearchProfilesRequest(prefix="OLI"), metadata=h.members["mia"].metadata
    )
    assert [p.user_id for p in found.profiles] == [olivia.user_id]


async def test_bad_profile_input_is_rejected_with_field_violations_and_changes_nothing(
    h: ProfilesHarness,
) -> None:
    fred = h.members["fred"]
    before = (
        await h.profiles.GetMyProfile(pb.GetMyProfileRequest(), metadata=fred.metadata)
    ).profile
    err = await _fails(
        h.profiles.UpdateMyProfile(
            pb.UpdateMyProfileRequest(
                request_id=rid(),
                profile=V.Profile(
                    display_name="   ",
                    locale="not a locale!",
                    time_zone="Mars/Olympus",
                    avatar_file_id="../etc/passwd",
                    links=[V.ProfileLink(label="x", url="javascript:alert(1)")],
                    headline="ok",
                ),
                update_mask=FieldMask(
                    paths=[
                        "display_name",
                        "locale",
                        "time_zone",
                        "avatar_file_id",
                        "links",
                        "headline",
                    ]
                ),
            ),
            metadata=fred.metadata,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(err)) == {
        "profile.display_name", "profile.locale", "profile.time_zone",
        "profile.avatar_file_id", "profile.links[0].url",
    }  # fmt: skip
    after = (
        await h.profiles.GetMyProfile(pb.GetMyProfileRequest(), metadata=fred.metadata)
    ).profile
    assert after == before

    err = await _fails(
        h.profiles.UpdateMyProfile(
            pb.UpdateMyProfileRequest(
                request_id=rid(), profile=V.Profile(), update_mask=FieldMask(paths=["email"])
            ),
            metadata=fred.metadata,
        )
    )
    assert field_violations(err) == ["update_mask"]
    # Contract-level rules (protovalidate) come back as field violations too.
    err = await _fails(
        h.profiles.GetProfile(pb.GetProfileRequest(user_id="nope"), metadata=fred.metadata)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(err) == ["user_id"]
    err = await _fails(
        h.profiles.SearchProfiles(pb.SearchProfilesRequest(prefix=""), metadata=fred.metadata)
    )
    assert field_violations(err) == ["prefix"]
    err = await _fails(
        h.profiles.SearchProfiles(pb.SearchProfilesRequest(prefix="  \t "), metadata=fred.metadata)
    )
    assert field_violations(err) == ["prefix"]


async def test_etag_guards_concurrent_edits(h: ProfilesHarness) -> None:
    mia = h.members["mia"]
    current = (
        await h.profiles.GetMyProfile(pb.GetMyProfileRequest(), metadata=mia.metadata)
    ).profile
    await _update(h, "mia", V.Profile(headline="first", etag=current.etag), "headline")
    err = await _fails(
        h.profiles.UpdateMyProfile(
            pb.UpdateMyProfileRequest(
                request_id=rid(),
                profile=V.Profile(headline="second", etag=current.etag),
                update_mask=FieldMask(paths=["headline"]),
            ),
            metadata=mia.metadata,
        )
    )
    assert err.code() == grpc.StatusCode.ABORTED and error_reason(err) == "ETAG_MISMATCH"


async def test_follow_is_idempotent_refuses_self_and_lists_paginate(h: ProfilesHarness) -> None:
    tenant = str(uuid.uuid4())
    star = await h.add_member("star", tenant, "Star")
    fans = [await h.add_member(f"fan{i}", tenant, f"Fan {i}") for i in range(5)]
    for fan in fans:
        request = pb.FollowRequest(request_id=rid(), user_id=star.user_id)
        first = await h.follows.Follow(request, metadata=fan.metadata)
        retry = await h.follows.Follow(request, metadata=fan.metadata)  # same request id
        again = await h.follows.Follow(
            pb.FollowRequest(request_id=rid(), user_id=star.user_id), metadata=fan.metadata
        )
        assert first.created and retry.created and not again.created
    # Retries and repeated follows emitted nothing: one event per real follow.
    assert (await h.outbox_types(tenant)).count("UserFollowed") == 5

    err = await _fails(
        h.follows.Follow(
            pb.FollowRequest(request_id=rid(), user_id=star.user_id), metadata=star.metadata
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err) == ["user_id"] and error_reason(err) == "SELF_FOLLOW"
    err = await _fails(
        h.follows.Follow(
            pb.FollowRequest(request_id=rid(), user_id=str(uuid.uuid4())), metadata=star.metadata
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND

    seen: list[str] = []
    token = ""
    while True:
        page = await h.follows.ListFollowers(
            pb.ListFollowersRequest(user_id=star.user_id, page_size=2, page_token=token),
            metadata=fans[0].metadata,
        )
        assert len(page.profiles) <= 2
        seen += [p.user_id for p in page.profiles]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f.user_id for f in reversed(fans)]  # newest first, each once
    following = await h.follows.ListFollowing(
        pb.ListFollowingRequest(user_id=fans[1].user_id), metadata=star.metadata
    )
    assert [(p.user_id, p.display_name) for p in following.profiles] == [(star.user_id, "Star")]

    unfollow = pb.UnfollowRequest(request_id=rid(), user_id=star.user_id)
    assert (await h.follows.Unfollow(unfollow, metadata=fans[0].metadata)).removed
    assert (await h.follows.Unfollow(unfollow, metadata=fans[0].metadata)).removed  # retry
    assert not (
        await h.follows.Unfollow(
            pb.UnfollowRequest(request_id=rid(), user_id=star.user_id), metadata=fans[0].metadata
        )
    ).removed
    page = await h.follows.ListFollowers(
        pb.ListFollowersRequest(user_id=star.user_id), metadata=star.metadata
    )
    assert len(page.profiles) == 4
    assert (await h.outbox_types(tenant)).count("UserUnfollowed") == 1
    # A page token is bound to its query.
    err = await _fails(
        h.follows.ListFollowing(
            pb.ListFollowingRequest(user_id=star.user_id, page_token="garbage"),
            metadata=star.metadata,
        )
    )
    assert field_violations(err) == ["page_token"]


async def test_connections_privacy_and_same_request_id_other_payload(h: ProfilesHarness) -> None:
    tenant = str(uuid.uuid4())
    shy = await h.add_member("shy", tenant, "Shy")
    other = await h.add_member("other", tenant, "Other")
    await _update(h, "shy", V.Profile(privacy=V.PrivacySettings(connections=V.VISIBILITY_ONLY_ME)),
                  "privacy.connections")  # fmt: skip
    err = await _fails(
        h.follows.ListFollowers(
            pb.ListFollowersRequest(user_id=shy.user_id), metadata=other.metadata
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    await h.follows.ListFollowers(
        pb.ListFollowersRequest(user_id=shy.user_id), metadata=shy.metadata
    )

    request_id = rid()
    await h.follows.Follow(
        pb.FollowRequest(request_id=request_id, user_id=shy.user_id), metadata=other.metadata
    )
    err = await _fails(
        h.follows.Follow(
            pb.FollowRequest(request_id=request_id, user_id=str(uuid.uuid4())),
            metadata=other.metadata,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(err) == [
        "request_id"
    ]


async def test_search_by_prefix_honours_name_privacy_and_paginates(h: ProfilesHarness) -> None:
    tenant = str(uuid.uuid4())
    names = ["Zara Ahmed", "zach brown", "Zoe_Lee", "Zed Hidden", "Zelda Fans", "Adam Z"]
    people = {n: await h.add_member(n, tenant, n) for n in names}
    viewer = await h.add_member("viewer", tenant, "Viewer")
    await _update(h, "Zed Hidden",
                  V.Profile(privacy=V.PrivacySettings(display_name=V.VISIBILITY_ONLY_ME)),
                  "privacy.display_name")  # fmt: skip
    await _update(h, "Zelda Fans",
                  V.Profile(privacy=V.PrivacySettings(display_name=V.VISIBILITY_FOLLOWERS)),
                  "privacy.display_name")  # fmt: skip

    async def search(prefix: str, who: str = "viewer", size: int = 0) -> list[str]:
        out: list[str] = []
        token = ""
        while True:
            page = await h.profiles.SearchProfiles(
                pb.SearchProfilesRequest(prefix=prefix, page_size=size, page_token=token),
                metadata=h.members[who].metadata,
            )
            out += [p.display_name for p in page.profiles]
            token = page.next_page_token
            if not token:
                return out

    assert await search("z") == ["zach brown", "Zara Ahmed", "Zoe_Lee"]
    assert await search("Z", size=1) == ["zach brown", "Zara Ahmed", "Zoe_Lee"]
    assert await search("zo") == ["Zoe_Lee"]
    assert await search("z_") == []  # LIKE wildcards are literal
    assert await search("Zed", who="Zed Hidden") == ["Zed Hidden"]  # the owner finds themself
    await h.follows.Follow(
        pb.FollowRequest(request_id=rid(), user_id=people["Zelda Fans"].user_id),
        metadata=viewer.metadata,
    )
    assert await search("ze") == ["Zelda Fans"]


async def test_preferences_schema_validation_and_reset(h: ProfilesHarness) -> None:
    mia = h.members["mia"].metadata
    schema = await h.preferences.ListPreferenceSchema(
        pb.ListPreferenceSchemaRequest(), metadata=mia
    )
    assert "theme" in {k.key for k in schema.keys}
    defaults = await h.preferences.GetMyPreferences(pb.GetMyPreferencesRequest(), metadata=mia)
    assert all(p.is_default for p in defaults.preferences)

    err = await _fails(
        h.preferences.UpdateMyPreferences(
            pb.UpdateMyPreferencesRequest(
                request_id=rid(),
                set={"theme": "dark", "favourite_colour": "blue", "video.playback_speed": "9"},
            ),
            metadata=mia,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field_violations(err)) == ["set[favourite_colour]", "set[video.playback_speed]"]
    unchanged = await h.preferences.GetMyPreferences(pb.GetMyPreferencesRequest(), metadata=mia)
    assert unchanged == defaults  # all or nothing: theme was not set either

    updated = await h.preferences.UpdateMyPreferences(
        pb.UpdateMyPreferencesRequest(
            request_id=rid(), set={"theme": "dark", "video.playback_speed": "1.50"}
        ),
        metadata=mia,
    )
    values = {p.key: (p.value, p.is_default) for p in updated.preferences}
    assert values["theme"] == ("dark", False)
    assert values["video.playback_speed"] == ("1.5", False)
    reset = await h.preferences.UpdateMyPreferences(
        pb.UpdateMyPreferencesRequest(request_id=rid(), reset=["theme"]), metadata=mia
    )
    assert {p.key: p.value for p in reset.preferences}["theme"] == "system"
    err = await _fails(
        h.preferences.UpdateMyPreferences(
            pb.UpdateMyPreferencesRequest(request_id=rid(), reset=["nope"]), metadata=mia
        )
    )
    assert field_violations(err) == ["reset[0]"]


async def test_permissions_and_authentication(h: ProfilesHarness) -> None:
    err = await _fails(h.profiles.GetMyProfile(pb.GetMyProfileRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    olivia = h.members["olivia"]
    no_perms = h.issuer.token(olivia.user_id, olivia.tenant_id, roles=[], perms=[])
    err = await _fails(
        h.profiles.GetMyProfile(
            pb.GetMyProfileRequest(), metadata=(("authorization", f"Bearer {no_perms}"),)
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_deleted_user_disappears_everywhere(h: ProfilesHarness) -> None:
    tenant = str(uuid.uuid4())
    gone = await h.add_member("gone", tenant, "Gone Soon")
    friend = await h.add_member("friend", tenant, "Friend")
    for a, b in ((gone, friend), (friend, gone)):
        await h.follows.Follow(pb.FollowRequest(request_id=rid(), user_id=b.user_id),
                               metadata=a.metadata)  # fmt: skip
    await h.delete_member("gone")
    await h.delete_member("gone")  # a second UserDeleted is a no-op
    assert (await h.outbox_types(tenant)).count("ProfileDeleted") == 1

    f = friend.metadata
    err = await _fails(
        h.profiles.GetProfile(pb.GetProfileRequest(user_id=gone.user_id), metadata=f)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    found = await h.profiles.SearchProfiles(pb.SearchProfilesRequest(prefix="gone"), metadata=f)
    assert list(found.profiles) == []
    for listing in (
        h.follows.ListFollowers(pb.ListFollowersRequest(user_id=friend.user_id), metadata=f),
        h.follows.ListFollowing(pb.ListFollowingRequest(user_id=friend.user_id), metadata=f),
    ):
        assert list((await listing).profiles) == []
    err = await _fails(
        h.follows.Follow(pb.FollowRequest(request_id=rid(), user_id=gone.user_id), metadata=f)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    # The deleted user's still-valid token no longer reaches a profile nor creates follows.
    err = await _fails(h.profiles.GetMyProfile(pb.GetMyProfileRequest(), metadata=gone.metadata))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await _fails(
        h.follows.Follow(
            pb.FollowRequest(request_id=rid(), user_id=friend.user_id), metadata=gone.metadata
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert (await h.outbox_types(tenant)).count("UserFollowed") == 2


async def test_update_retry_returns_the_first_response_and_emits_once(h: ProfilesHarness) -> None:
    tenant = str(uuid.uuid4())
    member = await h.add_member("retrier", tenant, "Retrier")
    request = pb.UpdateMyProfileRequest(
        request_id=rid(),
        profile=V.Profile(bio="first"),
        update_mask=FieldMask(paths=["bio"]),
    )
    first = await h.profiles.UpdateMyProfile(request, metadata=member.metadata)
    retry = await h.profiles.UpdateMyProfile(request, metadata=member.metadata)
    assert retry == first
    assert (await h.outbox_types(tenant)).count("ProfileUpdated") == 1
    # Another member replaying the same request id gets their own answer, not this one.
    other = await h.add_member("replayer", tenant, "Replayer")
    theirs = await h.profiles.UpdateMyProfile(request, metadata=other.metadata)
    assert theirs.profile.user_id == other.user_id and theirs.profile.bio == "first"


async def test_concurrent_follows_of_one_pair_make_one_edge_and_one_event(
    h: ProfilesHarness,
) -> None:
    tenant = str(uuid.uuid4())
    idol = await h.add_member("idol", tenant, "Idol")
    eager = await h.add_member("eager", tenant, "Eager")
    replies = await asyncio.gather(
        *(
            h.follows.Follow(
                pb.FollowRequest(request_id=rid(), user_id=idol.user_id), metadata=eager.metadata
            )
            for _ in range(10)
        )
    )
    assert sum(r.created for r in replies) == 1
    assert (await h.outbox_types(tenant)).count("UserFollowed") == 1
    followers = await h.follows.ListFollowers(
        pb.ListFollowersRequest(user_id=idol.user_id), metadata=eager.metadata
    )
    assert [p.user_id for p in followers.profiles] == [eager.user_id]
