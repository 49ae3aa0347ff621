"""The published OpenAPI 3.1 document of the monitoring API.

Owns the list of endpoints (one table, ``ENDPOINTS``) and the assembly of the
document served at ``/api-docs/openapi.json`` (``openapi_document()``). The
response schemas are not written here: they are derived from the pydantic
models in ``monitoring.models``, the one source of the API's field names.
Paths and field names follow the stratum-apps reference monitoring (anchors
2.1/2.2); our additions are marked "(tproxy)" in the descriptions. The tests
validate every live response against this document, so it cannot drift from
the code silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from monitoring.models import RESPONSE_MODELS

API_TITLE = "tproxy Monitoring API"
API_VERSION = "0.1.0"
MAX_LIMIT = 100
DEFAULT_LIMIT = 25

Schema = dict[str, Any]
_REF = "#/components/schemas/{model}"


# -- components/schemas from the models ---------------------------------------------


def _tidy(node: Any) -> Any:
    """pydantic's JSON Schema, made plainer for readers and generated clients.

    Drops the generated ``title`` of every schema (the names are the keys) and
    writes ``T | None`` of a simple type as ``"type": [T, "null"]`` rather than
    an ``anyOf`` (references stay ``anyOf``: a ``$ref`` has no type to extend).
    A null default on a non-nullable field (``ErrorResponse.parameter``, absent
    unless set) is dropped.
    """
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: Schema = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "default" and value is None and isinstance(node.get("type"), str):
            continue  # an optional field that is omitted, never sent as null
        if key == "properties":  # a mapping of names, not a schema: keep every key
            out[key] = {name: _tidy(s) for name, s in value.items()}
        else:
            out[key] = _tidy(value)
    return _collapse_nullable(out)


def _collapse_nullable(s: Schema) -> Schema:
    options = s.get("anyOf")
    if not isinstance(options, list) or len(options) != 2 or {"type": "null"} not in options:
        return s
    (other,) = [o for o in options if o != {"type": "null"}]
    if not isinstance(other.get("type"), str):
        return s
    merged = {k: v for k, v in s.items() if k != "anyOf"}
    merged.update(other)
    merged["type"] = [other["type"], "null"]
    return merged


@cache
def _schemas() -> dict[str, Schema]:
    """components/schemas: every response model and every model they reference."""
    out: dict[str, Schema] = {}
    for model in RESPONSE_MODELS:
        schema = model.model_json_schema(ref_template=_REF)
        for name, sub in schema.pop("$defs", {}).items():
            out.setdefault(name, _tidy(sub))
        out[model.__name__] = _tidy(schema)
    return out


def schemas() -> dict[str, Schema]:
    """A fresh copy of components/schemas."""
    return _tidy(_schemas())  # type: ignore[no-any-return]  # _tidy rebuilds every container


# -- paths: one row per endpoint ---------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": _REF.format(model=name)}


def _json(schema: Schema | str, desc: str) -> Schema:
    s = _ref(schema) if isinstance(schema, str) else schema
    return {"description": desc, "content": {"application/json": {"schema": s}}}


def _page_params() -> list[Schema]:
    return [
        {
            "name": "offset",
            "in": "query",
            "required": False,
            "description": "items to skip (default 0); not a non-negative integer -> 400",
            "schema": {"type": "integer", "minimum": 0, "default": 0},
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": f"page size (default {DEFAULT_LIMIT}); above {MAX_LIMIT} is clamped to {MAX_LIMIT}",
            "schema": {"type": "integer", "minimum": 0, "default": DEFAULT_LIMIT},
        },
    ]


def _client_id_param() -> list[Schema]:
    return [{"name": "client_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}]


def _worker_param() -> list[Schema]:
    return [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]


def _events_params() -> list[Schema]:
    return [
        *_page_params(),
        {"name": "worker", "in": "query", "required": False, "description": "only this worker name",
         "schema": {"type": "string"}},
        {"name": "type", "in": "query", "required": False, "description": "only this event type",
         "schema": {"type": "string"}},
        {"name": "since", "in": "query", "required": False,
         "description": "only events at or after this unix time (seconds); not a number -> 400",
         "schema": {"type": "number", "minimum": 0}},
    ]


_ERRORS: dict[int, str] = {
    400: "invalid query or path parameter",
    401: "bearer token missing or wrong (when a token is configured)",
    404: "not found",
    429: "rate limited; retry after the Retry-After header's seconds",
    503: "no snapshot has been built yet (only before the first refresh)",
}


@dataclass(frozen=True)
class Endpoint:
    """One GET endpoint: what it answers and how it can fail.

    ``ok``: the 200 body, a model name or a whole response object.
    ``data``: served from the snapshot (503 before the first one).
    ``open``: no bearer token needed (health probes).
    ``errors``: further error statuses (400, 404).
    """

    path: str
    summary: str
    ok: str | Schema
    ok_desc: str = "OK"
    params: Callable[[], list[Schema]] | None = None
    errors: tuple[int, ...] = ()
    data: bool = True
    open: bool = False

    def operation(self) -> Schema:
        ok = self.ok if isinstance(self.ok, dict) else _json(self.ok, self.ok_desc)
        responses: dict[str, Schema] = {"200": ok}
        if self.open:
            unavailable = _json("HealthResponse", "unavailable; `reason` says why")
        else:
            responses["401"] = _json("ErrorResponse", _ERRORS[401])
            unavailable = _json("ErrorResponse", _ERRORS[503])
        if self.data:
            responses["503"] = unavailable
        responses["429"] = _json("ErrorResponse", _ERRORS[429])
        for status in self.errors:
            responses[str(status)] = _json("ErrorResponse", _ERRORS[status])
        op: Schema = {"summary": self.summary, "responses": responses}
        if self.params is not None:
            op["parameters"] = self.params()
        if self.open:
            op["security"] = []
        return {"get": op}


_HEALTH_OK = "upstream channel open and share log keeping up"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("/", "Service name, version and endpoint list (JSON); browsers get the dashboard",
             "IndexResponse", "index", data=False),
    Endpoint("/health", "(tproxy) Alias of /api/v1/health for load balancer probes; no token needed",
             "HealthResponse", _HEALTH_OK, open=True),
    Endpoint("/api/v1/health", "Health: 200 when the upstream channel is open and the share log keeps up, else 503",
             "HealthResponse", _HEALTH_OK, open=True),
    Endpoint("/api/v1/global", "Summary of everything", "GlobalInfo", "summary"),
    Endpoint("/api/v1/server", "Upstream channels summary", "ServerResponse", "server"),
    Endpoint("/api/v1/server/channels", "Upstream channels (offset/limit apply to each list)",
             "ServerChannelsResponse", "channels", _page_params, (400,)),
    Endpoint("/api/v1/sv1/clients", "SV1 clients, sorted by client_id",
             "Sv1ClientsResponse", "clients", _page_params, (400,)),
    Endpoint("/api/v1/sv1/clients/{client_id}", "One SV1 client",
             "Sv1ClientInfo", "client", _client_id_param, (400, 404)),
    Endpoint("/api/v1/workers",
             "(tproxy) Workers (SV1 usernames) with shares and hashrate over 5 m, 1 h and 24 h, sorted by name",
             "WorkersResponse", "workers", _page_params, (400,)),
    Endpoint("/api/v1/workers/{name}", "(tproxy) One worker", "WorkerInfo", "worker", _worker_param, (404,)),
    Endpoint("/api/v1/history", "(tproxy) Farm hashrate over the last hour and day (kept in memory)",
             "HistoryResponse", "history"),
    Endpoint("/api/v1/events",
             "(tproxy) Worker and upstream events from the share log, newest first; 503 while the database "
             "cannot be queried", "EventsResponse", "events", _events_params, (400,)),
    Endpoint("/metrics", "Prometheus text exposition",
             {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}),
    Endpoint("/api-docs/openapi.json", "This document",
             _json({"type": "object"}, "OpenAPI 3.1 document"), data=False),
)


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": API_TITLE,
            "version": API_VERSION,
            "description": (
                "Monitoring API of the tproxy Stratum V2 translator. Paths and field names follow the "
                "stratum-apps monitoring API; additions are marked (tproxy). Data is served from a snapshot "
                "refreshed every few seconds. When a bearer token is configured every path except the "
                "health endpoints requires `Authorization: Bearer <token>`."
            ),
        },
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
        "paths": {e.path: e.operation() for e in ENDPOINTS},
    }
