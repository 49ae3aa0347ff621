"""The ``tproxy pool | demo | miner`` commands, as ``tproxy.commands`` plugins.

Owns the arguments and the start-up of the development tools. Each
module-level ``*_command`` object follows ``tproxy.cli.Command``;
pyproject.toml declares them as entry points and ``tproxy.cli`` finds them
there (the product never imports this module by name). The heavy modules
(pool, demo, proxy runtime) are imported only when their command runs, so
``tproxy --help`` and ``tproxy run`` stay cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from devnet.miner import DIALECTS, SyntheticMiner
from tproxy.errors import ConfigError

if TYPE_CHECKING:
    from tproxy.cli import Command


class PoolCommand:
    help = "run the dev SV2 pool"
    log_level = "info"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", "-c", help="TOML pool config (env TPROXY_POOL__KEY)")

    def run(self, args: argparse.Namespace) -> int:
        from devnet.pool import load_pool_settings, run_pool

        settings = load_pool_settings(args.config)
        asyncio.run(run_pool(settings))
        return 0


class DemoCommand:
    help = "dev pool + proxy + synthetic miners in one process, with a live table"
    log_level = "warning"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--miners", type=int, default=4)
        parser.add_argument("--duration", type=float, default=30.0, help="seconds")
        parser.add_argument("--non-aggregated", action="store_true", help="one upstream channel per miner")
        parser.add_argument("--data-dir", default=None, help="where the embedded ClickHouse and spool live (default: a temp dir)")
        parser.add_argument("--monitoring-port", type=int, default=0, help="0 = pick a free port")

    def run(self, args: argparse.Namespace) -> int:
        from devnet.demo import run_demo

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


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` (also ``[v6]:port`` and a ``stratum+tcp://`` prefix, as miners write it)."""
    rest = text.removeprefix("stratum+tcp://")
    host, sep, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"endpoint {text!r}: expected host:port")
    return host, int(port)


def _status(miner: SyntheticMiner, elapsed: float) -> str:
    rate = miner.hashes / elapsed if elapsed > 0 else 0.0
    state = "mining" if miner.ready.is_set() else "waiting for work"
    line = (
        f"t={elapsed:6.1f}s  accepted={miner.accepted}  rejected={miner.rejected}  "
        f"submitted={miner.submitted}  difficulty={miner.difficulty:.3g}  "
        f"hashrate={rate / 1e3:.1f} kH/s  {state}"
    )
    return line if miner.last_error is None else f"{line}  last error: {miner.last_error}"


async def _first_connect(miner: SyntheticMiner) -> bool:
    """Whether the miner's first connection attempt succeeded (it keeps reconnecting after that)."""
    try:
        await miner.wait_for(lambda m: m.connects > 0 or m.last_error is not None, miner.connect_timeout_s + 5.0)
    except TimeoutError:
        return False
    return miner.connects > 0


async def run_miner(miner: SyntheticMiner, *, duration: float | None, interval: float) -> int:
    """Mine until ``duration`` (or cancellation: Ctrl-C), a status line every ``interval`` seconds.

    Returns 2, after one line on stderr, when the endpoint cannot be reached.
    """
    miner.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        if not await _first_connect(miner):
            reason = miner.last_error or "timed out"
            print(f"tproxy miner: cannot connect to {miner.host}:{miner.port}: {reason}", file=sys.stderr)
            return 2
        print(f"mining on {miner.host}:{miner.port} as {miner.worker_name} ({miner.dialect})", flush=True)
        deadline = None if duration is None else started + duration
        while deadline is None or loop.time() < deadline:
            left = interval if deadline is None else deadline - loop.time()
            await asyncio.sleep(max(0.0, min(interval, left)))
            print(_status(miner, loop.time() - started), flush=True)
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this task, then exits 130
        print(_status(miner, loop.time() - started), flush=True)
        raise
    finally:
        await miner.close()
    return 0


class MinerCommand:
    help = "run a synthetic CPU miner against an SV1 endpoint (host:port)"
    log_level = "warning"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("endpoint", help="SV1 endpoint, host:port (e.g. 127.0.0.1:34255)")
        parser.add_argument("--worker", default="devnet.miner1", help="worker name for mining.authorize")
        parser.add_argument("--password", default="x")
        parser.add_argument("--dialect", choices=DIALECTS, default="cpuminer", help="firmware dialect to speak")
        parser.add_argument("--hashrate-limit", type=float, default=None, help="H/s cap (default: one core, flat out)")
        parser.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
        parser.add_argument("--interval", type=float, default=5.0, help="seconds between status lines")

    def run(self, args: argparse.Namespace) -> int:
        host, port = parse_endpoint(args.endpoint)
        if args.duration is not None and args.duration <= 0:
            raise ConfigError("--duration must be positive")
        if args.interval <= 0:
            raise ConfigError("--interval must be positive")
        if args.hashrate_limit is not None and args.hashrate_limit <= 0:
            raise ConfigError("--hashrate-limit must be positive")
        miner = SyntheticMiner(
            host, port, worker_name=args.worker, password=args.password,
            dialect=args.dialect, hashrate_limit=args.hashrate_limit,
        )
        return asyncio.run(run_miner(miner, duration=args.duration, interval=args.interval))


pool_command: Command = PoolCommand()
demo_command: Command = DemoCommand()
miner_command: Command = MinerCommand()
