"""The pull inbox's entries (embed=True) hold the stored envelope as it is, and read as the parsed document."""

from __future__ import annotations

import orjson
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway.crypto.seal import X25519Opener, X25519Sealer
from gateway.relay.inbox_document import inbox_document
from gateway.wire import envelope

PAYLOAD = {"name": "张三", "note": "a \"sealed\" word in the clear"}


def _both(raw: bytes, opener: X25519Opener | None, late: str | None = None) -> tuple[bytes, dict[str, object]]:
    args = ("m1", "license.verify.request", "JS", raw, "sig", opener, late)
    return orjson.dumps({"messages": [inbox_document(*args, embed=True)]}), {"messages": [inbox_document(*args)]}


def test_a_clear_envelope_is_embedded_as_the_bytes_stored() -> None:
    _, raw = envelope.build(msg_type="license.verify.request", schema_version=1, sender="JS", recipient="SH",
                            payload={"n": 1})
    raw = orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2)  # stored bytes another writer might keep
    body, doc = _both(raw, None, late="r1")
    assert raw in body  # not parsed and serialized again: the indentation is still there
    assert orjson.loads(body) == doc
    assert orjson.loads(body)["messages"][0]["late_reply_to"] == "r1"


def test_a_sealed_envelope_still_gets_its_payload_opened() -> None:
    key = X25519PrivateKey.generate()
    sealed = X25519Sealer(key.public_key(), "SH").seal(orjson.dumps(PAYLOAD))
    _, raw = envelope.build(msg_type="license.verify.request", schema_version=1, sender="JS", recipient="SH",
                            payload=None, sealed=sealed)
    body, doc = _both(raw, X25519Opener(key))
    entry = orjson.loads(body)["messages"][0]
    assert entry == doc["messages"][0]  # type: ignore[index]
    assert entry["payload"] == PAYLOAD and entry["envelope"]["sealed"] == sealed


def test_a_clear_payload_naming_the_word_sealed_reads_the_same() -> None:
    _, raw = envelope.build(msg_type="license.verify.request", schema_version=1, sender="JS", recipient="SH",
                            payload={"sealed": "no, just a field"})
    body, doc = _both(raw, None)
    entry = orjson.loads(body)["messages"][0]
    assert entry == doc["messages"][0]  # type: ignore[index]
    assert "payload" not in entry
