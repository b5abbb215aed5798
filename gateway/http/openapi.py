"""The OpenAPI 3.1 document of one gateway's HTTP API (README "HTTP API" and "Errors"), served without a token at
GET /openapi.json.

Every route of `gateway.http.api.build_app` is an operation here (tests/unit/test_openapi.py compares them with
the live router), and every problem code comes from `gateway.wire.problems` (HTTP_STATUS, TITLES), so a code
added there shows up here with its status. Each problem response narrows `code` to the codes that route can
answer with that status, so a fuzzer (tests/e2e/test_openapi_fuzz.py) checks the codes as well as the statuses.
The limits in it (body sizes, batch size, `max`, `wait`) are those of the gateway that serves it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.config import Limits
from gateway.http.auth import AUDIT_SCOPE
from gateway.relay.ingress import MAX_CORRELATION_ID, MAX_IDEMPOTENCY_KEY
from gateway.wire.envelope import MAX_OPERATOR_FIELD, MAX_USE_CAUSE
from gateway.wire.problems import HTTP_STATUS, TITLES
from gateway.wire.regions import NAMES, REGIONS

OPENAPI_VERSION = "3.1.0"
PROBLEM_MEDIA_TYPE = "application/problem+json"
JSON_MEDIA_TYPE = "application/json"
METRICS_MEDIA_TYPE = "text/plain"
ANY_FILE = {"*/*": {"schema": {"type": "string", "format": "binary"}}}  # a file's bytes, of its own media type
JSON_SCHEMA_DIALECT = "https://spec.openapis.org/oas/3.1/dialect/base"

# No C0/C1 control characters: the value becomes an HTTP or Kafka header (gateway/wire/text.py header_safe).
_HEADER_SAFE = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
_CODE = "^[0-9A-Za-z][0-9A-Za-z._:-]*$"  # operator fields and purpose codes (gateway/wire/envelope.py)

# Problem codes every route can answer without reaching its handler (api.py answer_problems and _Protocol):
# an unknown route, a known route with another method, malformed HTTP.
CROSS_CUTTING: dict[str, str] = {
    "not_found": "no such route (answered before authentication)",
    "method_not_allowed": "the route exists, not with this method; `Allow` lists those it takes",
    "invalid_request": "malformed HTTP (a bad request or header line, `Content-Length` with `Transfer-Encoding`, "
                       "over 128 headers, a line over 8190 bytes, broken chunked framing); the connection closes",
}

_BODY_CODES = ("invalid_json", "invalid_request", "request_timeout", "too_large")


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def problem_schema_for(codes: Iterable[str]) -> dict[str, Any]:
    """The Problem schema with `code` narrowed to `codes` (all of one HTTP status)."""
    codes = sorted(set(codes))
    statuses = {HTTP_STATUS[c] for c in codes}
    assert len(statuses) == 1, codes
    return {"allOf": [_ref("schemas", "Problem"),
                      {"properties": {"code": {"enum": codes}, "status": {"const": statuses.pop()}}}]}


def _problem_example(code: str, detail: str) -> dict[str, Any]:
    return {"summary": TITLES[code], "value": {
        "type": f"urn:yrdx:problem:{code}", "title": TITLES[code], "status": HTTP_STATUS[code], "code": code,
        "detail": detail,
    }}


def problem_responses(codes: Mapping[str, str], schemas: Mapping[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Responses by status for these problem codes (code -> when), each an application/problem+json whose `code`
    is one of the codes of that status (or the schema `schemas` gives for that status)."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        if code not in HTTP_STATUS:  # a code this build of gateway/wire/problems.py does not have
            continue
        by_status.setdefault(HTTP_STATUS[code], []).append(code)
    out: dict[str, Any] = {}
    for status, group in sorted(by_status.items()):
        group.sort()
        description = "; ".join(f"`{c}`: {codes[c]}" for c in group)
        content: dict[str, Any] = {"schema": (schemas or {}).get(status) or problem_schema_for(group),
                                   "examples": {c: _problem_example(c, codes[c]) for c in group}}
        response: dict[str, Any] = {"description": description, "content": {PROBLEM_MEDIA_TYPE: content}}
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {
                "description": "`Bearer realm=\"yrdx\"`", "schema": {"type": "string"}}}
        if status == 429:
            response["headers"] = {"Retry-After": {
                "description": "seconds to wait before retrying", "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
        out[str(status)] = response
    return out


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON_MEDIA_TYPE: {"schema": schema}}}


def _schemas(limits: Limits, message_types: list[str]) -> dict[str, Any]:
    regions = list(REGIONS)
    problem_properties: dict[str, Any] = {
        "type": {"type": "string", "pattern": "^urn:yrdx:problem:[a-z_]+$",
                 "description": "`urn:yrdx:problem:<code>`"},
        "title": {"type": "string", "description": "a fixed title per code"},
        "status": {"type": "integer", "enum": sorted(set(HTTP_STATUS.values()))},
        "code": {"type": "string", "enum": sorted(HTTP_STATUS),
                 "description": "stable machine-readable code (README \"Errors\"): " + "; ".join(
                     f"`{c}` ({HTTP_STATUS[c]}, {TITLES[c]})" for c in sorted(HTTP_STATUS))},
        "detail": {"type": "string", "description": "what was wrong; never echoes a value of the request"},
        "errors": {"type": "array", "description": "`schema_violation`: where the payload breaks its schema",
                   "items": _ref("schemas", "SchemaError")},
        "id": {"type": "string", "description": "the message id, when a message was built but the broker did not "
                                                 "acknowledge it: GET /v1/messages/{id} tells later what became of it"},
        "message_id": {"type": "string", "description": "`reply_timeout`: the request's message id"},
        "status_url": {"type": "string", "description": "`reply_timeout`: where the request's status can be read"},
        "compensation": {"$ref": "#/components/schemas/CompensationRef"},
    }
    message_properties: dict[str, Any] = {
        "type": {"type": "string", "minLength": 1, **({"enum": message_types} if message_types else {}),
                 "description": "message type, e.g. `medical.filing.request`: one this gateway has a JSON Schema "
                                "for (schemas/); which ones a platform may send is its `may_send`"},
        "to": {"type": "string", "enum": regions, "description": "destination region (not this gateway's own)"},
        "payload": {"description": "the document; validated against the JSON Schema of `type` and "
                                   "`schema_version` (schema_violation lists where it does not match)"},
        "correlation_id": {"type": "string", "minLength": 1, "maxLength": MAX_CORRELATION_ID,
                           "pattern": _HEADER_SAFE, "description": "the conversation; default: the message id. It "
                           "becomes the Kafka key and the receiver's `Yrdx-Correlation-Id` webhook header"},
        "schema_version": {"type": "integer", "description": "default: the newest version of `type`"},
        "expires_at": {"type": "string", "format": "date-time",
                       "description": "RFC 3339 with a time zone; the receiver dead-letters the message after it"},
        "operator": {"type": "object", "required": ["id", "role"], "additionalProperties": False,
                     "description": "who asks (codes, never a name): required with `use_cause` on types that read "
                                    "personal data or licences; signed into the envelope and audited",
                     "properties": {k: {"type": "string", "maxLength": MAX_OPERATOR_FIELD, "pattern": _CODE}
                                    for k in ("id", "role", "department")}},
        "use_cause": {"type": "string", "maxLength": MAX_USE_CAUSE, "pattern": _CODE,
                      "description": "the purpose code (README \"Government services across regions\"): one the "
                                     "type allows in the destination region, else `not_permitted_purpose`"},
    }
    accepted_item = {
        "type": "object", "required": ["index", "status", "id", "correlation_id"], "additionalProperties": False,
        "properties": {"index": {"type": "integer", "minimum": 0}, "status": {"const": 202},
                       "id": {"type": "string"}, "correlation_id": {"type": "string"}},
    }
    refused_item = {
        "type": "object", "required": ["index", "type", "title", "status", "code", "detail"],
        "additionalProperties": False,
        "properties": {"index": {"type": "integer", "minimum": 0}, **problem_properties},
    }
    return {
        "Problem": {
            "type": "object", "description": "RFC 9457 problem details with a stable `code`",
            "required": ["type", "title", "status", "code", "detail"], "additionalProperties": False,
            "properties": problem_properties,
        },
        "BatchUnavailable": {
            "type": "object", "description": "503 `broker_unavailable` for a batch: the problem, and each message's "
            "result with its id (some may have reached the broker before it stopped answering)",
            "required": ["type", "title", "status", "code", "detail", "results"], "additionalProperties": False,
            "properties": {**problem_properties, "results": {"type": "array", "items": refused_item}},
        },
        "SchemaError": {
            "type": "object", "required": ["pointer", "message"], "additionalProperties": False,
            "properties": {"pointer": {"type": "string", "description": "JSON pointer into the payload"},
                           "message": {"type": "string"}},
        },
        "Message": {
            "type": "object", "description": "a message for another region's platform",
            "required": ["type", "to", "payload"], "additionalProperties": False,
            "properties": message_properties,
        },
        "Request": {
            "type": "object", "description": "a request type (its schema has `x-reply`) for another region's "
            "platform, and how long to wait for its reply",
            "required": ["type", "to", "payload"], "additionalProperties": False,
            "properties": {**message_properties, "deadline_ms": {
                "type": "integer", "minimum": 1, "description": "how long to wait (default: the type's "
                "`deadline_ms`; at most its `limit_ms`, README \"Request-reply\")"}},
        },
        "Replied": {
            "type": "object", "required": ["message_id", "status", "reply", "elapsed_ms"],
            "additionalProperties": False,
            "properties": {"message_id": {"type": "string"}, "status": {"const": "replied"},
                           "reply": _ref("schemas", "InboxMessage"), "elapsed_ms": {"type": "number"}},
        },
        "CompensationRef": {
            "type": "object", "required": ["type", "message_id"], "additionalProperties": False,
            "description": "the compensating message the gateway sent when the deadline passed",
            "properties": {"type": {"type": "string"}, "message_id": {"type": "string"}},
        },
        "RequestStatus": {
            "type": "object", "required": ["message_id", "type", "status", "created_at"],
            "additionalProperties": False,
            "properties": {
                "message_id": {"type": "string"}, "type": {"type": "string"},
                "status": {"enum": ["pending", "replied", "timed_out", "compensated", "late_result"]},
                "reply": _ref("schemas", "InboxMessage"), "compensation": _ref("schemas", "CompensationRef"),
                "created_at": {"type": "string", "format": "date-time"},
                "replied_at": {"type": "string", "format": "date-time"},
            },
        },
        "Batch": {
            "type": "object", "required": ["messages"], "additionalProperties": False,
            "properties": {"messages": {"type": "array", "minItems": 1, "maxItems": limits.batch_max,
                                        "items": _ref("schemas", "Message")}},
        },
        "Accepted": {
            "type": "object", "required": ["id", "status", "correlation_id"], "additionalProperties": False,
            "properties": {"id": {"type": "string", "description": "UUIDv7 message id"},
                           "status": {"const": "accepted"}, "correlation_id": {"type": "string"}},
        },
        "BatchResult": {
            "type": "object", "required": ["accepted", "rejected", "results"], "additionalProperties": False,
            "properties": {
                "accepted": {"type": "integer", "minimum": 0}, "rejected": {"type": "integer", "minimum": 0},
                "results": {"type": "array", "description": "one per message, in order: accepted (status 202 and "
                            "its id) or the problem of that message", "items": {"anyOf": [accepted_item,
                                                                                          refused_item]}},
            },
        },
        "SentMessage": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "type", "to", "correlation_id", "envelope_sha256", "status", "receipt", "history"],
            "properties": {
                "id": {"type": "string"}, "type": {"type": "string"}, "to": {"type": "string", "enum": regions},
                "correlation_id": {"type": "string"},
                "envelope_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "status": {"enum": ["accepted", "published", "publish_failed", "delivered", "rejected"]},
                "receipt": {"type": ["object", "null"], "description": "the destination's signed receipt (its JWS, "
                            "signer thumbprint, envelope hash, reason when rejected)"},
                "history": {"type": "array", "items": {
                    "type": "object", "required": ["stage", "at"],
                    "properties": {"stage": {"type": "string"}, "at": {"type": "number", "description": "Unix time"},
                                   "detail": {}}}},
            },
        },
        "InboxMessage": {
            "type": "object", "required": ["id", "type", "from", "signature", "envelope"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"}, "type": {"type": "string"}, "from": {"type": "string", "enum": regions},
                "signature": {"type": "string", "description": "the sender's JWS (detached content) over the "
                              "envelope bytes"},
                "envelope": {"type": "object", "description": "the signed envelope (sealed types: with `sealed`)"},
                "payload": {"description": "a sealed type's payload, opened by this gateway"},
                "late_reply_to": {"type": "string", "description": "a result that came after its request's "
                                  "deadline (the request had no compensation): the request's message id"},
            },
        },
        "Inbox": {
            "type": "object", "required": ["messages"], "additionalProperties": False,
            "properties": {"messages": {"type": "array", "items": _ref("schemas", "InboxMessage")}},
        },
        "Ack": {
            "type": "object", "required": ["ids"], "additionalProperties": False,
            "properties": {"ids": {"type": "array", "maxItems": 1000, "items": {"type": "string"}}},
        },
        "AccessToken": {
            "type": "object", "required": ["access_token", "token_type", "expires_in"], "additionalProperties": False,
            "properties": {"access_token": {"type": "string", "pattern": "^yat1\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$"},
                           "token_type": {"const": "Bearer"},
                           "expires_in": {"type": "integer", "minimum": 1}},
        },
        "Acked": {
            "type": "object", "required": ["acked"], "additionalProperties": False,
            "properties": {"acked": {"type": "integer", "minimum": 0}},
        },
        "Usage": {
            "type": "object", "required": ["region", "subjects", "uses"], "additionalProperties": False,
            "properties": {
                "region": {"type": "string", "enum": regions},
                "subjects": {"type": "array", "items": {"type": "string"}},
                "uses": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["at", "message_id", "correlation_id", "type", "from", "subject", "operator",
                                 "use_cause"],
                    "properties": {
                        "at": {"type": "string", "description": "when this gateway verified the request"},
                        "message_id": {"type": "string"}, "correlation_id": {"type": "string"},
                        "type": {"type": ["string", "null"]}, "from": {"type": ["string", "null"]},
                        "subject": {"type": "string"},
                        "operator": {"type": ["object", "null"], "description": "id, role, department codes"},
                        "use_cause": {"type": ["string", "null"]},
                    }}},
            },
        },
        "AuditTrace": {
            "type": "object", "description": "the document of `yrdx audit trace --json`",
            "required": ["message_id", "correlation_ids", "message_ids", "receipt_ids", "regions", "signers",
                         "records", "conflicts"],
            "properties": {
                "message_id": {"type": "string"},
                "correlation_ids": {"type": "array", "items": {"type": "string"}},
                "message_ids": {"type": "array", "items": {"type": "string"}},
                "receipt_ids": {"type": "array", "items": {"type": "string"}},
                "regions": {"type": "array", "items": {"type": "string"}},
                "signers": {"type": "object", "additionalProperties": {"type": "string"}},
                "records": {"type": "array", "items": {"type": "object"}},
                "conflicts": {"type": "array", "items": {"type": "object"}},
            },
        },
        "ClaimCheck": {
            "type": "object", "description": "a file sent with POST /v1/files: put this object in a message's "
            "payload (schemas/yrdx/yrdx.claim_check.v1.json) to hand the file over with it",
            "required": ["file_id", "digest", "size", "media_type"], "additionalProperties": False,
            "properties": {
                "file_id": {"type": "string", "format": "uuid"},
                "digest": {"type": "object", "required": ["alg", "value"], "additionalProperties": False,
                           "properties": {"alg": {"enum": ["SHA-256", "SM3"]},
                                          "value": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}},
                "size": {"type": "integer", "minimum": 0}, "media_type": {"type": "string"},
            },
        },
        "Health": {
            "type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}},
        },
        "Readiness": {
            "type": "object", "required": ["ready", "checks", "failing"],
            "properties": {
                "ready": {"type": "boolean"},
                "checks": {"type": "object", "additionalProperties": False,
                           "required": list(READINESS_CHECKS),
                           "properties": {k: {"type": "boolean"} for k in READINESS_CHECKS}},
                "failing": {"type": "array", "items": {"type": "string"}},
                "identity": {"type": "object", "description": "why `identity` fails: a problem code and detail",
                             "properties": {"code": {"enum": ["identity_expired", "identity_revoked"]},
                                            "detail": {"type": "string"}}},
                "egress": {"type": "object", "description": "why `egress_progress` fails",
                           "properties": {"stalled_partitions": {"type": "array"},
                                          "recent_restarts": {"type": "integer"}}},
            },
        },
    }


def _parameters() -> dict[str, Any]:
    return {
        "MessageId": {"name": "id", "in": "path", "required": True, "description": "message id",
                      "schema": {"type": "string", "minLength": 1}},
    }


READINESS_CHECKS = ("broker", "trust", "schemas", "identity", "state", "consumer", "egress_progress")


def document(*, region: str, limits: Limits, max_pull: int, max_wait_s: float,
             message_types: Iterable[str] = (), max_file_bytes: int = 200 * 1024 * 1024) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the gateway of `region`, with its limits and the message types it has schemas
    for (none given: any string)."""
    jwt: list[dict[str, list[str]]] = [{"platformJwt": []}]
    body_codes = {
        "invalid_json": "the body is not JSON (invalid UTF-8, NaN/Infinity, a number beyond double range, a lone "
                        "surrogate escape)",
        "invalid_request": "the body is not of the documented shape",
        "request_timeout": "the body did not arrive within 30 s of the header",
        "too_large": "the body is over the limit (checked on Content-Length before reading)",
    }
    unauthenticated = {"unauthenticated": "token missing, malformed, expired, wrong audience or algorithm, "
                                          "replayed, too long-lived; two Authorization headers"}
    platform_only = {"forbidden": "only a platform may use this route"}
    # Every authenticated request checks its token's jti in the state store.
    state = {"state_unavailable": "the gateway's state database cannot be reached"}
    identity = {"identity_expired": "this gateway's own certificate is expired or not yet valid: it signs no new "
                                    "message",
                "identity_revoked": "this gateway's own certificate is revoked: it signs no new message"}
    post_message_codes = {
        **body_codes,
        "invalid_request": "not {type, to, payload, ...}, unknown fields, bad correlation_id, expires_at or "
                           "schema_version, a bad Idempotency-Key, a message nested too deeply to serialize",
        "schema_violation": "the payload does not match its schema (`errors` lists JSON pointers)",
        "unknown_type": "no schema for that type and version",
        **unauthenticated, **state, **platform_only,
        "not_permitted": "the platform may not send this type",
        "purpose_required": "the type reads personal data or licences and `operator` or `use_cause` is missing",
        "not_permitted_purpose": "`use_cause` is not among the purposes allowed for the type",
        "unknown_region": "`to` is not another region of the exchange",
        "idempotency_conflict": "the Idempotency-Key was used with a different body",
        "overloaded": "the gateway holds as many messages or request bytes in flight as it may; retry after "
                      "`Retry-After` seconds",
        "broker_unavailable": f"the broker did not acknowledge within {limits.publish_timeout_s:g} s; retry with "
                              "the same Idempotency-Key",
        **identity,
    }
    batch_codes = {
        **body_codes,
        "invalid_request": 'not {"messages": [...]} with 1 or more items',
        "too_large": f"over {limits.batch_max} messages or {limits.max_batch_body_bytes} bytes",
        **unauthenticated, **state, **platform_only,
        "overloaded": "the gateway holds as many messages or request bytes in flight as it may; retry after "
                      "`Retry-After` seconds",
        "broker_unavailable": "the broker acknowledged none of the messages; `results` still lists each id",
        **identity,
    }
    batch_unavailable = {"oneOf": [
        {"allOf": [_ref("schemas", "BatchUnavailable"),
                   {"properties": {"code": {"const": "broker_unavailable"}, "status": {"const": 503}}}]},
        problem_schema_for(("identity_expired", "identity_revoked", "state_unavailable")),
    ]}
    idempotency_key = {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "description": f"at most one, 1 to {MAX_IDEMPOTENCY_KEY} UTF-8 characters, no control characters",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY, "pattern": _HEADER_SAFE},
    }
    paths: dict[str, Any] = {
        "/v1/token": {"post": {
            "operationId": "postToken", "summary": "Trade the caller's single-use assertion (the request's own "
            "bearer JWT; no body) for an access token, reused until it expires", "security": jwt,
            "responses": {"200": _json(_ref("schemas", "AccessToken"), "the access token (RFC 6749 5.1 shape, "
                                       "`Cache-Control: no-store`)"),
                          **problem_responses({**unauthenticated, **state,
                                               "unauthenticated": "the token is missing, not a valid assertion, "
                                               "or is itself an access token (one is never renewed by another)"})},
        }},
        "/v1/messages": {"post": {
            "operationId": "postMessage", "summary": "Send one message to another region", "security": jwt,
            "description": "202 once the broker acknowledged it. A retry with the same `Idempotency-Key` returns "
                           "the same id and resends the same bytes, never a second message.",
            "parameters": [idempotency_key],
            "requestBody": {"required": True, "description": f"at most {limits.max_body_bytes} bytes",
                            "content": {JSON_MEDIA_TYPE: {"schema": _ref("schemas", "Message")}}},
            "responses": {"202": _json(_ref("schemas", "Accepted"), "accepted: the broker acknowledged it"),
                          **problem_responses(post_message_codes)},
        }},
        "/v1/requests": {"post": {
            "operationId": "postRequest", "summary": "Send a request and wait for its reply (README "
            "\"Request-reply\")", "security": jwt,
            "description": "held until the result of the request's reply type comes back from its destination with "
                           "its correlation id, or the deadline passes (504 `reply_timeout`; a type with "
                           "compensation is then undone by the gateway). A retry with the same `Idempotency-Key` "
                           "sends nothing new and waits for (or returns) the same reply.",
            "parameters": [idempotency_key],
            "requestBody": {"required": True, "description": f"at most {limits.max_body_bytes} bytes",
                            "content": {JSON_MEDIA_TYPE: {"schema": _ref("schemas", "Request")}}},
            "responses": {"200": _json(_ref("schemas", "Replied"), "the reply, as the pull inbox shows it"),
                          **problem_responses({
                              **post_message_codes,
                              "invalid_request": post_message_codes["invalid_request"] + "; a type that is not a "
                              "request type; `deadline_ms` not an integer from 1 to the type's limit; a "
                              "correlation_id that names another request",
                              "reply_timeout": "no reply within the deadline: `message_id`, `status_url`, and "
                                               "`compensation` when the gateway sent one"})},
        }},
        "/v1/requests/{id}": {"get": {
            "operationId": "getRequest", "summary": "Status of a request sent with POST /v1/requests",
            "description": "for the platform that sent it", "security": jwt,
            "parameters": [_ref("parameters", "MessageId")],
            "responses": {"200": _json(_ref("schemas", "RequestStatus"), "the request"),
                          **problem_responses({**unauthenticated, **state, **platform_only,
                                               "not_found": "no such request for this caller"})},
        }},
        "/v1/messages/batch": {"post": {
            "operationId": "postBatch", "summary": f"Send up to {limits.batch_max} messages, signed together",
            "security": jwt,
            "requestBody": {"required": True, "description": f"at most {limits.max_batch_body_bytes} bytes",
                            "content": {JSON_MEDIA_TYPE: {"schema": _ref("schemas", "Batch")}}},
            "responses": {"207": _json(_ref("schemas", "BatchResult"), "one result per message"),
                          **problem_responses(batch_codes, {503: batch_unavailable})},
        }},
        "/v1/messages/{id}": {"get": {
            "operationId": "getMessage", "summary": "Status, history and receipt of a message sent from here",
            "description": "for the platform that sent it, or a caller with the `audit:read` scope",
            "security": jwt, "parameters": [_ref("parameters", "MessageId")],
            "responses": {"200": _json(_ref("schemas", "SentMessage"), "the message"),
                          **problem_responses({**unauthenticated, **state,
                                               "not_found": "no such message for this caller"})},
        }},
        "/v1/inbox": {"get": {
            "operationId": "getInbox", "summary": "Pull delivery: lease waiting messages for 60 s until acked",
            "security": jwt,
            "parameters": [
                {"name": "max", "in": "query", "required": False, "description": "how many at most (an integer)",
                 "schema": {"type": "integer", "minimum": 1, "maximum": max_pull, "default": 100}},
                {"name": "wait", "in": "query", "required": False,
                 "description": "long poll: seconds to wait for a message when none is waiting (finite)",
                 "schema": {"type": "number", "minimum": 0, "maximum": max_wait_s, "default": 0}},
            ],
            "responses": {"200": _json(_ref("schemas", "Inbox"), "the leased messages (maybe none)"),
                          **problem_responses({
                              "invalid_request": f"`max` not an integer from 1 to {max_pull}, or `wait` not a "
                                                 f"finite number of seconds from 0 to {max_wait_s:g}",
                              **unauthenticated, **state, **platform_only})},
        }},
        "/v1/inbox/ack": {"post": {
            "operationId": "ackInbox", "summary": "Acknowledge pulled messages", "security": jwt,
            "requestBody": {"required": True, "content": {JSON_MEDIA_TYPE: {"schema": _ref("schemas", "Ack")}}},
            "responses": {"200": _json(_ref("schemas", "Acked"), "how many leased messages were acknowledged"),
                          **problem_responses({**body_codes,
                                               "invalid_request": f'not {{"ids": [...]}} with at most {max_pull} '
                                                                  "string ids",
                                               **unauthenticated, **state, **platform_only})},
        }},
        "/v1/audit/messages/{id}": {"get": {
            "operationId": "getAuditTrace", "summary": "The message's conversation across regions, from the audit "
            "index (caught up from yrdx.audit first, for at most 2 s)",
            "security": [{"platformJwt": [AUDIT_SCOPE]}], "parameters": [_ref("parameters", "MessageId")],
            "responses": {"200": _json(_ref("schemas", "AuditTrace"), "as `yrdx audit trace --json`"),
                          **problem_responses({**unauthenticated, **state,
                                               "forbidden": f"the {AUDIT_SCOPE} scope is required",
                                               "not_found": "no audit record names this message id",
                                               "index_unavailable": "the audit index database cannot be reached"})},
        }},
        "/v1/usage": {"get": {
            "operationId": "getUsage", "summary": "Who used a holder's data or licences in this region, when and "
            "for what, from the audit index (caught up from yrdx.audit first, for at most 2 s)",
            "security": jwt,
            "parameters": [{"name": "subject", "in": "query", "required": True, "explode": True,
                            "description": "the holder's pseudonym (keyed hash, 64 lowercase hex), repeatable",
                            "schema": {"type": "array", "minItems": 1, "maxItems": 20,
                                       "items": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}],
            "responses": {"200": _json(_ref("schemas", "Usage"), "the uses, oldest first"),
                          **problem_responses({**unauthenticated, **state, **platform_only,
                                               "invalid_request": "no `subject`, more than 20, or one that is not "
                                                                  "a pseudonym",
                                               "index_unavailable": "the audit index database cannot be reached"})},
        }},
        "/v1/files": {"post": {
            "operationId": "postFile", "summary": "Send a file to another region, streamed in sealed chunks",
            "description": "201 once the broker acknowledged every chunk and the file's manifest; the answer is the "
                           "claim check a message's payload then carries (README \"Files (claim checks)\")",
            "security": jwt,
            "parameters": [{"name": "to", "in": "query", "required": True, "description": "destination region",
                            "schema": {"type": "string", "enum": list(REGIONS)}}],
            "requestBody": {"required": True, "description": f"the file, at most {max_file_bytes} bytes; its "
                            "Content-Type (type/subtype, kept in lowercase) is the file's media type",
                            "content": ANY_FILE},
            "responses": {"201": _json(_ref("schemas", "ClaimCheck"), "the file's claim check"),
                          **problem_responses({
                              "invalid_request": "the Content-Type is not a media type (type/subtype), or the body "
                                                 "was cut off or badly framed",
                              "request_timeout": "no part of the body arrived for 30 s",
                              "too_large": f"over {max_file_bytes} bytes (checked on Content-Length first)",
                              "unknown_region": "`to` is not another region with a key in trust.encryption_keys",
                              **unauthenticated, **state, **platform_only,
                              "overloaded": "the gateway holds as many request bytes in flight as it may",
                              "broker_unavailable": "the broker did not acknowledge the file; send it again",
                              **identity})},
        }},
        "/v1/files/{id}": {"get": {
            "operationId": "getFile", "summary": "Download a received file, streamed",
            "description": "for a platform that received a message whose claim check names the file, once the file "
                           "arrived whole and its digest matched; `Yrdx-File-Digest` says `<alg>=<hex>`",
            "security": jwt,
            "parameters": [{"name": "id", "in": "path", "required": True, "description": "file id",
                            "schema": {"type": "string", "minLength": 1}}],
            "responses": {"200": {"description": "the file's bytes, with its media type",
                                  "headers": {"Yrdx-File-Digest": {"description": "`SHA-256=<hex>` or `SM3=<hex>`",
                                                                   "schema": {"type": "string"}}},
                                  "content": ANY_FILE},
                          **problem_responses({**unauthenticated, **state, **platform_only,
                                               "not_found": "no complete file with this id was delivered to you"})},
        }},
        "/healthz": {"get": {
            "operationId": "healthz", "summary": "Liveness", "security": [],
            "responses": {"200": _json(_ref("schemas", "Health"), "the process answers")},
        }},
        "/readyz": {"get": {
            "operationId": "readyz", "summary": "Readiness", "security": [],
            "description": "every check reads state the gateway keeps current: the probe never waits on the network",
            "responses": {"200": _json(_ref("schemas", "Readiness"), "ready"),
                          "503": _json(_ref("schemas", "Readiness"), "not ready: `failing` names each check")},
        }},
        "/metrics": {"get": {
            "operationId": "metrics", "summary": "Prometheus metrics (README \"Metrics\")",
            "security": [{"operatorToken": []}],
            "responses": {"200": {"description": "Prometheus text exposition format",
                                  "content": {METRICS_MEDIA_TYPE: {"schema": {"type": "string"}}}},
                          **problem_responses({"unauthenticated": "not the operator's bearer token"})},
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document", "security": [],
            "responses": {"200": _json({"type": "object"}, "the OpenAPI 3.1 document")},
        }},
    }
    errors_table = "\n".join(f"| {HTTP_STATUS[c]} | `{c}` | {TITLES[c]} |" for c in sorted(
        HTTP_STATUS, key=lambda c: (HTTP_STATUS[c], c)))
    return {
        "openapi": OPENAPI_VERSION,
        "jsonSchemaDialect": JSON_SCHEMA_DIALECT,
        "info": {
            "title": f"yrdx gateway {region} ({NAMES[region]})",
            "version": "1",
            "summary": "Relays signed, schema-checked messages between the regional platforms over Apache Kafka",
            "description": (
                "Errors are RFC 9457 `application/problem+json` with a stable `code`:\n\n"
                "| status | code | title |\n|---|---|---|\n" + errors_table + "\n\n"
                "Every route also answers: " + "; ".join(f"`{c}` ({HTTP_STATUS[c]}): {w}"
                                                          for c, w in CROSS_CUTTING.items())
                + ". Every GET route answers HEAD too. A platform JWT is single use (`jti`): mint one per request."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/", "description": f"this gateway ({region})"}],
        "paths": paths,
        "components": {
            "schemas": _schemas(limits, sorted(message_types)),
            "parameters": _parameters(),
            "responses": {
                "NotFound": {"description": CROSS_CUTTING["not_found"],
                             "content": {PROBLEM_MEDIA_TYPE: {"schema": problem_schema_for(["not_found"])}}},
                "MethodNotAllowed": {
                    "description": CROSS_CUTTING["method_not_allowed"],
                    "headers": {"Allow": {"description": "the methods the route takes", "schema": {"type": "string"}}},
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": problem_schema_for(["method_not_allowed"])}}},
                "MalformedRequest": {"description": CROSS_CUTTING["invalid_request"],
                                     "content": {PROBLEM_MEDIA_TYPE: {
                                         "schema": problem_schema_for(["invalid_request"])}}},
            },
            "securitySchemes": {
                "platformJwt": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": f"RFC 7523 style ES256 JWT signed by the platform's own key: `iss` the platform "
                                   f"id, `aud` `urn:yrdx:gateway:{region}`, `exp` at most "
                                   f"{limits.jwt_max_lifetime_s} s after `iat`, `jti` single use, `scope` a string "
                                   f"(`{AUDIT_SCOPE}` for the audit route); or an access token that "
                                   "`POST /v1/token` issued for such a JWT (`yat1.`..., reused until it expires)",
                },
                "operatorToken": {"type": "http", "scheme": "bearer",
                                  "description": "the operator's static token (`metrics.bearer_token_file`)"},
            },
        },
    }
