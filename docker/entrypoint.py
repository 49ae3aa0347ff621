"""Container entry point of the tproxy image (Dockerfile ENTRYPOINT).

Owns the image's start-up checks. ``run`` (the default command) loads the
configuration exactly as ``tproxy run`` will (``$TPROXY_CONFIG`` plus the
``TPROXY__*`` environment) and refuses to start, with one line on stderr and
exit code 2, when it cannot work in this image: a bad config, or a share log
URL ``chdb://`` (the default) while the image carries no embedded ClickHouse.
Without this check the proxy would start, spool every share to disk and
report healthy until ``monitoring.max_db_down_s`` ran out. When the checks
pass the process is replaced by ``tproxy run`` (exec: it stays PID 1 and gets
the container's SIGTERM). Any other command is handed to ``tproxy`` as is
(``docker run IMAGE keygen``, ``docker run IMAGE import-sri /cfg/sri.toml``).
"""

from __future__ import annotations

import os
import sys

DEFAULT_CONFIG = "/etc/tproxy/tproxy.toml"


def _chdb_importable() -> bool:
    try:
        import chdb  # noqa: F401  (the import itself is the check)
    except ImportError:
        return False
    return True


def preflight(config: str) -> str | None:
    """The one-line reason this container cannot run the proxy, or None."""
    from tproxy.config import load_settings
    from tproxy.errors import ConfigError

    try:
        settings = load_settings(config)
    except ConfigError as e:
        return f"tproxy: configuration error: {e}"
    ch = settings.clickhouse
    if ch.is_embedded and not _chdb_importable():
        return (
            f"tproxy: the share log URL is {ch.url} but this image has no embedded ClickHouse (chdb); "
            "set TPROXY__CLICKHOUSE__URL=http(s)://user:password@host:8123/database"
        )
    return None


def main(argv: list[str]) -> int:
    command = argv or ["run"]
    if command[0] != "run":
        os.execvp("tproxy", ["tproxy", *command])
    config = os.environ.get("TPROXY_CONFIG", DEFAULT_CONFIG)
    problem = preflight(config)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    os.execvp("tproxy", ["tproxy", "run", "--config", config, *command[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
