"""Command line entry point: ``tproxy run | check-config | keygen | import-sri`` plus plugin commands.

Owns argument parsing, logging set-up, and turning configuration errors into
one readable line and exit code 2 (never a traceback): a bad or unknown key
in the file or the environment, an unreadable config file, an unusable spool
directory, a listener that cannot bind. Global flags (``--log-level``) are
accepted before or after the subcommand; ``--version`` prints the version; a
bare ``tproxy`` prints the usage and exits 2.

Commands other than ``run`` and ``keygen`` come from installed plugins: every
entry point of the ``tproxy.commands`` group names an object following
``Command`` (the development tools of ``devnet`` register ``pool``, ``demo``
and ``miner`` this way). The product never imports a plugin's package by name,
so an image built without it simply has fewer commands.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol

from tproxy.errors import ConfigError

COMMAND_GROUP = "tproxy.commands"
BUILTIN_COMMANDS = ("run", "check-config", "keygen", "import-sri")
LOG_LEVELS = ("debug", "info", "warning", "error")


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


def _global_flags() -> argparse.ArgumentParser:
    """Flags valid before and after the subcommand.

    SUPPRESS as default: a subcommand's parser that does not see the flag
    leaves the value given before the subcommand alone.
    """
    from tproxy.startup import tproxy_version

    g = argparse.ArgumentParser(add_help=False)
    g.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS, help="overrides log_level of the config")
    g.add_argument("--version", action="version", version=f"tproxy {tproxy_version()}")
    return g


def build_parser(plugins: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    common = _global_flags()
    p = argparse.ArgumentParser(
        prog="tproxy", description="Stratum V2 translator proxy (SV1 miners -> SV2 pool)", parents=[common]
    )
    sub = p.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the proxy", parents=[common])
    run.add_argument("--config", "-c", help="TOML config file (every key can be overridden as TPROXY__SECTION__KEY)")

    check = sub.add_parser(
        "check-config", help="print the effective configuration (secrets masked) or the error", parents=[common]
    )
    check.add_argument("file", nargs="?", default=None, help="TOML config file (default: environment only)")
    check.add_argument("--config", "-c", dest="config", default=None, help="the same, as tproxy run takes it")

    sub.add_parser("keygen", help="print a new authority key pair", parents=[common])
    for name, command in (plugins if plugins is not None else plugin_commands()).items():
        command.add_arguments(sub.add_parser(name, help=command.help, parents=[common]))

    sri = sub.add_parser(
        "import-sri", help="convert an SRI translator config (TOML) into a tproxy config", parents=[common]
    )
    sri.add_argument("file", help="the SRI translator_sv2 config file")
    sri.add_argument("-o", "--output", default=None, help="write the tproxy config here (default: stdout)")
    return p


def _log_level(args: argparse.Namespace, default: str) -> str:
    level: str | None = getattr(args, "log_level", None)
    return level or default


def _logging(level: str) -> None:
    from tproxy.startup import LOG_FORMAT

    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT, stream=sys.stderr)


def cmd_keygen() -> int:
    from sv2.keys import encode_public_key, encode_secret_key, generate_keypair

    secret, xonly = generate_keypair()
    print(f"authority_pubkey = \"{encode_public_key(xonly)}\"")
    print(f"authority_secret_key = \"{encode_secret_key(secret)}\"")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Print the effective configuration as TOML, every secret as ``***``."""
    from tproxy.config import load_settings, masked_dict, to_toml
    from tproxy.startup import check_spool_dir

    if args.file is not None and args.config is not None and args.file != args.config:
        raise ConfigError(f"two config files given: {args.file} and --config {args.config}")
    settings = load_settings(args.file if args.file is not None else args.config)
    check_spool_dir(settings.clickhouse)
    print(to_toml(masked_dict(settings)), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from tproxy.config import load_settings
    from tproxy.runtime import run
    from tproxy.startup import check_spool_dir, discard_logs, hold_logs, release_logs

    settings = load_settings(args.config)
    check_spool_dir(settings.clickhouse)
    # Held until the proxy has started: a start that fails on a configuration
    # error (a port in use) then prints the error line alone.
    hold_logs(_log_level(args, settings.log_level))
    try:
        run(settings)
    except ConfigError:
        discard_logs()
        raise
    except BaseException:
        release_logs()  # an unexpected failure: everything logged leads up to its traceback
        raise
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
        if args.command == "check-config":
            return cmd_check_config(args)
        command = plugins.get(args.command or "")
        if command is not None:
            _logging(_log_level(args, command.log_level))
            return command.run(args)
    except ConfigError as e:
        print(f"tproxy: configuration error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.print_usage(sys.stderr)
    print("tproxy: a command is required (tproxy --help lists them)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
