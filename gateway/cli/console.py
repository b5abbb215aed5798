"""`yrdx console`: the operators' web dashboard of an exchange (gateway.console), until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from gateway.cli.common import error


def cmd_console(args: argparse.Namespace) -> int:
    from gateway import logs
    from gateway.audit.index import IndexUnavailable
    from gateway.console.app import make_console, serve_console
    from gateway.console.exchange import ExchangeError, load_exchange, parse_gateway_url
    from gateway.console.trail import default_index_target

    if args.interval <= 0 or args.window < args.interval:
        error("--interval must be positive and --window at least one interval")
        return 2
    try:
        urls = dict(parse_gateway_url(g) for g in args.gateway or ())
        exchange = load_exchange(Path(args.dir), urls)
    except (ExchangeError, ValueError) as e:
        error(str(e))
        return 2
    logs.setup("yrdx-console", args.log_level)
    console = make_console(exchange, args.index or default_index_target(exchange.dir),
                           interval_s=args.interval, window_s=args.window, secure_cookies=args.secure_cookies)
    ready_file = Path(args.ready_file) if args.ready_file else None

    def ready(url: str, port: int) -> None:
        if ready_file is not None:
            ready_file.write_text(str(port))
        print(f"yrdx console: {url} (regions {' '.join(exchange.regions)}; sign in with the operator token of "
              f"{exchange.token_file})", flush=True)

    try:
        asyncio.run(serve_console(console, args.host, args.port, ready))
    except IndexUnavailable as e:
        error(str(e))
        return 2
    except OSError as e:  # the address is taken, or not ours to bind
        error(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
        return 2
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("console", help="web dashboard of an exchange: live figures, dead letters, journeys")
    p.add_argument("--dir", required=True, help="the exchange folder (`yrdx init --dir`): configs and secrets/")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: any free one, printed)")
    p.add_argument("--ready-file", help="write the bound port here once serving")
    p.add_argument("--gateway", action="append", metavar="REGION=URL",
                   help="where a region's gateway listens, when its config does not say (listen.port 0); repeatable")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes of the gateways")
    p.add_argument("--window", type=float, default=10.0, help="seconds the rates are computed over")
    p.add_argument("--index", help="audit index (SQLite path or postgresql:// DSN; default var/console/ of the "
                                   "exchange)")
    p.add_argument("--secure-cookies", action="store_true",
                   help="mark the session cookie Secure (when a TLS-terminating proxy serves the console)")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_console)
