"""Built-in templates and sandboxed rendering (Jinja2 `ImmutableSandboxedEnvironment`).

Template text comes from tenant admins, so it is untrusted: the sandbox refuses attribute access
to Python internals and unsafe calls, the environment has no loader (no file access) and no
extensions, and output is capped. A template that does not compile, or that fails on the kind's
sample data, is refused when it is saved, so a send never trips over a broken template.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from jinja2 import Undefined
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from services.notifications.domain import Channel

MAX_OUTPUT_CHARS = 100_000
DEFAULT_LOCALE = "en"


@dataclass(frozen=True)
class TemplateText:
    subject: str
    body: str
    version: int = 0  # 0: built-in


class RenderError(ValueError):
    """Template text that does not compile or render; `field` names subject or body."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


_E = Channel.EMAIL
_S = Channel.SMS
_P = Channel.PUSH
_I = Channel.IN_APP

_GREETING = "Hello {{ display_name or 'there' }},\n\n"
_FOOTER = "\n\n-- \nSuuupra"

# (kind, channel) -> template, locale "en". Tenants override per locale with their own versions.
BUILT_IN: Mapping[tuple[str, Channel], TemplateText] = {
    ("identity.email_verification", _E): TemplateText(
        "Verify your email address",
        _GREETING + "Confirm this is your address by opening:\n{{ link }}\n\n"
        "Or enter this code: {{ token }}\n\nIf you did not sign up, ignore this mail." + _FOOTER,
    ),
    ("identity.password_reset", _E): TemplateText(
        "Reset your password",
        _GREETING + "Someone (hopefully you) asked to reset your password. Open:\n{{ link }}\n\n"
        "Or use this code: {{ token }}\n\nThe link expires at {{ expires }}. "
        "If it was not you, ignore this mail; your password stays as it is." + _FOOTER,
    ),
    ("identity.account_changed", _E): TemplateText(
        "Your account was changed",
        _GREETING + "Your account's {{ changed }} was changed. If this was not you, reset your "
        "password now." + _FOOTER,
    ),
    ("identity.account_changed", _I): TemplateText(
        "Account changed", "Your {{ changed }} was changed."
    ),
    ("courses.enrolled", _I): TemplateText(
        "Enrolled in {{ course_title }}", "You are enrolled in {{ course_title }}."
    ),
    ("courses.enrolled", _E): TemplateText(
        "You are enrolled in {{ course_title }}",
        _GREETING + "Welcome to {{ course_title }}." + _FOOTER,
    ),
    ("courses.enrolled", _P): TemplateText("Enrolled", "You are enrolled in {{ course_title }}."),
    ("courses.waitlisted", _I): TemplateText(
        "Waitlisted for {{ course_title }}",
        "You are number {{ position }} on the waitlist of {{ course_title }}.",
    ),
    ("courses.waitlisted", _E): TemplateText(
        "Waitlisted for {{ course_title }}",
        _GREETING + "You are number {{ position }} on the waitlist of {{ course_title }}. "
        "We will tell you when a seat opens." + _FOOTER,
    ),
    ("courses.waitlist_promoted", _I): TemplateText(
        "A seat opened in {{ course_title }}",
        "You moved from the waitlist into {{ course_title }}.",
    ),
    ("courses.waitlist_promoted", _E): TemplateText(
        "You are in: {{ course_title }}",
        _GREETING + "A seat opened and you are now enrolled in {{ course_title }}." + _FOOTER,
    ),
    ("courses.waitlist_promoted", _P): TemplateText(
        "Seat opened", "You are now enrolled in {{ course_title }}."
    ),
    ("courses.waitlist_promoted", _S): TemplateText(
        "", "Suuupra: a seat opened, you are enrolled in {{ course_title }}."
    ),
    ("courses.published", _I): TemplateText(
        "{{ course_title }} was updated", "New content is published in {{ course_title }}."
    ),
    ("courses.published", _E): TemplateText(
        "{{ course_title }} was updated",
        _GREETING + "New content is published in {{ course_title }}." + _FOOTER,
    ),
    ("assessment.assignment_published", _I): TemplateText(
        "New assignment: {{ title }}", "{{ title }} is due {{ due }}."
    ),
    ("assessment.assignment_published", _E): TemplateText(
        "New assignment: {{ title }}",
        _GREETING + "A new assignment, {{ title }}, is due {{ due }}." + _FOOTER,
    ),
    ("assessment.assignment_published", _P): TemplateText(
        "New assignment", "{{ title }} is due {{ due }}."
    ),
    ("assessment.due_soon", _I): TemplateText(
        "Due soon: {{ title }}", "{{ title }} is due {{ due }}."
    ),
    ("assessment.due_soon", _P): TemplateText("Due soon", "{{ title }} is due {{ due }}."),
    ("assessment.due_soon", _S): TemplateText("", "Suuupra: {{ title }} is due {{ due }}."),
    ("assessment.due_changed", _I): TemplateText(
        "New due date: {{ title }}", "{{ title }} is now due {{ due }} (was {{ previous_due }})."
    ),
    ("assessment.due_changed", _E): TemplateText(
        "New due date: {{ title }}",
        _GREETING + "{{ title }} is now due {{ due }} (it was due {{ previous_due }})." + _FOOTER,
    ),
    ("assessment.due_changed", _P): TemplateText(
        "New due date", "{{ title }} is now due {{ due }}."
    ),
    ("assessment.assignment_updated", _I): TemplateText(
        "Updated: {{ title }}", "Your instructor changed {{ title }}: {{ changes }}."
    ),
    ("assessment.assignment_removed", _I): TemplateText(
        "Withdrawn: {{ title }}", "{{ title }} was withdrawn by your instructor."
    ),
    ("assessment.grade_released", _I): TemplateText(
        "Graded: {{ title }}", "You scored {{ score }} / {{ max_points }} on {{ title }}."
    ),
    ("assessment.grade_released", _E): TemplateText(
        "Your grade for {{ title }}",
        _GREETING + "You scored {{ score }} / {{ max_points }} on {{ title }}." + _FOOTER,
    ),
    ("assessment.grade_released", _P): TemplateText(
        "Graded", "{{ title }}: {{ score }} / {{ max_points }}"
    ),
    ("notes.shared", _I): TemplateText(
        "{{ owner_name or 'Someone' }} shared a note", "{{ note_title }} is shared with you."
    ),
    ("notes.shared", _P): TemplateText(
        "Note shared", "{{ owner_name or 'Someone' }} shared {{ note_title }} with you."
    ),
    ("announcement", _I): TemplateText("{{ title }}", "{{ message }}"),
    ("announcement", _E): TemplateText("{{ title }}", _GREETING + "{{ message }}" + _FOOTER),
    ("announcement", _P): TemplateText("{{ title }}", "{{ message }}"),
    ("announcement", _S): TemplateText("", "{{ title }}: {{ message }}"),
}


def built_in(kind: str, channel: Channel) -> TemplateText | None:
    return BUILT_IN.get((kind, channel))


class _Undefined(Undefined):
    """Missing data renders empty (a send never fails on an absent optional field), but a
    blocked attribute (`''.__class__`) fails loudly instead of rendering nothing."""

    def __str__(self) -> str:
        if issubclass(self._undefined_exception, SecurityError):
            self._fail_with_undefined_error()
        return ""


_env = ImmutableSandboxedEnvironment(
    autoescape=False, keep_trailing_newline=True, undefined=_Undefined
)


@lru_cache(maxsize=512)
def _compile(source: str) -> object:
    return _env.from_string(source)


def check_syntax(source: str, field: str) -> None:
    try:
        _compile(source)
    except TemplateError as exc:
        raise RenderError(field, f"does not compile: {exc}") from None


# Templates made only of text, `{{ name }}` and `{{ name or 'text' }}` (all built-ins, most
# overrides) are rendered without Jinja: Jinja's own lexer splits them once, and filling them in
# gives the same output (checked against Jinja in the unit tests) at a fraction of the cost of a
# sandboxed render. Anything else goes through Jinja.
_NOT_NAMES = frozenset({"true", "false", "none", "True", "False", "None"})
_Part = tuple[str, str, str | None]  # (text before, name, fallback text)
_PLAIN = ("variable_begin", "name", "variable_end")
_WITH_FALLBACK = ("variable_begin", "name", "or", "string", "variable_end")


@lru_cache(maxsize=512)
def _simple(source: str) -> tuple[tuple[_Part, ...], str] | None:
    """`source` as literal parts and placeholders, or None when it needs Jinja."""
    if "\r" in source:
        return None  # Jinja normalises line endings
    try:
        tokens = [(kind, value) for _, kind, value in _env.lex(source) if kind != "whitespace"]
    except TemplateError:
        return None
    parts: list[_Part] = []
    text: list[str] = []
    at = 0
    while at < len(tokens):
        kind, value = tokens[at]
        if kind == "data":
            text.append(value)
            at += 1
            continue
        shape = tuple("or" if (k, v) == ("name", "or") else k for k, v in tokens[at : at + 5])
        if shape[:3] == _PLAIN:
            fallback, width = None, 3
        elif (
            shape == _WITH_FALLBACK
            and tokens[at + 3][1][:1] == "'"
            and "\\" not in tokens[at + 3][1]
        ):
            fallback, width = tokens[at + 3][1][1:-1], 5
        else:
            return None
        name = tokens[at + 1][1]
        if name in _NOT_NAMES or name in _env.globals:
            return None
        parts.append(("".join(text), name, fallback))
        text = []
        at += width
    return tuple(parts), "".join(text)


def _render_simple(parts: tuple[tuple[_Part, ...], str], data: Mapping[str, object]) -> str:
    out: list[str] = []
    for text, name, fallback in parts[0]:
        out.append(text)
        value = data.get(name)
        if fallback is not None and not value:
            out.append(fallback)
        elif name in data:
            out.append(str(value))
    out.append(parts[1])
    return "".join(out)


def render_text(source: str, data: Mapping[str, object], field: str) -> str:
    if not source:
        return ""
    simple = _simple(source)
    if simple is not None:
        return _render_simple(simple, data)[:MAX_OUTPUT_CHARS]
    try:
        template = _compile(source)
        out: str = template.render(dict(data))  # type: ignore[attr-defined]
    except SecurityError as exc:
        raise RenderError(field, f"not allowed in a template: {exc}") from None
    except TemplateError as exc:
        raise RenderError(field, f"does not render: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise RenderError(field, f"does not render: {type(exc).__name__}: {exc}") from None
    return out[:MAX_OUTPUT_CHARS]


def render(text: TemplateText, data: Mapping[str, object]) -> tuple[str, str]:
    return render_text(text.subject, data, "subject"), render_text(text.body, data, "body")


def locale_candidates(locale: str) -> list[str]:
    """ "pt-BR" -> ["pt-BR", "pt", "en"]: most specific first, English last."""
    out: list[str] = []
    if locale:
        out.append(locale)
        base = locale.split("-", 1)[0]
        if base != locale:
            out.append(base)
    if DEFAULT_LOCALE not in out:
        out.append(DEFAULT_LOCALE)
    return out
