"""The monitoring HTTP server (aiohttp, inside the proxy process).

Owns the routes, pagination and error bodies, bearer-token checking, and the
``MonitoringServer`` lifecycle. Every handler reads ``cache.snapshot`` once and
answers from it: no handler touches proxy objects, takes a lock or awaits
anything but the response write. Lists are pre-serialized per item in the
snapshot, so a page is one ``b",".join`` of at most 100 items.

Paths and field names are those of the stratum-apps reference monitoring
(anchors 2.1/2.2). Differences, each deliberate:

* ``/api/v1/health`` and its alias ``/health`` answer 503 with a ``reason``
  when the upstream channel is not open, the share log is not keeping up, or
  the snapshot is stale (the reference always answers 200).
* Bad query or path values are 400 with a JSON ``ErrorResponse`` naming the
  ``parameter`` (the reference gives axum's plain-text 400). Unknown paths and
  methods get JSON bodies too.
* Admission control (``RateLimits``, ``monitoring.limits``): every response
  is charged to a token bucket before it is sent, so a flood is slowed to a
  fixed rate, or refused with 429 and ``Retry-After``, instead of taking the
  event loop from the share path. Health probes have their own bucket. The
  token is checked first: a request without the right token is answered 401
  from a small bucket of its own (429 when empty), so an unauthenticated
  flood cannot spend the budget of clients that have the token.
* GET only: a request that carries a body gets 413 and its connection is
  closed without reading the body. Connection-level limits (cap, header,
  idle and send timeouts, request-line size) are ``monitoring.connections``.
* Worker names are any text (``monitoring.text``): ``/api/v1/workers/{name}``
  takes the rest of the path, percent-decoded, newlines and '/' included.
* ``/metrics`` is served gzip-compressed when the client accepts it (the
  compressed body is prepared once per snapshot).
* Optional bearer token. When configured, every path needs it except
  ``/health`` and ``/api/v1/health``: load-balancer and container probes
  usually cannot send headers, and the health body carries no addresses,
  names or counts. ``/metrics`` needs the token (Prometheus sends it with
  ``authorization: {credentials: ...}``), and so do the JSON index at ``/``
  and the OpenAPI document. The pages for people (the dashboard at ``/`` for
  browsers, its assets, the Swagger UI) are open too: they hold no data, and
  a browser cannot send a header on navigation; their scripts ask for the
  token once and send it with every fetch (see ``monitoring.ui``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from monitoring.connections import (
    DEFAULT_CONNECTION_LIMITS,
    ConnectionGate,
    ConnectionLimits,
    mark_requests,
)
from monitoring.limits import CostLimiter, response_cost
from monitoring.logs import log_limited
from monitoring.openapi import API_TITLE, API_VERSION, DEFAULT_LIMIT, MAX_LIMIT, openapi_document
from monitoring.snapshot import Snapshot, SnapshotCache, dumps
from monitoring.ui import add_ui_routes, dashboard_page, is_public_page, wants_html

log = logging.getLogger("monitoring.api")

OPEN_PATHS = frozenset({"/health", "/api/v1/health"})
NAME_PATTERN = r"{name:[\s\S]+}"  # the route pattern of /api/v1/workers/{name}
_JSON = "application/json"
_MAX_PARAM = 2**64 - 1  # the reference parses these as usize; larger is a 400 there too


class BadParameter(Exception):
    """A query or path parameter that does not parse; answered 400."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


def _error(status: int, message: str, *, parameter: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return web.Response(body=dumps(body), status=status, content_type=_JSON, headers=headers)


def _ok(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=_JSON)


def _nonneg_int(parameter: str, raw: str | None, default: int) -> int:
    if raw is None:
        return default
    if not raw or len(raw) > 20 or not raw.isascii() or not raw.isdigit() or int(raw) > _MAX_PARAM:
        raise BadParameter(
            parameter,
            f"invalid value for parameter '{parameter}': expected an integer from 0 to {_MAX_PARAM}, got {raw!r:.40}",
        )
    return int(raw)


def parse_page(query: Any) -> tuple[int, int]:
    """(offset, effective limit) from a query mapping, as the reference does:
    offset default 0, limit default 25, limit above 100 clamped to 100."""
    offset = _nonneg_int("offset", query.get("offset"), 0)
    limit = _nonneg_int("limit", query.get("limit"), DEFAULT_LIMIT)
    return offset, min(limit, MAX_LIMIT)


def accepts_gzip(accept_encoding: str) -> bool:
    """True when an Accept-Encoding header allows gzip (q=0 forbids it)."""
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().lower()
            return not (q.startswith("q=") and _is_zero(q[2:]))
    return False


def _is_zero(q: str) -> bool:
    try:
        return float(q) == 0.0
    except ValueError:
        return False


def _page(items: Sequence[bytes], offset: int, limit: int) -> bytes:
    return b"[" + b",".join(items[offset : offset + limit]) + b"]"


class _Handlers:
    def __init__(self, cache: SnapshotCache, gate: ConnectionGate | None) -> None:
        self._cache = cache
        self._gate = gate
        doc = openapi_document()
        self._openapi = dumps(doc)
        endpoints = {path: next(iter(ops.values()))["summary"] for path, ops in doc["paths"].items()}
        self._index = dumps({"service": API_TITLE, "version": API_VERSION, "endpoints": endpoints})
        self.paths = list(doc["paths"])

    def _data(self) -> Snapshot:
        snap = self._cache.snapshot
        if not snap.seq:
            raise web.HTTPServiceUnavailable(reason="no monitoring snapshot yet")
        return snap

    async def index(self, request: web.Request) -> web.Response:
        # Browsers ask for text/html and get the dashboard; API clients (curl,
        # scripts: Accept */* or application/json) keep the JSON index.
        if wants_html(request.headers.get("Accept", "")):
            return dashboard_page()
        resp = _ok(self._index)
        resp.headers["Vary"] = "Accept"
        return resp

    async def openapi(self, request: web.Request) -> web.Response:
        return _ok(self._openapi)

    async def health(self, request: web.Request) -> web.Response:
        cache = self._cache
        snap = cache.snapshot
        ok, reasons, age = cache.health_now(snap)
        sl = snap.health.share_log_ok
        body = {
            "status": "ok" if ok else "unavailable",
            "timestamp": int(cache.now()),
            "reason": None if ok else "; ".join(reasons),
            "reasons": list(reasons),
            "upstream_connected": snap.upstream.connected,
            "upstream_channel_open": snap.upstream.channel_open,
            "share_log": "disabled" if sl is None else ("ok" if sl else "behind"),
            "snapshot_age_s": age if snap.seq else None,
        }
        return _ok(dumps(body), 200 if ok else 503)

    async def global_(self, request: web.Request) -> web.Response:
        snap = self._data()
        body = dict(snap.global_info)
        body["uptime_secs"] = int(self._cache.uptime())
        return _ok(dumps(body))

    async def server(self, request: web.Request) -> web.Response:
        return _ok(dumps(dict(self._data().server)))

    async def server_channels(self, request: web.Request) -> web.Response:
        offset, limit = parse_page(request.query)
        snap = self._data()
        body = b'{"offset":%d,"limit":%d,"total_extended":%d,"total_standard":0,"extended_channels":%b,"standard_channels":[]}' % (
            offset,
            limit,
            len(snap.channels),
            _page(snap.channels, offset, limit),
        )
        return _ok(body)

    async def sv1_clients(self, request: web.Request) -> web.Response:
        offset, limit = parse_page(request.query)
        snap = self._data()
        items = snap.sv1_clients
        body = b'{"offset":%d,"limit":%d,"total":%d,"items":%b}' % (offset, limit, len(items), _page(items, offset, limit))
        return _ok(body)

    async def sv1_client(self, request: web.Request) -> web.Response:
        raw = request.match_info["client_id"]
        client_id = _nonneg_int("client_id", raw, 0)
        snap = self._data()
        body = snap.sv1_by_id.get(client_id)
        if body is None:
            return _error(404, f"Sv1 client {client_id} not found")
        return _ok(body)

    async def workers(self, request: web.Request) -> web.Response:
        offset, limit = parse_page(request.query)
        snap = self._data()
        items = snap.workers
        body = b'{"offset":%d,"limit":%d,"total":%d,"stats_updated_at":%b,"items":%b}' % (
            offset,
            limit,
            len(items),
            dumps(snap.worker_stats_at),
            _page(items, offset, limit),
        )
        return _ok(body)

    async def worker(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        snap = self._data()
        body = snap.workers_by_name.get(name)
        if body is None:
            # The name comes from the URL: echo a bounded prefix of it.
            shown = json.dumps(name[:100]) + ("..." if len(name) > 100 else "")
            return _error(404, f"worker {shown} not found")
        return _ok(body)

    async def events(self, request: web.Request) -> web.Response:
        offset, limit = parse_page(request.query)
        q = request.query
        since: float | None = None
        if q.get("since") is not None:
            try:
                since = float(q["since"])
            except ValueError:
                since = -1.0
            if not (since >= 0 and since < 1e11):
                raise BadParameter("since", "since must be a unix time in seconds")
        try:
            total, items = await self._cache.events(
                worker=q.get("worker"), event_type=q.get("type"), since=since, offset=offset, limit=limit
            )
        except Exception as e:  # the database is down or slow: the events live only there
            log_limited(log, logging.WARNING, ("events", type(e).__name__), "events unavailable: %.200s", e)
            return _error(503, "events unavailable: the share log's database cannot be queried now")
        body = {"offset": offset, "limit": limit, "total": total,
                "items": [dataclasses.asdict(x) for x in items]}
        return _ok(dumps(body))

    async def history(self, request: web.Request) -> web.Response:
        return _ok(self._data().history)

    async def metrics(self, request: web.Request) -> web.Response:
        snap = self._data()
        renderer = self._cache.renderer
        tail = renderer.uptime_block(self._cache.uptime())
        if self._gate is not None:
            g = self._gate
            tail += renderer.connections_block(g.open, g.refused, g.timed_out, g.evicted)
        headers = {"Content-Type": renderer.content_type, "Vary": "Accept-Encoding"}
        if accepts_gzip(request.headers.get("Accept-Encoding", "")):
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=snap.metrics.gzip_with(tail), headers=headers)
        return web.Response(body=snap.metrics.plain_with(tail), headers=headers)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadParameter as e:
        return _error(400, e.message, parameter=e.parameter)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return _error(e.status, e.reason, headers=headers or None)
    except Exception as e:
        key = ("request failed", type(e).__name__)  # not the path: it is the client's text
        log_limited(log, logging.ERROR, key, "monitoring request %s %.200r failed", request.method, request.path, exc_info=e)
        return _error(500, "internal error")


def _authorized(request: web.Request, expected: bytes) -> bool:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    # aiohttp decodes header bytes with surrogateescape: encode them back the same way.
    given = value.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(given, expected)


def _unauthorized(bucket: CostLimiter | None) -> web.Response:
    """401, or 429 when the unauthenticated bucket is empty (it never waits)."""
    if bucket is not None and bucket.reserve(1.0) is None:
        return _error(429, "too many unauthenticated requests", headers={"Retry-After": str(bucket.retry_after())})
    return _error(401, "missing or invalid bearer token", headers={"WWW-Authenticate": 'Bearer realm="tproxy-monitoring"'})


async def _charged(limiter: CostLimiter | None, resp: web.StreamResponse) -> web.StreamResponse:
    """``resp`` once its bucket covers it, or 429 (see monitoring.limits)."""
    if limiter is None:
        return resp
    if await limiter.acquire(response_cost(resp.content_length or 0)):
        return resp
    return _error(429, "too many monitoring requests; slow down", headers={"Retry-After": str(limiter.retry_after())})


def _admission(token: str | None, limits: RateLimits | None) -> Any:
    """Authentication first, then the rate limit of the request's class.

    Health paths use the health bucket and need no token. Every other request
    with the right token (or any request when no token is configured) uses
    the API bucket. A request without the right token is answered 401 at
    once from its own small bucket (429 when that is empty): an
    unauthenticated flood can never spend the API budget of Prometheus and
    the dashboards. A request that carries a body gets 413 (GET-only API).
    """
    expected = token.encode() if token is not None else None
    api = health = unauth = None
    if limits is not None:
        api = CostLimiter(limits.api_rate, limits.api_burst, max_wait_s=limits.max_wait_s)
        health = CostLimiter(limits.health_rate, limits.health_burst, max_wait_s=limits.max_wait_s)
        unauth = CostLimiter(limits.unauth_rate, limits.unauth_burst, max_wait_s=0.0)

    @web.middleware
    async def admit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public_page(request):
            # Static pages and assets hold no data: no token, and a count-based charge to
            # the unauthenticated bucket, so a flood of page loads cannot spend the API's.
            if unauth is not None and unauth.reserve(1.0) is None:
                return _unauthorized(unauth)
            return await handler(request)
        if request.path in OPEN_PATHS:
            limiter = health
        elif expected is None or _authorized(request, expected):
            limiter = api
        else:
            return _unauthorized(unauth)
        if request.body_exists:
            resp: web.StreamResponse = _error(413, "request bodies are not accepted (the API is GET-only)")
            resp.force_close()
        else:
            resp = await handler(request)
        return await _charged(limiter, resp)

    return admit


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Admission control (units: 1 per response + 1 per 64 KiB sent; see monitoring.limits).

    The defaults let Prometheus, a few dashboards and probes through without
    ever waiting, and hold a flood to about 100 units/s (for example three
    uncompressed 10,000-miner /metrics bodies plus 60 pages a second).
    """

    api_rate: float = 100.0
    api_burst: float = 50.0
    health_rate: float = 50.0
    health_burst: float = 50.0
    max_wait_s: float = 2.0
    unauth_rate: float = 5.0  # requests/s answered 401 when a token is configured
    unauth_burst: float = 20.0


def create_app(
    cache: SnapshotCache,
    *,
    token: str | None = None,
    limits: RateLimits | None = RateLimits(),
    gate: ConnectionGate | None = None,
) -> web.Application:
    """The monitoring application.

    ``token``: bearer token required on every path but health (see module doc).
    ``limits``: admission control; None disables it (tests, benchmarks).
    ``gate``: the connection gate in front of the app, whose counters /metrics shows.
    """
    if token is not None and not token.strip():
        raise ValueError("monitoring token must not be empty (omit it to disable authentication)")
    # Outermost first: the connection gate's request marker, admission, JSON errors.
    middlewares = [mark_requests, _admission(token.strip() if token is not None else None, limits), _json_errors]
    app = web.Application(middlewares=middlewares)
    h = _Handlers(cache, gate)
    routes = {
        "/": h.index,
        "/health": h.health,
        "/api/v1/health": h.health,
        "/api/v1/global": h.global_,
        "/api/v1/server": h.server,
        "/api/v1/server/channels": h.server_channels,
        "/api/v1/sv1/clients": h.sv1_clients,
        "/api/v1/sv1/clients/{client_id}": h.sv1_client,
        "/api/v1/workers": h.workers,
        "/api/v1/workers/{name}": h.worker,
        "/api/v1/history": h.history,
        "/api/v1/events": h.events,
        "/metrics": h.metrics,
        "/api-docs/openapi.json": h.openapi,
    }
    assert set(routes) == set(h.paths), "routes and the OpenAPI document disagree"
    for path, fn in routes.items():
        # A worker name may hold any character, '/' and newline included (monitoring.text),
        # so the name takes the rest of the path; [\s\S] because '.' stops at a newline.
        app.router.add_get(path.replace("{name}", NAME_PATTERN), fn)
    add_ui_routes(app)  # after the API routes: /api-docs/openapi.json is matched first
    return app


class MonitoringServer:
    """Runs ``create_app`` on ``host:port`` (127.0.0.1 by default) behind a ``ConnectionGate``."""

    def __init__(
        self,
        cache: SnapshotCache,
        *,
        host: str = "127.0.0.1",
        port: int = 9092,
        token: str | None = None,
        limits: RateLimits | None = RateLimits(),
        connections: ConnectionLimits = DEFAULT_CONNECTION_LIMITS,
    ) -> None:
        self.gate = ConnectionGate(connections)
        self._app = create_app(cache, token=token, limits=limits, gate=self.gate)
        self.host = host
        self._port = port
        self.connection_limits = connections
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._server is not None:
            for sock in self._server.sockets:
                return int(sock.getsockname()[1])
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("MonitoringServer already started")
        limits = self.connection_limits
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=1.0, **limits.runner_kwargs()
        )
        await runner.setup()
        try:
            # Our own listener instead of web.TCPSite: every connection goes through the gate.
            self.gate.make_handler = runner.server
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(self.gate, self.host, self._port, backlog=128)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("monitoring API listening on %s", self.url)

    async def close(self) -> None:
        server, self._server = self._server, None
        runner, self._runner = self._runner, None
        if server is not None:
            server.close()  # stop accepting; the runner closes the open connections
        if runner is not None:
            await runner.cleanup()
        if server is not None:
            await server.wait_closed()
