"""Proxy configuration: one pydantic-settings model, loaded from TOML and the environment.

Every key can be overridden as ``TPROXY__SECTION__KEY`` (for example
``TPROXY__DOWNSTREAM__PORT=3333``). Environment beats the file, the file beats
the defaults. A bad value fails at start with a ``ConfigError`` whose message
names the key (``downstream.port: ...``). Secrets are ``SecretStr`` and never
appear in ``repr`` or logs.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sv2.errors import KeyFormatError
from sv2.keys import decode_public_key
from tproxy.errors import ConfigError
from tproxy.shares.settings import ClickHouseSettings

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
    extranonce2_size: int = Field(default=4, ge=2, le=16)
    extranonce1_size: int = Field(default=2, ge=1, le=8)
    """Local bytes that make each miner's extranonce unique (256**size miners)."""
    version_rolling_mask: str = Field(default="1fffe000", pattern=r"^[0-9a-fA-F]{8}$")
    max_pending_submits: int = Field(default=256, ge=1)
    """Per-connection bound on lines read but not yet answered (flood guard)."""

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
    reconnect_backoff_max_s: float = Field(default=30.0, gt=0)
    failback_interval_s: float = Field(default=60.0, gt=0)
    """How often a non-primary upstream checks whether a preferred one is back."""
    outage_reconnect_after_s: float = Field(default=300.0, gt=0)
    """After an upstream outage this long, miners are sent client.reconnect."""
    nominal_hashrate_per_miner: float = Field(default=0.0, ge=0)
    """Hashrate announced for a miner before it has been measured (H/s)."""
    max_frame_bytes: int = Field(default=1 << 20, ge=1024, le=(1 << 24) - 1)


class MonitoringSettings(BaseModel):
    """The monitoring HTTP server. Disabled unless ``enabled``."""

    model_config = {"extra": "forbid"}

    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = Field(default=9092, ge=0, le=65535)
    token: SecretStr | None = None
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


class Settings(BaseSettings):
    """The whole proxy configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    upstreams: list[UpstreamSettings] = Field(min_length=1)
    downstream: DownstreamSettings = Field(default_factory=DownstreamSettings)
    difficulty: DifficultySettings = Field(default_factory=DifficultySettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)

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


def format_validation_error(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        key = _format_loc(tuple(err.get("loc", ())))
        msg = err.get("msg", "invalid value")
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load settings from an optional TOML file, the environment and ``overrides``.

    Raises ``ConfigError`` naming every bad key.
    """
    toml_path: Path | None = None
    if path is not None:
        toml_path = Path(path)
        if not toml_path.is_file():
            raise ConfigError(f"config file not found: {toml_path}")
    _CURRENT_TOML["path"] = toml_path
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None
    except ValueError as e:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"{toml_path}: {e}") from None
    finally:
        _CURRENT_TOML["path"] = None
