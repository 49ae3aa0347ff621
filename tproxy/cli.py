"""Command line entry point: ``tproxy run | demo | pool | keygen | import-sri``.

Owns argument parsing, logging set-up, and turning configuration errors into
one readable line and exit code 2 (never a traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from tproxy.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tproxy", description="Stratum V2 translator proxy (SV1 miners -> SV2 pool)")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the proxy")
    run.add_argument("--config", "-c", help="TOML config file (every key can be overridden as TPROXY__SECTION__KEY)")

    demo = sub.add_parser("demo", help="dev pool + proxy + synthetic miners in one process, with a live table")
    demo.add_argument("--miners", type=int, default=4)
    demo.add_argument("--duration", type=float, default=30.0, help="seconds")
    demo.add_argument("--non-aggregated", action="store_true", help="one upstream channel per miner")
    demo.add_argument("--data-dir", default=None, help="where the embedded ClickHouse and spool live (default: a temp dir)")
    demo.add_argument("--monitoring-port", type=int, default=0, help="0 = pick a free port")

    pool = sub.add_parser("pool", help="run the dev SV2 pool")
    pool.add_argument("--config", "-c", help="TOML pool config (env TPROXY_POOL__KEY)")

    sub.add_parser("keygen", help="print a new authority key pair")

    sri = sub.add_parser("import-sri", help="convert an SRI translator config (TOML) into a tproxy config")
    sri.add_argument("file", help="the SRI translator_sv2 config file")
    sri.add_argument("-o", "--output", default=None, help="write the tproxy config here (default: stdout)")
    return p


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_keygen() -> int:
    from sv2.keys import encode_public_key, encode_secret_key, generate_keypair

    secret, xonly = generate_keypair()
    print(f"authority_pubkey = \"{encode_public_key(xonly)}\"")
    print(f"authority_secret_key = \"{encode_secret_key(secret)}\"")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from tproxy.config import load_settings
    from tproxy.runtime import run_until_signalled

    settings = load_settings(args.config)
    _logging(args.log_level or settings.log_level)
    asyncio.run(run_until_signalled(settings))
    return 0


def cmd_pool(args: argparse.Namespace) -> int:
    from tproxy.pool import load_pool_settings, run_pool

    settings = load_pool_settings(args.config)
    _logging(args.log_level or "info")
    asyncio.run(run_pool(settings))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tproxy.demo import run_demo

    _logging(args.log_level or "warning")
    if args.miners < 1:
        raise ConfigError("--miners must be at least 1")
    if args.duration <= 0:
        raise ConfigError("--duration must be positive")
    return asyncio.run(
        run_demo(
            miners=args.miners,
            duration=args.duration,
            aggregated=not args.non_aggregated,
            data_dir=args.data_dir,
            monitoring_port=args.monitoring_port,
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            return cmd_keygen()
        if args.command == "run":
            return cmd_run(args)
        if args.command == "pool":
            return cmd_pool(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "import-sri":
            from tproxy.sri_import import run as import_sri

            return import_sri(args.file, args.output)
    except ConfigError as e:
        print(f"tproxy: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
