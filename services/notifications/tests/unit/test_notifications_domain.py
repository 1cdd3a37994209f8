"""Pure rules: quiet hours (time zones, midnight wrap, DST), delivery planning with preferences,
retry backoff, unsubscribe tokens, templates in the sandbox, provider error mapping."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest

from services.notifications import domain, templates
from services.notifications.domain import (
    Category,
    Channel,
    QuietHours,
    Recipient,
    RetryPolicy,
    Status,
    Unsubscribe,
)
from services.notifications.providers import OutgoingMessage, PermanentFailure, TransientFailure
from services.notifications.providers.push import FcmPush
from services.notifications.providers.sms import TwilioSms
from services.notifications.sealing import TokenOpener
from services.notifications.templates import (
    BUILT_IN,
    RenderError,
    TemplateText,
    locale_candidates,
    render,
    render_text,
)
from suuupra_runtime.errors import InvalidArgument

UTC = dt.UTC


def at(hour: int, minute: int = 0, day: int = 6) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=UTC)


NIGHT = QuietHours(22 * 60, 7 * 60)


def test_quiet_hours_wrap_midnight_in_the_users_zone() -> None:
    # 17:00 UTC is 22:30 in Kolkata: quiet until 07:00 IST = 01:30 UTC next day.
    assert domain.quiet_hours_end(at(17), "Asia/Kolkata", NIGHT) == at(1, 30, day=7)
    # 20:00 UTC is 01:30 IST: still quiet, ends the same local morning.
    assert domain.quiet_hours_end(at(20), "Asia/Kolkata", NIGHT) == at(1, 30, day=7)
    # 03:00 UTC is 08:30 IST: not quiet.
    assert domain.quiet_hours_end(at(3), "Asia/Kolkata", NIGHT) is None
    assert domain.quiet_hours_end(at(17), "Asia/Kolkata", None) is None
    # A daytime window that does not wrap.
    lunch = QuietHours(12 * 60, 13 * 60)
    assert domain.quiet_hours_end(at(12, 15), "UTC", lunch) == at(13)
    assert domain.quiet_hours_end(at(13), "UTC", lunch) is None


def test_quiet_hours_end_follows_daylight_saving_time() -> None:
    # New York falls back on 2026-11-01: 07:00 local is 12:00 UTC after, 11:00 UTC before.
    before = dt.datetime(2026, 10, 31, 3, 0, tzinfo=UTC)  # 23:00 EDT
    after = dt.datetime(2026, 11, 2, 4, 0, tzinfo=UTC)  # 23:00 EST
    assert domain.quiet_hours_end(before, "America/New_York", NIGHT) == dt.datetime(
        2026, 10, 31, 11, 0, tzinfo=UTC
    )
    assert domain.quiet_hours_end(after, "America/New_York", NIGHT) == dt.datetime(
        2026, 11, 2, 12, 0, tzinfo=UTC
    )


def _recipient(**kw: object) -> Recipient:
    base = Recipient("t", "u", email="u@x.test", phone_number="+919812345678",
                     push_tokens=("dev-1",))  # fmt: skip
    return Recipient(**{**base.__dict__, **kw})


def test_planning_respects_preferences_defaults_and_security() -> None:
    now = at(10)
    plan = domain.plan_deliveries(_recipient(), "courses.waitlist_promoted", {}, now)
    # SMS is opt-in: skipped silently; the rest queued now.
    assert [(p.channel, p.status) for p in plan] == [
        (Channel.IN_APP, Status.QUEUED),
        (Channel.EMAIL, Status.QUEUED),
        (Channel.PUSH, Status.QUEUED),
    ]
    off = {(Category.COURSES, Channel.EMAIL): False, (Category.COURSES, Channel.SMS): True}
    plan = domain.plan_deliveries(_recipient(), "courses.waitlist_promoted", off, now)
    by = {p.channel: p for p in plan}
    assert by[Channel.EMAIL].status is Status.SUPPRESSED
    assert by[Channel.EMAIL].reason == "preference_off"
    assert by[Channel.SMS].status is Status.QUEUED
    # Security ignores preferences and quiet hours, and reaches deactivated accounts' mailbox.
    security_off = {(Category.SECURITY, Channel.EMAIL): False}
    quiet = _recipient(quiet_hours=QuietHours(0, 23 * 60 + 59), active=False)
    (mail,) = domain.plan_deliveries(
        quiet, domain.PASSWORD_RESET, security_off, now, email_override="new@x.test"
    )
    assert (mail.status, mail.address, mail.due_at) == (Status.QUEUED, "new@x.test", now)
    assert domain.plan_deliveries(quiet, "courses.enrolled", {}, now) == []


def test_planning_defers_only_interrupting_channels_in_quiet_hours() -> None:
    now = at(23)
    plan = domain.plan_deliveries(
        _recipient(quiet_hours=NIGHT), "assessment.grade_released", {}, now
    )
    due = {p.channel: p.due_at for p in plan}
    assert due[Channel.IN_APP] == now
    assert due[Channel.EMAIL] == due[Channel.PUSH] == at(7, day=7)
    missing = domain.plan_deliveries(_recipient(email=""), "assessment.grade_released", {}, now)
    assert [(p.channel, p.reason) for p in missing if p.status is Status.SUPPRESSED] == [
        (Channel.EMAIL, "no_address")
    ]


def test_preference_inputs_are_validated() -> None:
    with pytest.raises(InvalidArgument):
        domain.validate_preference_change([(Category.SECURITY, Channel.EMAIL, False)])
    domain.validate_preference_change([(Category.SECURITY, Channel.EMAIL, True)])
    assert domain.parse_quiet_hours("", "") is None
    assert domain.parse_quiet_hours("22:00", "07:30") == QuietHours(1320, 450)
    for bad in [("24:00", "07:00"), ("22:00", "22:00"), ("9:00", "10:00")]:
        with pytest.raises(InvalidArgument):
            domain.parse_quiet_hours(*bad)
    with pytest.raises(InvalidArgument):
        domain.validate_time_zone("Nowhere/City")
    with pytest.raises(InvalidArgument):
        domain.validate_phone("12345")
    assert domain.mask_address(Channel.SMS, "+919812345678") == "*********5678"


def test_retry_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=4, base_delay_seconds=2, max_delay_seconds=60)
    assert [policy.delay(a).total_seconds() for a in (1, 2, 3, 4)] == [2, 8, 32, 60]
    assert not policy.gives_up(3) and policy.gives_up(4)


def test_unsubscribe_tokens_are_signed_and_never_cover_security() -> None:
    key = b"k" * 32
    item = Unsubscribe("tenant-1", "user-1", Category.GRADES)
    token = domain.sign_unsubscribe(key, item)
    assert domain.verify_unsubscribe(key, token) == item
    assert domain.verify_unsubscribe(b"x" * 32, token) is None
    payload, mac = token.split(".")
    forged = domain.sign_unsubscribe(key, Unsubscribe("tenant-1", "user-2", Category.GRADES))
    assert domain.verify_unsubscribe(key, forged.split(".")[0] + "." + mac) is None
    assert domain.verify_unsubscribe(key, "garbage") is None
    security = domain.sign_unsubscribe(key, Unsubscribe("t", "u", Category.SECURITY))
    assert domain.verify_unsubscribe(key, security) is None
    assert payload


def test_every_kind_has_a_built_in_template_for_each_of_its_channels() -> None:
    for kind, spec in domain.KINDS.items():
        for channel in spec.channels:
            text = BUILT_IN[(kind, channel)]
            subject, body = render(text, {**spec.sample, "display_name": "A"})
            assert body.strip(), (kind, channel)
            assert "{{" not in subject + body


def test_the_sandbox_refuses_python_internals() -> None:
    for source in [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ x.__class__ }}",
    ]:
        with pytest.raises(RenderError):
            render_text(source, {"x": 1}, "body")
    with pytest.raises(RenderError):
        render_text("{% for %}", {}, "body")
    assert render_text("{{ name | title }}", {"name": "asha"}, "body") == "Asha"
    assert render(TemplateText("", "{{ missing }}x"), {}) == ("", "x")
    assert locale_candidates("pt-BR") == ["pt-BR", "pt", "en"]


def test_simple_templates_render_exactly_as_jinja_does() -> None:
    # render_text skips Jinja for text + `{{ name }}` + `{{ name or 'text' }}`; the output must
    # not differ from the sandboxed Jinja render, whatever the data.
    extra = [
        "{{ a }}{{ b or 'x' }}\n\n",
        "no placeholders at all }} {",
        "{{a}} {{  a  }} {{ b  or  'y' }}",
        "{{{ a }}",  # a syntax error in Jinja: must stay one
        "{{ range }} {{ none }} {{ a or \"q\" }} {{ a or 'x' or 'y' }} {{ a ~ 'b' }}",
        "{{ a or 'x' | upper }} {% if a %}y{% endif %} {# c #} {{ a.b }}",
        "{{ a or 'it\\'s' }}",
        "line\r\nbreak {{ a }}",
    ]
    sources = [t for text in BUILT_IN.values() for t in (text.subject, text.body) if t] + extra
    datasets: list[dict[str, object]] = [
        {},
        {"a": "", "b": None, "owner_name": "", "title": 0, "display_name": None},
        {"a": "A", "b": "B", "range": "shadowed", "note_title": "N", "owner_name": "O"},
    ]
    datasets.append({k: f"v-{k}" for k in "abcdefghijklmnopqrstuvwxyz"})
    for kind, spec in domain.KINDS.items():
        datasets.append({**spec.sample, "display_name": kind, "kind": kind, "token": "t"})
    for source in sources:
        for data in datasets:
            try:
                expected = templates._compile(source).render(dict(data))  # type: ignore[attr-defined]
            except Exception:  # Jinja refuses it: so must render_text
                with pytest.raises(RenderError):
                    render_text(source, data, "body")
                continue
            assert render_text(source, data, "body") == expected, (source, data)
    assert templates._simple(BUILT_IN[("notes.shared", Channel.IN_APP)].subject) is not None
    assert templates._simple("{{a}} {{  a  }} {{ b  or  'y' }}") is not None
    assert templates._simple("{{{ a }}") is None
    assert templates._simple("{{ a | upper }}") is None


def test_sealed_tokens_open_only_with_the_key_and_user_they_were_sealed_for() -> None:
    from services.identity.keys import Sealer  # identity's side of the format

    sealed = Sealer("k1", b"d" * 32).seal(b"raw-token", b"user-1")
    opener = TokenOpener("k1", b"d" * 32)
    assert opener.open("k1", sealed, "user-1") == "raw-token"
    assert opener.open("k1", sealed, "user-2") is None
    assert opener.open("k2", sealed, "user-1") is None
    assert TokenOpener("k1", b"e" * 32).open("k1", sealed, "user-1") is None


def _client(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=handler)


async def test_http_providers_map_statuses_to_retry_or_not() -> None:
    answers = iter([(503, {}), (429, {}), (400, {"code": 21211}), (201, {"sid": "SM1"})])

    def twilio(request: httpx.Request) -> httpx.Response:
        status, body = next(answers)
        return httpx.Response(status, json=body)

    sms = TwilioSms("http://sms", "AC1", "t", "+1555", client=_client(httpx.MockTransport(twilio)))
    message = OutgoingMessage("+919812345678", "", "hi")
    for expected in (TransientFailure, TransientFailure, PermanentFailure):
        with pytest.raises(expected):
            await sms.send(message)
    assert await sms.send(message) == "SM1"

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(TransientFailure):
        await TwilioSms(
            "http://sms", "AC1", "t", "+1", client=_client(httpx.MockTransport(down))
        ).send(message)

    seen: list[str] = []

    def fcm(request: httpx.Request) -> httpx.Response:
        token = json.loads(request.content)["message"]["token"]
        seen.append(token)
        return httpx.Response(404 if token == "gone" else 200, json={"name": f"m/{token}"})

    push = FcmPush("http://push", "p", "t", client=_client(httpx.MockTransport(fcm)))
    assert await push.send(OutgoingMessage("gone,live", "T", "B")) == "m/live"
    with pytest.raises(PermanentFailure) as bounced:
        await push.send(OutgoingMessage("gone", "T", "B"))
    assert bounced.value.bounced
    assert seen == ["gone", "live", "gone"]
