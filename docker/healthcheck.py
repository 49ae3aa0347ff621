"""Container health probe of the tproxy image (Dockerfile HEALTHCHECK).

Owns finding the monitoring port the proxy actually listens on and asking its
``/health``. The port and address follow the proxy's own precedence:
``TPROXY__MONITORING__PORT`` / ``TPROXY__MONITORING__ADDRESS``, else the
``[monitoring]`` table of ``$TPROXY_CONFIG``, else the defaults (9092). A
wildcard listen address is probed on loopback. It reads the TOML with the
standard library only, so a probe every 15 s costs a few milliseconds and no
pydantic import. ``/health`` needs no token. Exit 0 when it answers 200, else
1 with one line saying why (Docker keeps it in ``docker inspect``).
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
import urllib.error
import urllib.request
from typing import Any

DEFAULT_CONFIG = "/etc/tproxy/tproxy.toml"
DEFAULT_PORT = 9092
WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def _file_monitoring(config: str) -> dict[str, Any]:
    try:
        with open(config, "rb") as f:
            section = tomllib.load(f).get("monitoring", {})
    except (OSError, tomllib.TOMLDecodeError):
        return {}  # the proxy refuses such a config at start; the probe just uses defaults
    return section if isinstance(section, dict) else {}


def target() -> tuple[str, int, bool]:
    """(host, port, enabled) of the monitoring server, as the proxy resolves them."""
    file = _file_monitoring(os.environ.get("TPROXY_CONFIG", DEFAULT_CONFIG))
    env = os.environ
    port = int(env.get("TPROXY__MONITORING__PORT", file.get("port", DEFAULT_PORT)))
    address = str(env.get("TPROXY__MONITORING__ADDRESS", file.get("address", "127.0.0.1")))
    enabled_raw = env.get("TPROXY__MONITORING__ENABLED", file.get("enabled", False))
    enabled = enabled_raw if isinstance(enabled_raw, bool) else str(enabled_raw).strip().lower() in {"1", "true", "yes", "on"}
    host = "127.0.0.1" if address in WILDCARDS else address
    return (f"[{host}]" if ":" in host else host), port, enabled


def main() -> int:
    try:
        host, port, enabled = target()
    except ValueError as e:
        print(f"unhealthy: bad monitoring port: {e}")
        return 1
    if not enabled:
        print("unhealthy: monitoring is disabled, so there is no /health to probe")
        return 1
    url = f"http://{host}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except (OSError, ValueError) as e:
        print(f"unhealthy: {url}: {getattr(e, 'reason', e)}")
        return 1
    if status == 200:
        return 0
    try:
        reason = json.loads(body).get("reason")
    except (ValueError, AttributeError):
        reason = None
    print(f"unhealthy: {url} answered {status}" + (f": {reason}" if reason else ""))
    return 1


if __name__ == "__main__":
    sys.exit(main())
