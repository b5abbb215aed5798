"""The four regions of the exchange and the Kafka names derived from them (README "Wire format": topics)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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


def region_slug(region: str) -> str:
    """The lowercase region code used in topic, group, file and platform names (`sh` in `yrdx.sh.inbox`)."""
    return region.lower()


def inbox_topic(region: str) -> str:
    return f"yrdx.{region_slug(region)}.inbox"


def dlq_topic(region: str) -> str:
    return f"yrdx.{region_slug(region)}.dlq"


def files_topic(region: str) -> str:
    return f"yrdx.{region_slug(region)}.files"


# `kafka.namespace`: lowercase letters, digits and '-', 1..32 characters, starting with a letter or digit.
NAMESPACE_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def check_namespace(namespace: str) -> str:
    """The namespace itself when it is valid (or empty: the default names); ValueError saying why otherwise."""
    if namespace and not NAMESPACE_PATTERN.fullmatch(namespace):
        raise ValueError(f"expected 1..32 lowercase letters, digits or '-', starting with a letter or digit, "
                         f"got {namespace!r}")
    return namespace


@dataclass(frozen=True, slots=True)
class Topics:
    """Every Kafka name of one exchange: topics and consumer groups.

    The default (empty) namespace gives the default names (`yrdx.sh.inbox`, `yrdx.audit`, group `yrdx-sh`).
    With a namespace, e.g. `staging`, each name gets `staging.` in front (`staging.yrdx.sh.inbox`,
    `staging.yrdx.audit`, group `staging.yrdx-sh`), so two exchanges can share one Kafka cluster without
    reading each other's records. Built once from the config (`KafkaConfig.topics`).
    """

    namespace: str = ""
    audit: str = field(init=False)
    checkpoints: str = field(init=False)
    trust: str = field(init=False)
    _inbox: dict[str, str] = field(init=False, repr=False, compare=False)
    _dlq: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_namespace(self.namespace)
        object.__setattr__(self, "audit", self._name(AUDIT_TOPIC))
        object.__setattr__(self, "checkpoints", self._name(CHECKPOINT_TOPIC))
        object.__setattr__(self, "trust", self._name(TRUST_TOPIC))
        object.__setattr__(self, "_inbox", {r: self._name(inbox_topic(r)) for r in REGIONS})
        object.__setattr__(self, "_dlq", {r: self._name(dlq_topic(r)) for r in REGIONS})

    def _name(self, name: str) -> str:
        return f"{self.namespace}.{name}" if self.namespace else name

    def inbox(self, region: str) -> str:
        """The region's inbox topic, `[<ns>.]yrdx.<seg>.inbox`."""
        return self._inbox.get(region) or self._name(inbox_topic(region))

    def dlq(self, region: str) -> str:
        """The region's dead-letter topic, `[<ns>.]yrdx.<seg>.dlq`."""
        return self._dlq.get(region) or self._name(dlq_topic(region))

    def files(self, region: str) -> str:
        """The region's files topic (sealed chunks of claim-checked files), `[<ns>.]yrdx.<seg>.files`."""
        return self._name(files_topic(region))

    def group(self, name: str) -> str:
        """A consumer group id (or transactional id) of this exchange: `[<ns>.]<name>`."""
        return self._name(name)

    def egress_group(self, region: str) -> str:
        """The consumer group of the region's gateways on its inbox, `[<ns>.]yrdx-<seg>`."""
        return self.group(f"yrdx-{region_slug(region)}")

    def files_group(self, region: str) -> str:
        """The consumer group of the region's gateways on its files topic, `[<ns>.]yrdx-files-<seg>`."""
        return self.group(f"yrdx-files-{region_slug(region)}")


DEFAULT_TOPICS: Final = Topics()


def gateway_audience(region: str) -> str:
    """The `aud` a platform puts in its JWT for its own region's gateway."""
    return f"urn:yrdx:gateway:{region}"
