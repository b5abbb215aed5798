"""The four regions of the exchange and the names derived from them (DESIGN.md sections 1 and 4)."""

from __future__ import annotations

from typing import Final

REGIONS: Final = ("SH", "JS", "ZJ", "AH")
DIVISION: Final = {"SH": "310000", "JS": "320000", "ZJ": "330000", "AH": "340000"}
NAMES: Final = {"SH": "Shanghai", "JS": "Jiangsu", "ZJ": "Zhejiang", "AH": "Anhui"}

# A gateway certificate names its region with this SAN URI prefix, e.g. urn:yrdx:region:SH.
REGION_URI_PREFIX: Final = "urn:yrdx:region:"

AUDIT_TOPIC: Final = "yrdx.audit"
# Small signed chain heads, one every 10 s per gateway: the other gateways countersign them without having to
# read every audit segment.
CHECKPOINT_TOPIC: Final = "yrdx.checkpoints"
TRUST_TOPIC: Final = "yrdx.trust"


def is_region(code: str) -> bool:
    return code in DIVISION


def segment(region: str) -> str:
    return region.lower()


def inbox_topic(region: str) -> str:
    return f"yrdx.{segment(region)}.inbox"


def dlq_topic(region: str) -> str:
    return f"yrdx.{segment(region)}.dlq"


def gateway_audience(region: str) -> str:
    """The `aud` a platform puts in its JWT for its own region's gateway."""
    return f"urn:yrdx:gateway:{region}"
