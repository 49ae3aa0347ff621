"""Command line entry point: ``tproxy run | keygen | import-sri`` plus plugin commands.

Owns argument parsing, logging set-up, and turning configuration errors into
one readable line and exit code 2 (never a traceback).

Commands other than ``run`` and ``keygen`` come from installed plugins: every
entry point of the ``tproxy.commands`` group names an object following
``Command`` (the development tools of ``devnet`` register ``pool``, ``demo``
and ``miner`` this way). The product never imports a plugin's package by name,
so an image built without it simply has fewer commands.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol

from tproxy.errors import ConfigError

COMMAND_GROUP = "tproxy.commands"
BUILTIN_COMMANDS = ("run", "keygen", "import-sri")


class Command(Protocol):
    """What a ``tproxy.commands`` entry point provides: one subcommand."""

    help: str  # one line, shown by ``tproxy --help``
    log_level: str  # logging level when ``--log-level`` is not given

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int:
        """Run the command; may raise ConfigError (reported as one line, exit 2)."""
        ...


def load_command(ep: EntryPoint) -> Command | None:
    """The entry point's command, or None (with one stderr line unless its package is simply absent)."""
    try:
        command: Command = ep.load()
    except ModuleNotFoundError as e:
        # The distribution declares the command but ships without its package
        # (the production image leaves out ``devnet``): not an error.
        if e.name == ep.module.split(".")[0]:
            return None
        print(f"tproxy: command {ep.name!r} unavailable: {e}", file=sys.stderr)
        return None
    except Exception as e:
        # A broken plugin must not take ``tproxy run`` down with it.
        print(f"tproxy: command {ep.name!r} unavailable: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    return command


def plugin_commands() -> dict[str, Command]:
    """The installed ``tproxy.commands`` plugins by name (built-in names cannot be taken)."""
    found: dict[str, Command] = {}
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        if ep.name in BUILTIN_COMMANDS or ep.name in found:
            continue
        command = load_command(ep)
        if command is not None:
            found[ep.name] = command
    return found


def build_parser(plugins: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tproxy", description="Stratum V2 translator proxy (SV1 miners -> SV2 pool)")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the proxy")
    run.add_argument("--config", "-c", help="TOML config file (every key can be overridden as TPROXY__SECTION__KEY)")

    sub.add_parser("keygen", help="print a new authority key pair")
    for name, command in (plugin_commands() if plugins is None else plugins).items():
        command.add_arguments(sub.add_parser(name, help=command.help))

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


def main(argv: list[str] | None = None) -> int:
    plugins = plugin_commands()
    parser = build_parser(plugins)
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            return cmd_keygen()
        if args.command == "run":
            return cmd_run(args)
        if args.command == "import-sri":
            from tproxy.sri_import import run as import_sri

            return import_sri(args.file, args.output)
        command = plugins.get(args.command or "")
        if command is not None:
            _logging(args.log_level or command.log_level)
            return command.run(args)
    except ConfigError as e:
        print(f"tproxy: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
