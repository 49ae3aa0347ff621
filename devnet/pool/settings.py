"""Dev pool configuration: the ``PoolSettings`` model and its TOML/env loader.

Owns every knob of the dev pool (listener, authority key, certificate
lifetime, share acknowledgement batching and timer, extranonce layout, target policy,
block/job timers, coinbase contents, resource bounds) and
``load_pool_settings``, which reads a flat TOML file and lets every key be
overridden from the environment as ``TPROXY_POOL__<KEY>``, through
pydantic-settings as ``tproxy.config`` does for the proxy. ``PoolSettings``
itself is a plain model: built directly, it never reads the environment.
Errors are ``tproxy.errors.ConfigError`` and name the offending key (and the
variable that set it); a ``TPROXY_POOL__*`` variable that names no key is one.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from sv2.errors import KeyFormatError
from sv2.keys import (
    decode_secret_key,
    encode_public_key,
    encode_secret_key,
    generate_keypair,
    xonly_from_secret,
)
from tproxy.config import format_validation_error
from tproxy.errors import ConfigError

ENV_PREFIX = "TPROXY_POOL__"

# SubmitSharesExtended.extranonce is a B0_32: the rollable part can never exceed 32 bytes.
MAX_ROLLABLE_EXTRANONCE = 32
# SRI caps the coinbase scriptSig at 100 bytes (the consensus limit).
MAX_SCRIPT_SIG = 100


def _generated_secret() -> SecretStr:
    secret, _ = generate_keypair()
    return SecretStr(encode_secret_key(secret))


def bip34_height_push(height: int) -> bytes:
    """The BIP34 height as the first scriptSig push (minimal CScriptNum, pushdata form)."""
    if height < 17:
        raise ValueError("heights below 17 would need OP_n encoding; use a larger height")
    n = height.to_bytes((height.bit_length() + 8) // 8, "little")  # +8: room for the sign bit
    while len(n) > 1 and n[-1] == 0 and not n[-2] & 0x80:
        n = n[:-1]
    return bytes([len(n)]) + n


class PoolSettings(BaseModel):
    """Everything the dev pool can be told. Defaults run a sane local pool."""

    model_config = {"extra": "forbid", "frozen": True}

    # -- listener and identity -------------------------------------------------
    address: str = "127.0.0.1"
    port: int = Field(default=34254, ge=0, le=65535, description="0 picks a free port")
    authority_secret_key: SecretStr = Field(
        default_factory=_generated_secret,
        description="base58check authority secret; a random one is generated when omitted",
    )
    cert_validity_s: int = Field(default=3600, ge=1, le=10 * 365 * 86400)

    # -- channels and shares ---------------------------------------------------
    share_batch_size: int = Field(default=10, ge=1, le=100_000)
    ack_interval_s: float = Field(
        default=1.0, ge=0, le=3600,
        description="accepted shares wait at most this long for their SubmitShares.Success "
        "(batch or not, like real pools); 0 = batches only (SRI)",
    )
    extranonce_prefix_size: int = Field(default=4, ge=1, le=16)
    extranonce_size: int = Field(
        default=16, ge=1, le=MAX_ROLLABLE_EXTRANONCE, description="rollable bytes granted (at least)"
    )
    fixed_difficulty: float | None = Field(
        default=None, gt=0, description="fixed channel difficulty; None = derive from the nominal hashrate"
    )
    shares_per_minute: float = Field(default=6.0, gt=0)
    version_rolling_allowed: bool = True
    send_unstripped: bool = Field(
        default=False, description="send coinbase parts with BIP141 marker/flag/witness (clients must strip)"
    )

    # -- chain simulation ------------------------------------------------------
    nbits: int = Field(default=0x1D00FFFF, ge=0, le=0xFFFFFFFF)
    block_version: int = Field(default=0x20000000, ge=0, le=0xFFFFFFFF)
    block_height: int = Field(default=900_000, ge=17, le=0x7FFFFFFF)
    new_block_interval_s: float = Field(default=600.0, ge=0, description="0 disables the timer")
    new_job_interval_s: float = Field(default=30.0, ge=0, description="0 disables the timer")
    new_block_on_found: bool = Field(default=False, description="advance the chain when a share finds a block")
    fake_tx_count: int = Field(default=3, ge=0, le=4096, description="fake transactions -> merkle path depth")

    # -- coinbase ----------------------------------------------------------------
    pool_tag: str = Field(default="tproxy-devpool", max_length=32)
    coinbase_output_script: str = Field(
        default="0014" + "00" * 20, description="hex scriptPubKey of the reward output"
    )
    coinbase_value_sats: int = Field(default=312_500_000, ge=0, le=21_000_000 * 100_000_000)

    # -- bounds ------------------------------------------------------------------
    max_connections: int = Field(default=1000, ge=1)
    max_channels_per_connection: int = Field(default=1024, ge=1)
    max_frame_bytes: int = Field(default=1 << 18, ge=1024, le=(1 << 24) - 1)
    max_write_buffer_bytes: int = Field(default=4 << 20, ge=4096, description="slow readers are dropped")
    max_seen_shares_per_channel: int = Field(default=200_000, ge=16)
    handshake_timeout_s: float = Field(default=10.0, gt=0)
    setup_timeout_s: float = Field(default=10.0, gt=0, description="SetupConnection must arrive by then")

    @field_validator("authority_secret_key")
    @classmethod
    def _check_secret(cls, v: SecretStr) -> SecretStr:
        try:
            decode_secret_key(v.get_secret_value())
        except KeyFormatError as e:
            raise ValueError(f"not a valid authority secret key: {e}") from e
        return v

    @field_validator("nbits", "block_version", mode="before")
    @classmethod
    def _hex_int(cls, v: Any) -> Any:
        if isinstance(v, str):
            s = v.strip().lower()
            try:
                return int(s, 16)
            except ValueError:
                raise ValueError(f"expected an integer or a hex string, got {v!r}") from None
        return v

    @field_validator("coinbase_output_script")
    @classmethod
    def _check_script(cls, v: str) -> str:
        try:
            raw = bytes.fromhex(v)
        except ValueError:
            raise ValueError("must be hex") from None
        if not 1 <= len(raw) <= 10_000:
            raise ValueError("script must be 1..10000 bytes")
        return v.lower()

    @field_validator("pool_tag")
    @classmethod
    def _check_tag(cls, v: str) -> str:
        if not v.isascii() or not v.isprintable():
            raise ValueError("must be printable ASCII")
        return v

    @field_validator("fixed_difficulty", "shares_per_minute")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @model_validator(mode="after")
    def _script_sig_fits(self) -> PoolSettings:
        worst = (
            len(bip34_height_push(self.block_height)) + 2  # heights grow; allow one more byte
            + 1 + len(self.pool_tag)
            + 1 + self.extranonce_prefix_size + MAX_ROLLABLE_EXTRANONCE
        )
        if worst > MAX_SCRIPT_SIG:
            raise ValueError(
                f"coinbase scriptSig could reach {worst} bytes (> {MAX_SCRIPT_SIG}): "
                "shorten pool_tag or extranonce_prefix_size"
            )
        return self

    # -- derived values ----------------------------------------------------------
    @property
    def authority_secret(self) -> bytes:
        return decode_secret_key(self.authority_secret_key.get_secret_value())

    @property
    def authority_xonly(self) -> bytes:
        return xonly_from_secret(self.authority_secret)

    @property
    def authority_pubkey(self) -> str:
        """The base58check public key clients must be configured with."""
        return encode_public_key(self.authority_xonly)

    @property
    def output_script(self) -> bytes:
        return bytes.fromhex(self.coinbase_output_script)


# ------------------------------------------------------------------ loading

# Environment values that unset a key (e.g. TPROXY_POOL__FIXED_DIFFICULTY=none).
_NONE_VALUES = frozenset({"", "none", "null"})
_NONE_MARK = "null"  # what they are normalised to: pydantic-settings' env_parse_none_str


@dataclass(frozen=True)
class _LoadInputs:
    path: Path | None
    environ: Mapping[str, str]


# Settings sources are chosen by a classmethod, so one load_pool_settings() call hands its
# file and environment over here (a ContextVar: concurrent loads cannot see each other's).
_LOAD: ContextVar[_LoadInputs | None] = ContextVar("pool_settings_load", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of ``os.environ``.

    ``_load_env_vars`` is the hook the library's own env-like sources (dotenv, cloud
    secrets) override; the mapping is normalised the way it normalises ``os.environ``.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = {k: _NONE_MARK if v.strip().lower() in _NONE_VALUES else v for k, v in environ.items()}
        super().__init__(settings_cls, env_parse_none_str=_NONE_MARK)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class _PoolToml(TomlConfigSettingsSource):
    """The TOML file: flat keys, or a single ``[pool]`` table holding them; errors name the file."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{file_path}: invalid TOML: {e}") from None
        except OSError as e:
            raise ConfigError(f"pool config file {file_path}: {e.strerror or e}") from None
        if len(data) == 1 and isinstance(data.get("pool"), dict):
            return dict(data["pool"])  # tolerate a single [pool] table
        return data


class _PoolSettingsLoader(PoolSettings, BaseSettings):
    """``PoolSettings`` fed by pydantic-settings: overrides > environment > file > defaults."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, case_sensitive=False
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        load = _LOAD.get()
        if load is None:  # only load_pool_settings() builds this class
            raise RuntimeError("_PoolSettingsLoader is built by load_pool_settings()")
        sources: list[PydanticBaseSettingsSource] = [init_settings, _MappingEnvSource(settings_cls, load.environ)]
        if load.path is not None:
            sources.append(_PoolToml(settings_cls, toml_file=load.path))
        return tuple(sources)


def check_pool_environment(environ: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Validate every ``TPROXY_POOL__*`` variable; return {(setting,): its variable name}.

    pydantic-settings ignores a prefixed variable that names no field; here it is a
    ``ConfigError`` naming the variable (as ``tproxy.config.check_environment`` does
    for ``TPROXY__*``). Names are matched case-insensitively, as the library reads them.
    """
    found: dict[tuple[str, ...], str] = {}
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in PoolSettings.model_fields:
            raise ConfigError(f"environment variable {name}: no such setting ({key or 'empty name'})")
        found[(key,)] = name
    return found


def load_pool_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> PoolSettings:
    """Load ``PoolSettings`` from an optional flat TOML file, the environment and ``overrides``.

    Precedence: ``overrides`` > environment (``TPROXY_POOL__KEY``, case-insensitive;
    ``env`` replaces ``os.environ``) > file > defaults. Raises ``ConfigError`` naming
    every bad key (and the variable that set it), an unknown ``TPROXY_POOL__*``
    variable, or a missing or unreadable file.
    """
    toml_path = None if path is None else Path(path)
    if toml_path is not None and not toml_path.is_file():
        raise ConfigError(f"pool config file not found: {toml_path}")
    environ = os.environ if env is None else env
    # An override hides the variable for the same key: its errors are not the variable's.
    env_vars = {k: f"env {v}" for k, v in check_pool_environment(environ).items() if k[0] not in overrides}
    token = _LOAD.set(_LoadInputs(toml_path, environ))
    try:
        loaded = _PoolSettingsLoader(**overrides)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, env_vars)) from None
    except SettingsError as e:  # a source failed to parse a value
        raise ConfigError(f"pool settings: {e}") from None
    finally:
        _LOAD.reset(token)
    # Hand back a plain PoolSettings (equality, repr); the values were validated above.
    return PoolSettings.model_construct(_fields_set=loaded.model_fields_set, **dict(loaded))
