"""`yrdx serve`: run one region's gateway until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from gateway.cli.common import error, load_config_or_error


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import logs
    from gateway.runtime import StartupError, serve

    cfg = load_config_or_error(args.config)
    if cfg is None:
        return 2
    logs.setup(f"yrdx-gateway-{cfg.region.lower()}", args.log_level)
    try:
        asyncio.run(serve(cfg, Path(args.ready_file) if args.ready_file else None))
    except StartupError as e:
        error(str(e))
        return 2
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subparsers.add_parser("serve", help="run one region's gateway")
    serve.add_argument("--config", required=True)
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument("--ready-file", help="write the bound port here once serving (used by tests)")
    serve.set_defaults(func=cmd_serve)
