"""Request validation from the contract's protovalidate rules.

    from suuupra_runtime.validation import validate
    validate(request)   # raises errors.InvalidArgument with one FieldViolation per bad field

The runtime's interceptor calls this for every request message before the handler runs, so
handlers only see messages that satisfy their `.proto` constraints. Field paths use the usual
`google.rpc.BadRequest` notation: `title`, `items[0].name`, `labels["env"]`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import protovalidate
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from suuupra_runtime.errors import FieldViolation, InvalidArgument

# One validator per process: it caches the compiled rules of every message type it has seen.
_validator = protovalidate.Validator()


_RULES_PACKAGE = "buf.validate."


def _declares_rules(options: Message) -> bool:
    return any(
        field.is_extension and field.full_name.startswith(_RULES_PACKAGE)
        for field, _ in options.ListFields()
    )


@functools.cache
def has_rules(descriptor: Descriptor) -> bool:
    """Whether a message of this type can break any protovalidate rule: the type, one of its
    oneofs or fields, or a message type it contains declares one. Without any, `validate` can
    only pass, and the interceptor skips it (it costs a few µs per request otherwise)."""
    return _has_rules(descriptor, set())


def _has_rules(descriptor: Descriptor, seen: set[str]) -> bool:
    if descriptor.full_name in seen:
        return False  # a recursive type: its rules, if any, are found where the cycle starts
    seen.add(descriptor.full_name)
    if _declares_rules(descriptor.GetOptions()):
        return True
    if any(_declares_rules(oneof.GetOptions()) for oneof in descriptor.oneofs):
        return True
    for field in descriptor.fields:
        if _declares_rules(field.GetOptions()):
            return True
        nested = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
        if nested is not None and _has_rules(nested, seen):
            return True
    return False


def _subscript(element: Any) -> str:
    subscript = element.subscript
    if subscript is None:
        return ""
    if subscript.field == "string_key":
        escaped = str(subscript.value).replace("\\", "\\\\").replace('"', '\\"')
        return f'["{escaped}"]'
    if subscript.field == "bool_key":
        return "[true]" if subscript.value else "[false]"
    return f"[{subscript.value}]"


def field_path(elements: Iterable[Any]) -> str:
    """Render `buf.validate.FieldPath` elements as `a.b[2].c` / `m["key"]`."""
    parts: list[str] = []
    for element in elements:
        name = element.field_name or str(element.field_number)
        parts.append(("." if parts else "") + name + _subscript(element))
    return "".join(parts)


def violations_of(message: Message) -> list[FieldViolation]:
    """Every rule `message` breaks (empty when valid)."""
    result: list[FieldViolation] = []
    for violation in _validator.collect_violations(message):
        proto = violation.proto
        path = field_path(proto.field.elements) if proto.field is not None else ""
        description = proto.message or proto.rule_id or "invalid value"
        result.append(FieldViolation(path, description))
    return result


def validate(message: Message) -> None:
    """Raise `InvalidArgument` listing every violation of `message`'s protovalidate rules."""
    violations = violations_of(message)
    if violations:
        raise InvalidArgument(violations, reason="INVALID_REQUEST")


__all__ = ["field_path", "has_rules", "validate", "violations_of"]
