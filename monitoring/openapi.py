"""The published OpenAPI 3.1 document of the monitoring API.

Owns the description of every endpoint and a JSON Schema for every response
body, as one Python dict (``openapi_document()``). Paths and field names follow
the stratum-apps reference monitoring (anchors 2.1/2.2) so dashboards written
for it keep working; our additions are marked "(tproxy)" in the descriptions.
The tests validate every live response against this document, so it cannot
drift from the code silently.
"""

from __future__ import annotations

import copy
from typing import Any

API_TITLE = "tproxy Monitoring API"
API_VERSION = "0.1.0"
MAX_LIMIT = 100
DEFAULT_LIMIT = 25

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _int(desc: str = "", minimum: int | None = 0) -> Schema:
    s: Schema = {"type": "integer"}
    if minimum is not None:
        s["minimum"] = minimum
    if desc:
        s["description"] = desc
    return s


def _num(desc: str = "") -> Schema:
    s: Schema = {"type": "number"}
    if desc:
        s["description"] = desc
    return s


def _str(desc: str = "") -> Schema:
    s: Schema = {"type": "string"}
    if desc:
        s["description"] = desc
    return s


def _bool(desc: str = "") -> Schema:
    s: Schema = {"type": "boolean"}
    if desc:
        s["description"] = desc
    return s


def _nullable(s: Schema) -> Schema:
    out = dict(s)
    if "$ref" in out:
        return {"anyOf": [out, {"type": "null"}]}
    out["type"] = [out["type"], "null"]
    return out


def _obj(props: dict[str, Schema], desc: str = "") -> Schema:
    s: Schema = {"type": "object", "required": list(props), "properties": props}
    if desc:
        s["description"] = desc
    return s


_UNIX = "unix seconds"

SCHEMAS: dict[str, Schema] = {
    "ErrorResponse": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": _str("what went wrong"),
            "parameter": _str("(tproxy) the query or path parameter that was invalid (400 only)"),
        },
    },
    "IndexResponse": _obj(
        {
            "service": _str(),
            "version": _str(),
            "endpoints": {"type": "object", "additionalProperties": _str(), "description": "path -> description"},
        }
    ),
    "HealthResponse": _obj(
        {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "timestamp": _int(_UNIX),
            "reason": _nullable(_str("(tproxy) why the proxy is unavailable; null when ok")),
            "reasons": {"type": "array", "items": _str(), "description": "(tproxy) every failed check"},
            "upstream_connected": _bool("(tproxy)"),
            "upstream_channel_open": _bool("(tproxy)"),
            "share_log": {
                "type": "string",
                "enum": ["ok", "behind", "disabled"],
                "description": "(tproxy) share log keeping up, falling behind, or not configured",
            },
            "snapshot_age_s": _nullable(_num("(tproxy) age of the data served; null before the first snapshot")),
        }
    ),
    "UpstreamInfo": _obj(
        {
            "connected": _bool("SV2 connection up (Noise + SetupConnection done)"),
            "channel_open": _bool("an upstream channel is open"),
            "address": _nullable(_str("host:port of the current or last upstream")),
            "since": _nullable(_num(f"{_UNIX} when `connected` last changed")),
        },
        "(tproxy) the upstream connection",
    ),
    "ServerSummary": _obj(
        {
            "total_channels": _int(),
            "extended_channels": _int(),
            "standard_channels": _int(),
            "total_hashrate": _num("sum of the channels' nominal hashrate, H/s"),
        }
    ),
    "Sv1ClientsSummary": _obj({"total_clients": _int(), "total_hashrate": _num("H/s")}),
    "ShareLogInfo": _obj(
        {
            "queued": _int("records in the in-memory queue"),
            "written": _int("records written to ClickHouse"),
            "spooled": _int("records written to the disk spool"),
            "replayed": _int("spooled records later written to ClickHouse"),
            "retried": _int("batch insert retries"),
            "failed_batches": _int("failed batch inserts"),
            "dropped": _int("records lost"),
            "spool_pending": _int("records in the spool not yet replayed"),
            "oldest_unwritten_age_s": _num("age of the oldest record not yet in ClickHouse"),
            "db_up": _bool("the last insert succeeded"),
        },
        "(tproxy) share-log pipeline counters",
    ),
    "GlobalInfo": _obj(
        {
            "server": _nullable(_ref("ServerSummary")),
            "sv2_clients": {"type": "null", "description": "always null on a translator"},
            "sv1_clients": _nullable(_ref("Sv1ClientsSummary")),
            "uptime_secs": _int(),
            "share_log": _nullable(_ref("ShareLogInfo")),
            "snapshot_taken_at": _num(f"(tproxy) {_UNIX} the data was taken"),
        }
    ),
    "ServerResponse": _obj(
        {
            "extended_channels_count": _int(),
            "standard_channels_count": _int(),
            "total_hashrate": _num("H/s"),
            "upstream": _ref("UpstreamInfo"),
        }
    ),
    "ServerExtendedChannelInfo": _obj(
        {
            "channel_id": _int(),
            "user_identity": _str(),
            "nominal_hashrate": _nullable(_num("H/s")),
            "target_hex": _str("big-endian hex, 64 characters"),
            "extranonce_prefix_hex": _str(),
            "full_extranonce_size": _int(),
            "rollable_extranonce_size": _int(),
            "version_rolling": _bool(),
            "shares_acknowledged": _int("from SubmitShares.Success"),
            "shares_submitted": _int("forwarded upstream"),
            "shares_rejected": _int(),
            "shares_rejected_by_reason": {
                "type": "object",
                "additionalProperties": _int(),
                "description": "SV2 error code -> count",
            },
            "acknowledged_work_sum": _int("sum of SubmitShares.Success new_shares_sum"),
            "validated_work_sum": _num(),
            "best_diff": _num(),
            "blocks_found": _int(),
        }
    ),
    "ServerStandardChannelInfo": {
        "type": "object",
        "description": "never present on this proxy (it opens extended channels only)",
    },
    "ServerChannelsResponse": _obj(
        {
            "offset": _int(),
            "limit": _int(),
            "total_extended": _int(),
            "total_standard": _int(),
            "extended_channels": {"type": "array", "items": _ref("ServerExtendedChannelInfo")},
            "standard_channels": {"type": "array", "items": _ref("ServerStandardChannelInfo")},
        }
    ),
    "Sv1ClientInfo": _obj(
        {
            "client_id": _int(),
            "channel_id": _nullable(_int()),
            "worker_name": _str("(tproxy) the SV1 username as sent in mining.authorize; same value as sv1_username"),
            "sv1_username": _str("the SV1 username as sent in mining.authorize"),
            "sv1_worker_name": _str("the part of sv1_username after the first '.', or all of it"),
            "user_identity": _str("identity of its channel upstream"),
            "target_hex": _str("big-endian hex, 64 characters"),
            "hashrate": _nullable(_num("vardiff estimate, H/s")),
            "stable_hashrate": _bool(),
            "extranonce1_hex": _str(),
            "extranonce2_len": _int(),
            "version_rolling_mask": _nullable(_str("8 hex characters")),
            "version_rolling_min_bit": _nullable(_str("8 hex characters")),
            "connection_ip": _str(),
            "connected_at": _num(f"(tproxy) {_UNIX}"),
            "shares_accepted": _int("(tproxy)"),
            "shares_rejected": _int("(tproxy)"),
            "last_share_at": _nullable(_num(f"(tproxy) {_UNIX}")),
        }
    ),
    "Sv1ClientsResponse": _obj(
        {
            "offset": _int(),
            "limit": _int(),
            "total": _int(),
            "items": {"type": "array", "items": _ref("Sv1ClientInfo")},
        }
    ),
    "WorkerWindow": _obj(
        {
            "window_s": _int(),
            "shares_accepted": _int(),
            "shares_rejected": _int(),
            "accepted_difficulty_sum": _num("sum of target_difficulty over accepted shares"),
            "hashrate": _num("accepted_difficulty_sum * 2^32 / window_s, H/s"),
            "last_share_at": _nullable(_num(_UNIX)),
        },
        "(tproxy) one worker's shares over a trailing window, from the share log",
    ),
    "WorkerInfo": _obj(
        {
            "worker_name": _str(),
            "connections": _int("SV1 connections open now"),
            "client_ids": {"type": "array", "items": _int()},
            "hashrate": _nullable(_num("sum of the connections' vardiff estimates, H/s")),
            "windows": _nullable(
                _obj({"5m": _ref("WorkerWindow"), "1h": _ref("WorkerWindow"), "24h": _ref("WorkerWindow")})
            ),
        },
        "(tproxy) one worker (SV1 username), over all its connections",
    ),
    "WorkersResponse": _obj(
        {
            "offset": _int(),
            "limit": _int(),
            "total": _int(),
            "stats_updated_at": _nullable(_num(f"{_UNIX} of the window statistics; null if never loaded")),
            "items": {"type": "array", "items": _ref("WorkerInfo")},
        }
    ),
}

_PAGE_PARAMS: list[Schema] = [
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


def _json(schema: str, desc: str) -> Schema:
    return {"description": desc, "content": {"application/json": {"schema": _ref(schema)}}}


_ERR_400 = _json("ErrorResponse", "invalid query or path parameter")
_ERR_401 = _json("ErrorResponse", "bearer token missing or wrong (when a token is configured)")
_ERR_404 = _json("ErrorResponse", "not found")
_ERR_429 = _json("ErrorResponse", "rate limited; retry after the Retry-After header's seconds")
_ERR_503 = _json("ErrorResponse", "no snapshot has been built yet (only before the first refresh)")


def _get(
    summary: str,
    ok: Schema,
    *,
    params: list[Schema] | None = None,
    extra: dict[str, Schema] | None = None,
    open_: bool = False,
    data: bool = True,
) -> Schema:
    responses: dict[str, Schema] = {"200": ok}
    if not open_:
        responses["401"] = _ERR_401
    if data and not open_:
        responses["503"] = _ERR_503
    responses["429"] = _ERR_429
    responses.update(extra or {})
    op: Schema = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if open_:
        op["security"] = []
    return {"get": op}


def _health(summary: str) -> Schema:
    return _get(
        summary,
        _json("HealthResponse", "upstream channel open and share log keeping up"),
        extra={"503": _json("HealthResponse", "unavailable; `reason` says why")},
        open_=True,
    )


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the OpenAPI 3.1 document."""
    client_id = {
        "name": "client_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
    worker = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    paths: dict[str, Schema] = {
        "/": _get("Service name, version and endpoint list", _json("IndexResponse", "index"), data=False),
        "/health": _health("(tproxy) Alias of /api/v1/health for load balancer probes; no token needed"),
        "/api/v1/health": _health("Health: 200 when the upstream channel is open and the share log keeps up, else 503"),
        "/api/v1/global": _get("Summary of everything", _json("GlobalInfo", "summary")),
        "/api/v1/server": _get("Upstream channels summary", _json("ServerResponse", "server")),
        "/api/v1/server/channels": _get(
            "Upstream channels (offset/limit apply to each list)",
            _json("ServerChannelsResponse", "channels"),
            params=_PAGE_PARAMS,
            extra={"400": _ERR_400},
        ),
        "/api/v1/sv1/clients": _get(
            "SV1 clients, sorted by client_id",
            _json("Sv1ClientsResponse", "clients"),
            params=_PAGE_PARAMS,
            extra={"400": _ERR_400},
        ),
        "/api/v1/sv1/clients/{client_id}": _get(
            "One SV1 client",
            _json("Sv1ClientInfo", "client"),
            params=[client_id],
            extra={"400": _ERR_400, "404": _ERR_404},
        ),
        "/api/v1/workers": _get(
            "(tproxy) Workers (SV1 usernames) with shares and hashrate over 5 m, 1 h and 24 h, sorted by name",
            _json("WorkersResponse", "workers"),
            params=_PAGE_PARAMS,
            extra={"400": _ERR_400},
        ),
        "/api/v1/workers/{name}": _get(
            "(tproxy) One worker",
            _json("WorkerInfo", "worker"),
            params=[worker],
            extra={"404": _ERR_404},
        ),
        "/metrics": _get(
            "Prometheus text exposition",
            {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
        ),
        "/api-docs/openapi.json": _get(
            "This document",
            {"description": "OpenAPI 3.1 document", "content": {"application/json": {"schema": {"type": "object"}}}},
            data=False,
        ),
    }
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
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
        "paths": paths,
    }
