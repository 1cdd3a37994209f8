"""Request validation from the contract's protovalidate rules.

    from suuupra_runtime.validation import validate
    validate(request)   # raises errors.InvalidArgument with one FieldViolation per bad field

The runtime's interceptor calls this for every request message before the handler runs, so
handlers only see messages that satisfy their `.proto` constraints. Field paths use the usual
`google.rpc.BadRequest` notation: `title`, `items[0].name`, `labels["env"]`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import protovalidate
from google.protobuf.message import Message

from suuupra_runtime.errors import FieldViolation, InvalidArgument

# One validator per process: it caches the compiled rules of every message type it has seen.
_validator = protovalidate.Validator()


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


__all__ = ["field_path", "validate", "violations_of"]
