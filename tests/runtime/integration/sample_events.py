"""Event message types for the runtime's own event tests, built at import time.

Real services' events come from `proto/`; these live in package `suuupra.eventtest.v1` so their
stream (`EVENTTEST`) cannot collide with any product domain.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

PACKAGE = "suuupra.eventtest.v1"
DOMAIN = "eventtest"
STREAM = "EVENTTEST"


def _build() -> dict[str, type[Message]]:
    file = descriptor_pb2.FileDescriptorProto(
        name="suuupra/eventtest/v1/eventtest_events.proto", package=PACKAGE, syntax="proto3"
    )
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    int64 = descriptor_pb2.FieldDescriptorProto.TYPE_INT64
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    shapes = {
        "NoteCreated": [("note_id", string), ("title", string)],
        "NoteLiked": [("note_id", string), ("likes", int64)],
        "NoteArchived": [("note_id", string)],
    }
    for name, fields in shapes.items():
        message = file.message_type.add(name=name)
        for number, (field, kind) in enumerate(fields, start=1):
            message.field.add(name=field, number=number, type=kind, label=optional)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in shapes
    }


_TYPES = _build()
NoteCreated = _TYPES["NoteCreated"]
NoteLiked = _TYPES["NoteLiked"]
NoteArchived = _TYPES["NoteArchived"]
