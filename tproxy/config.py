"""Proxy configuration: one pydantic-settings model, loaded from TOML and the environment.

Every key can be overridden as ``TPROXY__SECTION__KEY`` (for example
``TPROXY__DOWNSTREAM__PORT=3333``). Environment beats the file, the file beats
the defaults. A bad value fails at start with a ``ConfigError`` whose message
names the key (``downstream.port: ...``), or the environment variable it came
from. An environment variable under ``TPROXY__`` that names no setting, or
holds malformed JSON for a list or section, is an error naming the variable
(pydantic-settings alone would ignore the first and blame the TOML file for
the second). Secrets are ``SecretStr`` and never appear in ``repr``, logs or
``tproxy check-config`` output (``masked_dict`` / ``to_toml``).
"""

from __future__ import annotations

import json
import math
import os
import types
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from sv2.errors import KeyFormatError
from sv2.keys import decode_public_key
from tproxy.errors import ConfigError
from tproxy.shares.settings import ClickHouseSettings, redact_url

ENV_PREFIX = "TPROXY__"


class UpstreamSettings(BaseModel):
    """One SV2 pool endpoint; ``upstreams`` is an ordered fallback list."""

    model_config = {"extra": "forbid"}

    address: str
    port: int = Field(ge=1, le=65535)
    authority_pubkey: str = Field(description="base58check authority key the pool's certificate must be signed by")
    user_identity: str = Field(default="", max_length=255)

    @field_validator("authority_pubkey")
    @classmethod
    def _check_key(cls, v: str) -> str:
        try:
            decode_public_key(v)
        except KeyFormatError as e:
            raise ValueError(f"not a valid authority public key: {e}") from e
        return v

    @property
    def authority_xonly(self) -> bytes:
        return decode_public_key(self.authority_pubkey)


class DownstreamSettings(BaseModel):
    """The SV1 listener the miners connect to, and its limits."""

    model_config = {"extra": "forbid"}

    address: str = "0.0.0.0"
    port: int = Field(default=34255, ge=0, le=65535)
    max_connections: int = Field(default=10_000, ge=1)
    max_line_bytes: int = Field(default=16_384, ge=512, le=1 << 20)
    idle_timeout_s: float = Field(default=900.0, gt=0)
    first_message_timeout_s: float = Field(default=15.0, gt=0)
    """From the connect to the first complete line, and to a subscribe or authorize (bytes alone
    never extend it). ``idle_timeout_s`` then counts from each complete line."""
    extranonce2_size: int = Field(default=4, ge=2, le=16)
    extranonce1_size: int = Field(default=2, ge=1, le=8)
    """Local bytes that make each miner's extranonce unique (256**size miners)."""
    version_rolling_mask: str = Field(default="1fffe000", pattern=r"^[0-9a-fA-F]{8}$")
    max_pending_submits: int = Field(default=256, ge=1)
    """Per-connection bound on lines read but not yet answered (flood guard)."""
    max_past_jobs: int = Field(default=32, ge=1, le=4096)
    """Jobs per miner a share may still name (new jobs, keepalive and retarget copies);
    a share for an older one is stale (SRI's max_past_jobs)."""
    write_buffer_max_bytes: int = Field(default=1 << 20, ge=1024)
    """Bytes the proxy holds for one miner that is not reading; past it, that miner is closed."""
    write_timeout_s: float = Field(default=30.0, gt=0)
    """A miner whose unsent data has not moved for this long is closed (it stopped reading)."""

    @model_validator(mode="after")
    def _capacity(self) -> DownstreamSettings:
        if self.max_connections > 256**self.extranonce1_size:
            raise ValueError(
                f"max_connections={self.max_connections} exceeds the {256**self.extranonce1_size} "
                f"unique extranonce1 values of extranonce1_size={self.extranonce1_size}"
            )
        return self

    @property
    def version_rolling_mask_int(self) -> int:
        return int(self.version_rolling_mask, 16)


class DifficultySettings(BaseModel):
    """Per-miner difficulty (vardiff) policy."""

    model_config = {"extra": "forbid"}

    start_difficulty: float = Field(default=1024.0, gt=0)
    min_difficulty: float = Field(default=1e-8, gt=0)
    max_difficulty: float = Field(default=1e15, gt=0)
    shares_per_minute: float = Field(default=6.0, gt=0)
    vardiff: bool = True
    retarget_interval_s: float = Field(default=30.0, gt=0)
    allow_below_upstream: bool = False
    """Non-aggregated mode: let a miner's difficulty go below its channel's upstream
    difficulty (its extra shares are then validated locally but not forwarded)."""
    honour_suggest_difficulty: bool = True
    memory: bool = True
    """Difficulty memory: a worker that reconnects (same name, also after a restart) starts at the
    difficulty it had when it left, within min/max, instead of ``start_difficulty``."""
    memory_max_age_s: float = Field(default=7 * 86400.0, gt=0)
    """A remembered difficulty older than this is forgotten."""
    memory_path: str | None = None
    """The local file (JSON) of the difficulty memory; None: ``difficulty_memory.json`` beside
    ``clickhouse.spool_dir``."""
    memory_max_workers: int = Field(default=100_000, ge=1)
    """The memory keeps at most this many workers (the most recently seen)."""

    @model_validator(mode="after")
    def _bounds(self) -> DifficultySettings:
        if self.min_difficulty > self.max_difficulty:
            raise ValueError("min_difficulty must be <= max_difficulty")
        return self


class ProxySettings(BaseModel):
    """Behaviour of the translator itself."""

    model_config = {"extra": "forbid"}

    instance_id: str = Field(default_factory=lambda: f"tproxy-{uuid.uuid4().hex[:8]}", min_length=1, max_length=64)
    aggregate_channels: bool = True
    job_keepalive_interval_s: float = Field(default=60.0, ge=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    handshake_timeout_s: float = Field(default=10.0, gt=0)
    reconnect_backoff_initial_s: float = Field(default=0.5, gt=0)
    reconnect_backoff_max_s: float = Field(default=5.0, gt=0)
    """Cap of the doubling reconnect backoff; each wait is drawn at random in [cap/2, cap] of the
    current step (jitter), so a pool that is back is retried within seconds, not all proxies at once."""
    failback_interval_s: float = Field(default=60.0, gt=0)
    """How often a non-primary upstream checks whether a preferred one is back."""
    outage_reconnect_after_s: float = Field(default=300.0, gt=0)
    """After an upstream outage this long, miners are sent client.reconnect."""
    nominal_hashrate_per_miner: float = Field(default=0.0, ge=0)
    """Hashrate announced for a miner before it has been measured (H/s)."""
    max_frame_bytes: int = Field(default=1 << 20, ge=1024, le=(1 << 24) - 1)
    verdict_timeout_s: float = Field(default=60.0, gt=0)
    """A forwarded share the pool has not answered within this long is counted as timed
    out (verdict "timeout" in the share log) and no longer awaited."""
    workers: int = Field(default=1, ge=1, le=64)
    """Processes serving the SV1 port together (SO_REUSEPORT, Linux): each has its own pool connection
    and channels; one share log and one monitoring server cover them all (docs/ARCHITECTURE.md,
    "Workers"). 1 = everything in one process. More than the machine's cores gains nothing."""
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    """The event loop ``tproxy run`` uses; "uvloop" needs the ``fast`` extra (pip install 'tproxy[fast]')."""
    upstream_silence_timeout_s: float = Field(default=30.0, ge=0)
    """A pool that sends no frame for this long while shares wait for its answer (or that does not
    read what we send) is treated as lost: fail over, /health 503. 0 turns the check off. Keep it
    above the time a share-batching pool waits before answering a batch."""


class MonitoringSettings(BaseModel):
    """The monitoring HTTP server. Disabled unless ``enabled``."""

    model_config = {"extra": "forbid"}

    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = Field(default=9092, ge=0, le=65535)
    token: SecretStr | None = None
    """Bearer token for /api/* and /metrics; unset = no authentication (never empty)."""
    refresh_interval_s: float = Field(default=5.0, gt=0)
    worker_stats_interval_s: float = Field(default=30.0, gt=0)
    max_share_log_lag_s: float = Field(default=120.0, gt=0)
    """/health turns 503 when the oldest share not yet in ClickHouse is older than this."""
    max_db_down_s: float = Field(default=300.0, gt=0)
    """/health turns 503 when ClickHouse has been unreachable (shares spooling) this long."""
    rate_limit: bool = True
    """Admission control of the API (monitoring.limits); off only for trusted benchmarks."""
    api_rate: float = Field(default=100.0, gt=0)
    """Cost units per second the API may serve (1 per response + 1 per 64 KiB sent)."""
    api_burst: float = Field(default=50.0, ge=1)
    health_rate: float = Field(default=50.0, gt=0)
    """The same for /health and /api/v1/health, on their own bucket."""
    health_burst: float = Field(default=50.0, ge=1)
    max_wait_s: float = Field(default=2.0, ge=0)
    """A request that would wait longer than this for the bucket is refused with 429."""
    sri_metric_names: bool = Field(
        default=False,
        description=(
            "Expose the stratum-apps (SRI) names sv1_clients_total, sv1_hashrate_total and "
            "sv2_server_hashrate_total for the three gauges that are otherwise named sv1_clients, "
            "sv1_hashrate and sv2_server_hashrate (for dashboards built on the SRI names; "
            "promtool rejects gauges named *_total). See docs/NAMES.md."
        ),
    )
    """Use the SRI gauge names (``*_total``) instead of the default ones; docs/NAMES.md."""
    unauth_rate: float = Field(
        default=5.0,
        gt=0,
        description=(
            "With a token set: requests per second answered 401 to clients without the right token, "
            "from their own bucket (429 when it is empty), so they never spend the API budget."
        ),
    )
    unauth_burst: float = Field(default=20.0, ge=1, description="Burst of the unauthenticated bucket.")
    max_connections: int = Field(
        default=256,
        ge=1,
        description=(
            "Open connections the monitoring port accepts at once; past it a new connection is closed "
            "at once without a response (counted in tproxy_monitoring_connections_refused_total)."
        ),
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description=(
            "A new connection's first request line and headers must arrive within this many seconds of "
            "connecting; a later request's within this many seconds of its first byte."
        ),
    )
    idle_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A kept-alive connection without a new request this long after its last response is closed.",
    )
    send_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A connection whose peer stops reading a response for this long is cut.",
    )
    max_request_line_bytes: int = Field(
        default=65_536,
        ge=8_190,
        le=1 << 20,
        description=(
            "Longest request line accepted; it bounds the worker names addressable by "
            "/api/v1/workers/{name} (percent-encoded, up to 9 bytes a character). The default covers "
            "every name the SV1 side accepts with downstream.max_line_bytes = 16384; raise both together."
        ),
    )

    @field_validator("token")
    @classmethod
    def _check_token(cls, v: SecretStr | None) -> SecretStr | None:
        # The messages never quote the value: it is a secret.
        if v is None:
            return v
        token = v.get_secret_value()
        if not token:
            raise ValueError("must not be empty (leave it out to serve without authentication)")
        if not all("!" <= c <= "~" for c in token):
            raise ValueError("may only hold printable ASCII without spaces (it travels in an HTTP header)")
        return v


class EventSettings(BaseModel):
    """Worker and upstream events (the share log's ``events`` and ``worker_state`` tables)."""

    model_config = {"extra": "forbid"}

    worker_silence_s: float = Field(default=600.0, gt=0)
    """A connected worker that sends no share for this long is marked offline (an ``offline`` event)."""
    reject_burst_count: int = Field(default=10, ge=1)
    """This many pool rejections of one worker in a row make one ``pool_reject_burst`` event."""


class Settings(BaseSettings):
    """The whole proxy configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    status_interval_s: float = Field(default=300.0, ge=0)
    """``tproxy run`` logs a one-line status (miners, hashrate, shares, share-log backlog)
    this often; 0 turns it off."""
    upstreams: list[UpstreamSettings] = Field(min_length=1)
    downstream: DownstreamSettings = Field(default_factory=DownstreamSettings)
    difficulty: DifficultySettings = Field(default_factory=DifficultySettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    events: EventSettings = Field(default_factory=EventSettings)

    _toml_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _CURRENT_TOML.get("path")
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


# Settings sources are chosen by a classmethod, so the file path is handed over here
# for the duration of one load() call (loads are start-up only, never concurrent).
_CURRENT_TOML: dict[str, Path | None] = {"path": None}


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(root)"


def format_validation_error(e: ValidationError, env_vars: Mapping[tuple[str, ...], str] | None = None) -> str:
    """One line naming every bad key (and the environment variable that set it, if one did)."""
    lines = []
    for err in e.errors():
        loc = tuple(err.get("loc", ()))
        key = _format_loc(loc)
        source = _env_source(loc, env_vars or {})
        msg = err.get("msg", "invalid value").removeprefix("Value error, ")
        lines.append(f"{key} (from {source}): {msg}" if source else f"{key}: {msg}")
    return "; ".join(lines).replace("\n", " ")


def _env_source(loc: tuple[int | str, ...], env_vars: Mapping[tuple[str, ...], str]) -> str | None:
    """The variable that set ``loc`` or the list/section holding it (the longest match)."""
    path: list[str] = []
    found = None
    for part in loc:
        if not isinstance(part, str):
            break
        path.append(part.lower())
        found = env_vars.get(tuple(path), found)
    return found


# ------------------------------------------------------------------ environment


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model class of a field annotation (``X`` or ``X | None``), else None."""
    if get_origin(annotation) in (Union, types.UnionType):
        models = [m for a in get_args(annotation) if (m := _model_of(a)) is not None]
        return models[0] if len(models) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _is_json_field(annotation: Any) -> bool:
    """pydantic-settings parses the environment value of these fields as JSON."""
    if _model_of(annotation) is not None:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_json_field(a) for a in get_args(annotation) if a is not type(None))
    return get_origin(annotation) in (list, dict, tuple, set, frozenset)


def _env_field(path: list[str]) -> Any | None:
    """The annotation of the setting at ``path`` (lower-case names), or None if there is none."""
    model: type[BaseModel] | None = Settings
    annotation: Any = None
    for part in path:
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = _model_of(annotation)
    return annotation


def check_environment(environ: Mapping[str, str] | None = None) -> dict[tuple[str, ...], str]:
    """Validate every ``TPROXY__*`` variable; return {setting path: variable name}.

    Raises ``ConfigError`` naming the first variable that names no setting or
    holds malformed JSON where a list or section is expected. Names are
    matched case-insensitively, as pydantic-settings reads them.
    """
    found: dict[tuple[str, ...], str] = {}
    env = os.environ if environ is None else environ
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        annotation = _env_field(path) if all(path) else None
        if annotation is None:
            raise ConfigError(f"environment variable {name}: no such setting ({'.'.join(path) or 'empty name'})")
        if _is_json_field(annotation):
            try:
                json.loads(env[name])
            except ValueError as e:
                msg = getattr(e, "msg", str(e))
                raise ConfigError(f"environment variable {name}: not valid JSON ({msg})") from None
        found[tuple(path)] = name
    return found


# ------------------------------------------------------------------ loading


def _check_file(path: Path) -> None:
    """A config file that cannot be read is one line naming it (not a pydantic-settings traceback)."""
    if path.is_dir():
        raise ConfigError(f"config file {path}: is a directory")
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror or e}") from None


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load settings from an optional TOML file, the environment and ``overrides``.

    Raises ``ConfigError`` naming every bad key (and the environment variable
    that set it), an unknown ``TPROXY__*`` variable, or an unreadable file.
    """
    toml_path: Path | None = None
    if path is not None:
        toml_path = Path(path)
        _check_file(toml_path)
    env_vars = check_environment()
    _CURRENT_TOML["path"] = toml_path
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, env_vars)) from None
    except SettingsError as e:  # a source failed to parse; the JSON pre-check makes this rare
        raise ConfigError(f"environment: {e}") from None
    except ValueError as e:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"{toml_path}: {e}".replace("\n", " ")) from None
    finally:
        _CURRENT_TOML["path"] = None


# ------------------------------------------------------------------ display

MASK = "***"


def masked_dict(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, every ``SecretStr`` shown as ``***``."""

    def walk(v: Any) -> Any:
        if isinstance(v, SecretStr):
            return MASK
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v

    out: dict[str, Any] = walk(settings.model_dump(mode="python"))
    # Credentials are moved out of the URL at validation; redact again in case a form slips through.
    out["clickhouse"]["url"] = redact_url(settings.clickhouse.url)
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else "nan" if math.isnan(v) else repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a TOML basic string


def _toml_table(d: Mapping[str, Any]) -> list[str]:
    """The scalar keys of a table; unset (None) keys as comments, TOML having no null."""
    return [
        f"# {k} is not set" if v is None else f"{k} = {_toml_value(v)}"
        for k, v in d.items()
        if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict))
    ]


def to_toml(d: Mapping[str, Any]) -> str:
    """``d`` (two levels: sections and arrays of tables, as ``masked_dict`` gives) as TOML."""
    lines = _toml_table(d)
    for k, v in d.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                lines += ["", f"[[{k}]]", *_toml_table(item)]
        elif isinstance(v, dict):
            lines += ["", f"[{k}]", *_toml_table(v)]
    return "\n".join(lines) + "\n"
