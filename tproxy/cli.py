"""Command line entry point: ``tproxy run | demo | pool | keygen``."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tproxy", description="Stratum V2 translator proxy")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("keygen", help="print a new authority key pair")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
