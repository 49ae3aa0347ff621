"""The pages for people: the dashboard and the Swagger UI, served from package files.

Owns the static routes (``add_ui_routes``), the choice between the dashboard
and the JSON index at ``/`` (``wants_html``) and the rule that lets these
pages through without a bearer token (``is_public_page``).

* The dashboard (``/`` for browsers, assets under ``/dashboard/``) is plain
  HTML, one script and one stylesheet in ``monitoring/dashboard/``, shipped
  as package data; no framework, nothing fetched from the internet. The
  script polls the JSON API every few seconds.
* The Swagger UI (``/api-docs/``) is the ``swagger-ui-py`` PyPI package's
  copy of the swagger-ui dist files, with our own page and initializer
  pointing it at ``/api-docs/openapi.json``.

Bearer token: the pages hold no data, so they are served without it (a
browser cannot put a header on a navigation, and a ``?token=`` would leak
into history, proxies' logs and Referer headers). Their scripts ask for the
token once when the API answers 401, keep it in ``sessionStorage`` (gone
when the tab closes) and send it as ``Authorization: Bearer`` with every
fetch. The data endpoints, the JSON index and the OpenAPI document keep
needing the token.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from aiohttp import web

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"

# Routes added here, as aiohttp spells them (the tests tell them from the API's).
UI_ROUTES = frozenset({"/dashboard/{file}", "/api-docs", "/api-docs/", "/api-docs/{file}"})

_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
# Our files under /dashboard/ and our Swagger page's initializer.
_DASHBOARD_ASSETS = frozenset({"dashboard.js", "dashboard.css", "favicon.svg"})
_API_DOCS_OWN = frozenset({"api-docs.js"})
# The swagger-ui dist files the page uses (the package ships more: editor, maps).
_SWAGGER_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"})
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def swagger_ui_dir() -> Path | None:
    """The ``swagger_ui/static`` directory of swagger-ui-py, without importing it
    (its package imports jinja2 and yaml, which we do not need)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None


def _media_q(accept: str, media: str) -> float:
    """The q-value ``accept`` gives ``media`` by name (0 when not named)."""
    for part in accept.split(","):
        name, _, params = part.partition(";")
        if name.strip().lower() != media:
            continue
        for p in params.split(";"):
            key, _, value = p.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value)
                except ValueError:
                    return 0.0
        return 1.0
    return 0.0


def wants_html(accept: str) -> bool:
    """True when an Accept header names text/html at least as high as JSON
    (browsers); ``*/*`` alone (curl, scripts) or JSON first is False."""
    html = _media_q(accept, "text/html")
    return html > 0 and html >= _media_q(accept, "application/json")


def is_public_page(request: web.Request) -> bool:
    """Served without the bearer token: the pages and assets, never data."""
    path = request.path
    if path == "/":
        return wants_html(request.headers.get("Accept", ""))
    if path.startswith("/dashboard/"):
        return path.removeprefix("/dashboard/") in _DASHBOARD_ASSETS
    if path in ("/api-docs", "/api-docs/"):
        return True
    if path.startswith("/api-docs/"):
        name = path.removeprefix("/api-docs/")
        return name in _SWAGGER_ASSETS or name in _API_DOCS_OWN
    return False


@cache
def _read(path: Path) -> bytes:
    # Package files do not change while the process runs. Holding them as bytes (the
    # Swagger bundle is 1.5 MB, read on first use) gives each response a known length,
    # so admission control charges it by size like every other response.
    return path.read_bytes()


def _file(path: Path) -> web.Response:
    kind = _TYPES.get(path.suffix, "application/octet-stream")
    charset = "utf-8" if kind.startswith("text/") else None
    return web.Response(body=_read(path), content_type=kind, charset=charset, headers=_HEADERS)


def dashboard_page() -> web.Response:
    """The dashboard's HTML."""
    resp = _file(DASHBOARD_DIR / "index.html")
    resp.headers["Vary"] = "Accept"
    return resp


async def _dashboard_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    if name not in _DASHBOARD_ASSETS:
        raise web.HTTPNotFound(reason=f"no dashboard file {name[:40]!r}")
    return _file(DASHBOARD_DIR / name)


async def _api_docs_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/api-docs/")


async def _api_docs_page(request: web.Request) -> web.StreamResponse:
    if swagger_ui_dir() is None:
        raise web.HTTPServiceUnavailable(reason="Swagger UI assets not installed (pip install swagger-ui-py)")
    return _file(DASHBOARD_DIR / "api-docs.html")


async def _api_docs_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    if name in _API_DOCS_OWN:
        return _file(DASHBOARD_DIR / name)
    static = swagger_ui_dir()
    if name not in _SWAGGER_ASSETS or static is None:
        raise web.HTTPNotFound(reason=f"no Swagger UI file {name[:40]!r}")
    return _file(static / name)


def add_ui_routes(app: web.Application) -> None:
    """Register the dashboard assets and the Swagger UI (after the API's routes)."""
    app.router.add_get("/dashboard/{file}", _dashboard_asset)
    app.router.add_get("/api-docs", _api_docs_redirect)
    app.router.add_get("/api-docs/", _api_docs_page)
    app.router.add_get("/api-docs/{file}", _api_docs_asset)
