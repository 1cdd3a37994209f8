"""The consumer reads a message's stream sequence and delivery count from its ack subject itself:
the same numbers nats-py's `msg.metadata` gives, for every ack subject form."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from suuupra_runtime.events.consumer import delivery_info


def _msg(reply: str) -> Msg:
    return Msg(_client=None, subject="suuupra.notes.v1.NoteShared", reply=reply)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.NOTES.notifications-notes.3.123456.1200.1733550000000000000.250",
        "$JS.ACK._.ACCHASH.NOTES.notifications-notes.3.123456.1200.1733550000000000000.250",
        "$JS.ACK.hub.ACCHASH.NOTES.notifications-notes.3.123456.1200.1733550000000000000.250.x9",
        "$JS.ACK.NOTES.c.1.7.7.1733550000000000000.0",
    ],
)
def test_the_ack_subject_gives_what_nats_metadata_gives(reply: str) -> None:
    msg = _msg(reply)
    meta = msg.metadata
    assert delivery_info(msg) == (meta.sequence.stream, meta.num_delivered)
    assert delivery_info(msg)[1] in (1, 3)


def test_other_forms_go_through_nats_py() -> None:
    with pytest.raises(NotJSMessageError):
        delivery_info(_msg("_INBOX.abc"))
