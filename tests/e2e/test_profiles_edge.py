# mypy: disable-error-code="import-untyped"
"""Profiles in the running platform, through the edge: the demo users' profiles exist because
identity's UserCreated events reached profiles over NATS; a student finds a classmate by name,
follows them and sees the follower-only view; privacy holds for another member."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from suuupra.identity.v1 import identity_service_pb2 as identity_pb
from suuupra.identity.v1 import identity_service_pb2_grpc as identity_grpc
from suuupra.profiles.v1 import profile_pb2
from suuupra.profiles.v1 import profiles_service_pb2 as pb
from suuupra.profiles.v1 import profiles_service_pb2_grpc as rpc

from suuupra_runtime.testing.rpc_errors import rid
from tests.e2e.platform_process import RunningPlatform
from tools.demo_data import DEMO_STUDENTS, DEMO_TENANT_SLUG


async def _token(channel: grpc.aio.Channel, account: object) -> tuple[tuple[str, str], ...]:
    login = await identity_grpc.AuthServiceStub(channel).Login(
        identity_pb.LoginRequest(
            tenant_slug=DEMO_TENANT_SLUG,
            email=account.email,  # type: ignore[attr-defined]
            password=account.password,  # type: ignore[attr-defined]
        ),
        timeout=10,
    )
    return (("authorization", f"Bearer {login.tokens.access_token}"),)


async def _my_profile(stub: rpc.ProfileServiceStub, auth: object) -> profile_pb2.Profile:
    # The profile is created asynchronously from identity's event: allow it a moment.
    async with asyncio.timeout(20):
        while True:
            try:
                reply: pb.GetMyProfileResponse = await stub.GetMyProfile(
                    pb.GetMyProfileRequest(), metadata=auth, timeout=5
                )
                return reply.profile
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            await asyncio.sleep(0.2)


async def test_profiles_journey_through_the_edge(platform: RunningPlatform) -> None:
    sam, priya, lee = DEMO_STUDENTS
    async with grpc.aio.insecure_channel(platform.edge) as channel:
        profiles = rpc.ProfileServiceStub(channel)
        follows = rpc.FollowServiceStub(channel)
        sam_auth, priya_auth, lee_auth = [
            await _token(channel, account) for account in (sam, priya, lee)
        ]
        mine = await _my_profile(profiles, priya_auth)
        assert mine.display_name == priya.display_name
        await profiles.UpdateMyProfile(
            pb.UpdateMyProfileRequest(
                request_id=rid(),
                profile=profile_pb2.Profile(
                    headline="Loves graph theory",
                    privacy=profile_pb2.PrivacySettings(headline=profile_pb2.VISIBILITY_FOLLOWERS),
                ),
                update_mask=FieldMask(paths=["headline", "privacy.headline"]),
            ),
            metadata=priya_auth,
            timeout=10,
        )
        await _my_profile(profiles, sam_auth)
        found = await profiles.SearchProfiles(
            pb.SearchProfilesRequest(prefix="priya"), metadata=sam_auth, timeout=10
        )
        assert [p.display_name for p in found.profiles] == [priya.display_name]
        priya_id = found.profiles[0].user_id
        await follows.Follow(
            pb.FollowRequest(request_id=rid(), user_id=priya_id), metadata=sam_auth, timeout=10
        )
        as_follower = await profiles.GetProfile(
            pb.GetProfileRequest(user_id=priya_id), metadata=sam_auth, timeout=10
        )
        assert as_follower.profile.headline == "Loves graph theory"
        as_member = await profiles.GetProfile(
            pb.GetProfileRequest(user_id=priya_id), metadata=lee_auth, timeout=10
        )
        assert as_member.profile.display_name == priya.display_name
        assert as_member.profile.headline == ""

        # Anonymous callers pass the edge for the public RPC and see only PUBLIC fields.
        public = pb.GetPublicProfileRequest(tenant_id=mine.tenant_id, user_id=priya_id)
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await profiles.GetPublicProfile(public, timeout=10)  # nothing public by default
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        await profiles.UpdateMyProfile(
            pb.UpdateMyProfileRequest(
                request_id=rid(),
                profile=profile_pb2.Profile(
                    privacy=profile_pb2.PrivacySettings(display_name=profile_pb2.VISIBILITY_PUBLIC)
                ),
                update_mask=FieldMask(paths=["privacy.display_name"]),
            ),
            metadata=priya_auth,
            timeout=10,
        )
        shown = (await profiles.GetPublicProfile(public, timeout=10)).profile
        assert (shown.display_name, shown.headline) == (priya.display_name, "")
