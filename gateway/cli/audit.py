"""`yrdx audit ...`: the auditors' commands. Each command lives in the module that does its work and registers
itself here, so `cli.py` only knows this one entry point."""

from __future__ import annotations

import argparse


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = subparsers.add_parser("audit", help="index, trace, verify and export the audit trail")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    from gateway.audit.index import add_cli as add_index_cli
    from gateway.audit.verify import add_cli as add_verify_cli

    add_index_cli(sub)    # index, trace
    add_verify_cli(sub)   # verify, export, prove
