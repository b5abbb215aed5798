"""The envelope is built once; its bytes are what is signed and what travels."""

from __future__ import annotations

import uuid

import orjson
import pytest

from gateway.logs import mask
from gateway.wire import envelope


def test_uuid7_is_version_7_and_time_ordered() -> None:
    ids = [envelope.uuid7() for _ in range(50)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)  # the millisecond prefix never goes back


def test_build_then_parse_round_trips() -> None:
    msg_id, raw = envelope.build(msg_type="license.verify.request", schema_version=1, sender="JS", recipient="ZJ",
                                 payload={"a": "1"})
    env = envelope.parse(raw)
    assert (env.id, env.type, env.sender, env.recipient, env.correlation_id) == (
        msg_id, "license.verify.request", "JS", "ZJ", msg_id)
    assert env.created_at.endswith("Z") and env.payload == {"a": "1"}


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"id": "x"}',
                                 orjson.dumps({"id": "x", "type": "t", "schema_version": "1", "from": "JS",
                                               "to": "ZJ", "correlation_id": "c", "created_at": "t", "payload": {}})])
def test_malformed_envelopes_are_refused(raw: bytes) -> None:
    with pytest.raises(envelope.EnvelopeError):
        envelope.parse(raw)


def test_log_masking_hides_id_numbers_and_long_person_ids() -> None:
    line = mask("id 310115198503120418 and psn 33050099000010000001689700 and amount 356.80")
    assert "310115198503120418" not in line and "33050099000010000001689700" not in line
    assert "310115********0418" in line and "356.80" in line
