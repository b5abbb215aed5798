"""The Kafka ACLs of an exchange, generated from its names: which principal may do what on which topic and group.

Pure: namespace and regions in, ACL bindings out, plus their renderings (`yrdx kafka acls`: kafka-acls.sh
commands, JSON, the chart README's table). The local secure broker applies the same bindings at start
(gateway/dev/local_kafka.py), and a unit test holds the chart README's block equal to the generated one.

Kafka authorizes topics, groups and operations, never record keys: a region may write `yrdx.audit`, but a
segment it writes under another region's key is refused by the audit verification (checkpoint signatures,
gateway/audit/model.py), not by Kafka. README "Locking Kafka down" has the reasoning for every grant.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Final

from gateway.wire.regions import REGIONS, Topics, region_slug

ADMIN_USER: Final = "yrdx-admin"

# Kafka's wire codes (org.apache.kafka.common.resource.ResourceType, acl.AclOperation, acl.AclPermissionType,
# resource.PatternType): CreateAcls and DescribeAcls requests carry these numbers.
RESOURCE_TYPES: Final = {"TOPIC": 2, "GROUP": 3, "CLUSTER": 4}
OPERATIONS: Final = {"READ": 3, "WRITE": 4, "CREATE": 5, "DESCRIBE": 8, "DESCRIBE_CONFIGS": 10}
PERMISSION_ALLOW: Final = 3
PATTERN_LITERAL: Final = 3


@dataclass(frozen=True, slots=True, order=True)
class AclBinding:
    """ALLOW `operation` on the LITERAL resource `resource_type` `resource_name` to `principal`, from any host.
    `role` names the grant for people (the table's rows); it is no part of the ACL."""

    principal: str
    resource_type: str  # a key of RESOURCE_TYPES
    resource_name: str
    operation: str  # a key of OPERATIONS
    role: str = ""


def username(region: str, namespace: str = "") -> str:
    """The SCRAM user of a region's gateways, `[<ns>.]yrdx-<seg>` (its consumer group has the same name)."""
    return Topics(namespace).group(f"yrdx-{region_slug(region)}")


def principal(user: str) -> str:
    return f"User:{user}"


# (role, what it is for): the rows of the table, in this order.
ROLES: Final = (
    ("own inbox", "consume the messages addressed to the region"),
    ("own consumer group", "join the group, commit offsets"),
    ("every inbox", "requests and results to the others, receipts back to origins, `yrdx dlq replay` into its own"),
    ("own files topic", "receive the sealed chunks of claim-checked files"),
    ("own files group", "the files assembler's consumer group"),
    ("every files topic", "send claim-checked files to the others"),
    ("own dead-letter topic", "dead-letter refused records; `yrdx dlq list` and the console read them"),
    ("audit trail", "append its own chain; `yrdx audit ...` and the audit index read every chain"),
    ("checkpoints", "publish its chain heads; countersign the others'"),
    ("trust updates", "read revocations from the start; `yrdx trust revoke` publishes (CA-signed)"),
    ("topics it ensures", "create what is missing at start (gateway's ensure_topics), nothing else"),
    ("topic configs", "compare the ensured topics' retention with its config at start (read only)"),
)


def region_acls(region: str, namespace: str = "", regions: Sequence[str] = REGIONS, *,
                create: bool = True) -> list[AclBinding]:
    """What one region's gateways (and the CLI run with its config) need, and nothing more. Every grant is on a
    literal name: READ and WRITE imply DESCRIBE (metadata), and WRITE on a topic allows the idempotent producer
    (KIP-679), so neither DESCRIBE nor IdempotentWrite on the cluster is granted. `create`: CREATE on exactly the
    topics the gateway ensures at start; without it the operators create them first."""
    t = Topics(namespace)
    p = principal(username(region, namespace))

    def grant(role: str, kind: str, name: str, *ops: str) -> list[AclBinding]:
        return [AclBinding(p, kind, name, op, role) for op in ops]

    out = [
        *grant("own inbox", "TOPIC", t.inbox(region), "READ"),
        *grant("own consumer group", "GROUP", t.egress_group(region), "READ"),
        *(b for r in regions for b in grant("every inbox", "TOPIC", t.inbox(r), "WRITE")),
        *grant("own files topic", "TOPIC", t.files(region), "READ"),
        *grant("own files group", "GROUP", t.files_group(region), "READ"),
        *(b for r in regions for b in grant("every files topic", "TOPIC", t.files(r), "WRITE")),
        *grant("own dead-letter topic", "TOPIC", t.dlq(region), "READ", "WRITE"),
        *grant("audit trail", "TOPIC", t.audit, "READ", "WRITE"),
        *grant("checkpoints", "TOPIC", t.checkpoints, "READ", "WRITE"),
        *grant("trust updates", "TOPIC", t.trust, "READ", "WRITE"),
    ]
    ensured = [*(t.inbox(r) for r in regions), *(t.files(r) for r in regions), t.dlq(region), t.audit,
               t.checkpoints, t.trust]
    if create:
        out += [b for name in ensured for b in grant("topics it ensures", "TOPIC", name, "CREATE")]
    out += [b for name in ensured for b in grant("topic configs", "TOPIC", name, "DESCRIBE_CONFIGS")]
    return out


def exchange_acls(namespace: str = "", regions: Sequence[str] = REGIONS, *, create: bool = True) -> list[AclBinding]:
    """Every region's bindings, region by region."""
    return [b for r in regions for b in region_acls(r, namespace, regions, create=create)]


# --- renderings ------------------------------------------------------------------------------------------------


def acls_json(bindings: Iterable[AclBinding]) -> str:
    return json.dumps([asdict(b) for b in bindings], indent=2) + "\n"


def parse_acls_json(text: str) -> list[AclBinding]:
    """The bindings of `acls_json`; ValueError when a binding is malformed or names an unknown type/operation."""
    out = []
    for i, item in enumerate(json.loads(text)):
        try:
            b = AclBinding(**item)
        except TypeError as e:
            raise ValueError(f"binding {i}: {e}") from None
        if b.resource_type not in RESOURCE_TYPES or b.operation not in OPERATIONS or not b.principal.startswith(
                "User:") or not b.resource_name:
            raise ValueError(f"binding {i}: unsupported {b}")
        out.append(b)
    return out


def acls_commands(bindings: Iterable[AclBinding]) -> str:
    """One `kafka-acls.sh` command per binding ($B: `--bootstrap-server ... --command-config admin.properties`)."""
    lines = []
    for b in bindings:
        flag = {"TOPIC": "--topic", "GROUP": "--group"}[b.resource_type]
        lines.append(f"kafka-acls.sh $B --add --allow-principal {b.principal} --operation {b.operation.title()} "
                     f"{flag} {b.resource_name}")
    return "\n".join(lines) + "\n"


def acls_markdown(namespace: str = "", regions: Sequence[str] = REGIONS, *, create: bool = True) -> str:
    """The table of the chart README: one row per role and operation, one column per region's principal."""
    by_region = {r: region_acls(r, namespace, regions, create=create) for r in regions}
    head = "| grant | resource | operation | " + " | ".join(
        f"{r} (`{principal(username(r, namespace))}`)" for r in regions) + " |"
    rows = [head, "|" + "---|" * (3 + len(regions))]
    for role, why in ROLES:
        # operations granted on the same names share a row (READ, WRITE on yrdx.audit)
        cells_by_op: dict[str, tuple[str, ...]] = {}
        kind = ""
        for b in by_region[regions[0]]:
            if b.role == role and b.operation not in cells_by_op:
                kind = b.resource_type.lower()
                cells_by_op[b.operation] = tuple(
                    ", ".join(f"`{x.resource_name}`" for x in by_region[r] if x.role == role and x.operation ==
                              b.operation) for r in regions)
        ops_by_cells: dict[tuple[str, ...], list[str]] = {}
        for op, cells in cells_by_op.items():
            ops_by_cells.setdefault(cells, []).append(op)
        for cells, ops in ops_by_cells.items():
            rows.append(f"| {role}: {why} | {kind} | {', '.join(ops)} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
