# mypy: disable-error-code="import-untyped"
# ruff: noqa: N802 (servicer method names are the RPC names from the contract)
"""gRPC servicers: proto ⇄ handler calls. No business rules live here.

Mutating RPCs run through `run_idempotent`, which owns the transaction: the handler's writes,
its outbox events and the stored response commit together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message
from suuupra.profiles.v1 import profile_pb2
from suuupra.profiles.v1 import profiles_service_pb2 as pb
from suuupra.profiles.v1 import profiles_service_pb2_grpc as rpc

from services.profiles import domain
from services.profiles.handlers import Actor, Profiles, Summary
from suuupra_runtime.auth import current_caller
from suuupra_runtime.db import UnitOfWork
from suuupra_runtime.errors import FieldViolation, InvalidArgument, Unauthenticated
from suuupra_runtime.idempotency import run_idempotent
from suuupra_runtime.timestamps import optional_timestamp_pb as _ts
from suuupra_runtime.updates import etag_of

R = TypeVar("R", bound=Message)
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]

PACKAGE = "suuupra.profiles.v1"

_VISIBILITY_TO_PROTO = {
    domain.Visibility.PUBLIC: profile_pb2.VISIBILITY_PUBLIC,
    domain.Visibility.TENANT: profile_pb2.VISIBILITY_TENANT,
    domain.Visibility.FOLLOWERS: profile_pb2.VISIBILITY_FOLLOWERS,
    domain.Visibility.ONLY_ME: profile_pb2.VISIBILITY_ONLY_ME,
}
_VISIBILITY_FROM_PROTO = {v: k for k, v in _VISIBILITY_TO_PROTO.items()}


def actor() -> Actor:
    caller = current_caller()
    if not caller.subject or not caller.tenant_id:
        raise Unauthenticated("this call needs a user's access token", reason="NO_USER")
    return Actor(user_id=caller.subject, tenant_id=caller.tenant_id)


def profile_pb(view: domain.ProfileView) -> profile_pb2.Profile:
    p = view.profile
    out = profile_pb2.Profile(
        user_id=p.user_id,
        tenant_id=p.tenant_id,
        display_name=p.display_name,
        headline=p.headline,
        bio=p.bio,
        avatar_file_id=p.avatar_file_id,
        locale=p.locale,
        time_zone=p.time_zone,
        links=[profile_pb2.ProfileLink(label=x.label, url=x.url) for x in p.links],
        visible_fields=list(view.visible),
        followed_by_caller=view.followed,
        create_time=_ts(p.created_at),
        update_time=_ts(p.updated_at),
    )
    if view.is_owner:
        out.etag = etag_of(p.version)
        out.privacy.CopyFrom(
            profile_pb2.PrivacySettings(
                **{g: _VISIBILITY_TO_PROTO[p.privacy[g]] for g in domain.PRIVACY_FIELDS}
            )
        )
    return out


def summary_pb(s: Summary) -> profile_pb2.ProfileSummary:
    return profile_pb2.ProfileSummary(
        user_id=s.user_id,
        display_name=s.display_name,
        headline=s.headline,
        avatar_file_id=s.avatar_file_id,
    )


def preference_pb(v: domain.PreferenceValue) -> profile_pb2.Preference:
    return profile_pb2.Preference(key=v.key, value=v.value, is_default=v.is_default)


_PROFILE_PATHS = (
    domain.EDITABLE_FIELDS | {"privacy"} | {f"privacy.{g}" for g in domain.PRIVACY_FIELDS}
)


def patch_from(request: pb.UpdateMyProfileRequest) -> domain.ProfilePatch:
    paths = list(request.update_mask.paths)
    bad = [p for p in paths if p not in _PROFILE_PATHS]
    if bad or not paths:
        raise InvalidArgument(
            [
                FieldViolation("update_mask", f"unsupported path '{p}'" if p else "empty")
                for p in (bad or [""])
            ]
        )
    sent = request.profile
    values: dict[str, Any] = {}
    for name in domain.EDITABLE_FIELDS & set(paths):
        if name == "links":
            values[name] = tuple(domain.Link(x.label, x.url) for x in sent.links)
        else:
            values[name] = getattr(sent, name)
    groups = set(domain.PRIVACY_FIELDS) if "privacy" in paths else set()
    groups |= {p.removeprefix("privacy.") for p in paths if p.startswith("privacy.")}
    privacy: dict[str, domain.Visibility] = {}
    violations = []
    for group in sorted(groups):
        value = getattr(sent.privacy, group)
        if value == profile_pb2.VISIBILITY_UNSPECIFIED:
            if "privacy" in paths:
                continue  # whole-message update: unspecified groups stay as they are
            violations.append(FieldViolation(f"profile.privacy.{group}", "must be specified"))
            continue
        privacy[group] = _VISIBILITY_FROM_PROTO[value]
    if violations:
        raise InvalidArgument(violations)
    return domain.ProfilePatch(**values, privacy=privacy)


class _Base:
    service = ""

    def __init__(self, profiles: Profiles) -> None:
        self.profiles = profiles

    async def _idempotent(
        self,
        method: str,
        who: Actor,
        request: Message,
        response_type: type[R],
        work: Callable[[UnitOfWork], Awaitable[R]],
    ) -> R:
        return await run_idempotent(
            self.profiles.db,
            tenant_id=who.tenant_id,
            # run_idempotent scopes the key by the caller too: another member of the tenant
            # replaying a leaked request id never receives this caller's stored response.
            method=f"/{PACKAGE}.{self.service}/{method}",
            request=request,
            response_type=response_type,
            work=work,
        )


class ProfileServicer(_Base, rpc.ProfileServiceServicer):
    service = "ProfileService"

    async def GetMyProfile(
        self, request: pb.GetMyProfileRequest, context: Ctx
    ) -> pb.GetMyProfileResponse:
        return pb.GetMyProfileResponse(profile=profile_pb(await self.profiles.my_profile(actor())))

    async def UpdateMyProfile(
        self, request: pb.UpdateMyProfileRequest, context: Ctx
    ) -> pb.UpdateMyProfileResponse:
        who = actor()
        patch = patch_from(request)

        async def work(uow: UnitOfWork) -> pb.UpdateMyProfileResponse:
            view = await self.profiles.update_my_profile(uow, who, patch, request.profile.etag)
            return pb.UpdateMyProfileResponse(profile=profile_pb(view))

        return await self._idempotent(
            "UpdateMyProfile", who, request, pb.UpdateMyProfileResponse, work
        )

    async def GetProfile(
        self, request: pb.GetProfileRequest, context: Ctx
    ) -> pb.GetProfileResponse:
        view = await self.profiles.profile(actor(), request.user_id)
        return pb.GetProfileResponse(profile=profile_pb(view))

    async def GetPublicProfile(
        self, request: pb.GetPublicProfileRequest, context: Ctx
    ) -> pb.GetPublicProfileResponse:
        view = await self.profiles.public_profile(request.tenant_id, request.user_id)
        return pb.GetPublicProfileResponse(profile=profile_pb(view))

    async def SearchProfiles(
        self, request: pb.SearchProfilesRequest, context: Ctx
    ) -> pb.SearchProfilesResponse:
        found, token = await self.profiles.search(
            actor(), request.prefix, request.page_size, request.page_token
        )
        return pb.SearchProfilesResponse(
            profiles=[summary_pb(s) for s in found], next_page_token=token
        )


class PreferenceServicer(_Base, rpc.PreferenceServiceServicer):
    service = "PreferenceService"

    async def ListPreferenceSchema(
        self, request: pb.ListPreferenceSchemaRequest, context: Ctx
    ) -> pb.ListPreferenceSchemaResponse:
        return pb.ListPreferenceSchemaResponse(
            keys=[
                profile_pb2.PreferenceSchema(
                    key=s.key,
                    description=s.description,
                    type=s.type,
                    allowed_values=list(s.allowed),
                    minimum=s.minimum,
                    maximum=s.maximum,
                    default_value=s.default,
                )
                for _, s in sorted(domain.PREFERENCE_SCHEMA.items())
            ]
        )

    async def GetMyPreferences(
        self, request: pb.GetMyPreferencesRequest, context: Ctx
    ) -> pb.GetMyPreferencesResponse:
        values = await self.profiles.my_preferences(actor())
        return pb.GetMyPreferencesResponse(preferences=[preference_pb(v) for v in values])

    async def UpdateMyPreferences(
        self, request: pb.UpdateMyPreferencesRequest, context: Ctx
    ) -> pb.UpdateMyPreferencesResponse:
        who = actor()

        async def work(uow: UnitOfWork) -> pb.UpdateMyPreferencesResponse:
            values = await self.profiles.update_my_preferences(
                uow, who, dict(request.set), list(request.reset)
            )
            return pb.UpdateMyPreferencesResponse(preferences=[preference_pb(v) for v in values])

        return await self._idempotent(
            "UpdateMyPreferences", who, request, pb.UpdateMyPreferencesResponse, work
        )


class FollowServicer(_Base, rpc.FollowServiceServicer):
    service = "FollowService"

    async def Follow(self, request: pb.FollowRequest, context: Ctx) -> pb.FollowResponse:
        who = actor()

        async def work(uow: UnitOfWork) -> pb.FollowResponse:
            return pb.FollowResponse(created=await self.profiles.follow(uow, who, request.user_id))

        return await self._idempotent("Follow", who, request, pb.FollowResponse, work)

    async def Unfollow(self, request: pb.UnfollowRequest, context: Ctx) -> pb.UnfollowResponse:
        who = actor()

        async def work(uow: UnitOfWork) -> pb.UnfollowResponse:
            removed = await self.profiles.unfollow(uow, who, request.user_id)
            return pb.UnfollowResponse(removed=removed)

        return await self._idempotent("Unfollow", who, request, pb.UnfollowResponse, work)

    async def _list(
        self, user_id: str, page_size: int, page_token: str, *, followers: bool
    ) -> tuple[Iterable[profile_pb2.ProfileSummary], str]:
        found, token = await self.profiles.connections(
            actor(), user_id, followers=followers, page_size=page_size, page_token=page_token
        )
        return [summary_pb(s) for s in found], token

    async def ListFollowers(
        self, request: pb.ListFollowersRequest, context: Ctx
    ) -> pb.ListFollowersResponse:
        found, token = await self._list(
            request.user_id, request.page_size, request.page_token, followers=True
        )
        return pb.ListFollowersResponse(profiles=found, next_page_token=token)

    async def ListFollowing(
        self, request: pb.ListFollowingRequest, context: Ctx
    ) -> pb.ListFollowingResponse:
        found, token = await self._list(
            request.user_id, request.page_size, request.page_token, followers=False
        )
        return pb.ListFollowingResponse(profiles=found, next_page_token=token)


def register_all(server: grpc.aio.Server, profiles: Profiles) -> None:
    rpc.add_ProfileServiceServicer_to_server(ProfileServicer(profiles), server)
    rpc.add_PreferenceServiceServicer_to_server(PreferenceServicer(profiles), server)
    rpc.add_FollowServiceServicer_to_server(FollowServicer(profiles), server)


SERVICE_NAMES = [
    f"{PACKAGE}.{name}" for name in ("ProfileService", "PreferenceService", "FollowService")
]
