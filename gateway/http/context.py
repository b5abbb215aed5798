"""What the HTTP API needs of a running gateway: a narrow, typed view, so http/ never imports the runtime."""

from __future__ import annotations

from typing import Protocol

from gateway.config import GatewayConfig
from gateway.crypto.seal import Opener  # an OpenerRing at run time
from gateway.crypto.trust import TrustStore
from gateway.files.sender import FileSender
from gateway.files.store import FileStore
from gateway.http.auth import Authenticator
from gateway.metrics import Metrics
from gateway.relay.health import EgressHealth
from gateway.relay.identity import IdentityWatch
from gateway.relay.ingress import Ingress
from gateway.relay.requests import RequestReply
from gateway.schemas.registry import SchemaRegistry
from gateway.state import StateStore


class ApiContext(Protocol):
    """Satisfied by `gateway.runtime.Gateway`; a test can hand the API anything with these attributes."""

    cfg: GatewayConfig
    auth: Authenticator
    ingress: Ingress
    state: StateStore
    metrics: Metrics
    registry: SchemaRegistry
    trust: TrustStore  # the live trust store (revocations applied): readiness
    audit_trust: TrustStore  # roots and certificates, as an auditor checks checkpoints
    opener: Opener | None
    metrics_token: str | None
    broker_ok: bool
    consumer_running: bool
    egress_health: EgressHealth
    identity: IdentityWatch  # fail closed: no new message while this gateway's certificate is not valid
    request_reply: RequestReply  # POST /v1/requests and the facades
    files: FileStore  # received files (GET /v1/files/{id})
    file_sender: FileSender  # POST /v1/files
