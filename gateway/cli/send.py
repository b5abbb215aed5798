"""`yrdx send`: send one message through a gateway's HTTP API as one of its platforms; prints the message id.
With `--wait`, a request type goes through POST /v1/requests: it prints the reply and exits 1 with the problem on
stderr when none came in time (reply_timeout) or the request was refused."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from gateway.cli.common import error
from gateway.cli.token import caller, minter


def cmd_send(args: argparse.Namespace) -> int:
    found = caller(args, platforms_only=True)
    if found is None:
        return 2
    cfg, key, _ = found
    try:
        payload = json.loads(Path(args.payload).read_text(encoding="utf-8"))
    except OSError as e:
        error(f"cannot read the payload file {args.payload}: {e.strerror}")
        return 2
    except ValueError as e:  # not UTF-8, or not JSON
        error(f"the payload file {args.payload} is not JSON: {e}")
        return 2
    token_minter = minter(args, cfg, key)
    if token_minter is None:
        return 2
    body = {"type": args.type, "to": args.to, "payload": payload}
    if args.correlation_id:
        body["correlation_id"] = args.correlation_id
    if bool(args.operator) != bool(args.operator_role) or (args.operator_department and not args.operator):
        error("--operator and --operator-role go together (--operator-department with them)")
        return 2
    if args.operator:  # the gateway checks the codes and answers invalid_request for a malformed one
        body["operator"] = {"id": args.operator, "role": args.operator_role,
                            **({"department": args.operator_department} if args.operator_department else {})}
    if args.use_cause:
        body["use_cause"] = args.use_cause
    if args.deadline_ms is not None:
        if not args.wait:
            error("--deadline-ms goes with --wait")
            return 2
        body["deadline_ms"] = args.deadline_ms
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host  # noqa: S104 (mapping a wildcard bind)
    url = f"http://{host}:{cfg.port}/v1/{'requests' if args.wait else 'messages'}"
    req = urllib.request.Request(  # noqa: S310 (the URL is built from our own config)
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", **token_minter.header()},
    )
    try:
        # A held request waits at most its type's limit (600 s at the very most, gateway/schemas/xreply.py).
        with urllib.request.urlopen(req, timeout=630 if args.wait else 30) as resp:  # noqa: S310
            answer = json.loads(resp.read())
            print(json.dumps(answer, ensure_ascii=False, indent=2) if args.wait else answer["id"])
            return 0
    except urllib.error.HTTPError as e:
        print(e.read().decode(), file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:  # refused, timed out: the gateway is not there
        error(f"cannot reach the gateway at {url}: {getattr(e, 'reason', e)}")
        return 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = subparsers.add_parser("send", help="send one message through a gateway; prints its id")
    send.add_argument("--config", required=True)
    send.add_argument("--as", dest="as_", required=True)
    send.add_argument("--to", required=True)
    send.add_argument("--type", required=True)
    send.add_argument("--payload", required=True, help="JSON file with the payload")
    send.add_argument("--correlation-id")
    # The use context, required on the types that read personal data or licences (their schemas' x-use-causes).
    send.add_argument("--operator", help="who asks: the operator's id code (never a name)")
    send.add_argument("--operator-role", help="with --operator: the operator's role code")
    send.add_argument("--operator-department", help="with --operator: the operator's department code")
    send.add_argument("--use-cause", help="the purpose code (one the type's schema or the region allows)")
    send.add_argument("--key")
    send.add_argument("--wait", action="store_true",
                      help="a request type: wait for its reply (POST /v1/requests) and print it")
    send.add_argument("--deadline-ms", type=int, help="with --wait: how long to wait (default: the type's)")
    send.set_defaults(func=cmd_send)
