"""Dev pool configuration: the ``PoolSettings`` model and its TOML/env loader.

Owns every knob of the dev pool (listener, authority key, certificate
lifetime, share acknowledgement batching and timer, extranonce layout, target policy,
block/job timers, coinbase contents, resource bounds) and
``load_pool_settings``, which reads a flat TOML file and lets every key be
overridden from the environment as ``TPROXY_POOL__<KEY>``. Errors are
``tproxy.errors.ConfigError`` and name the offending key.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator

from sv2.errors import KeyFormatError
from sv2.keys import (
    decode_secret_key,
    encode_public_key,
    encode_secret_key,
    generate_keypair,
    xonly_from_secret,
)
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


def _format_error(e: ValidationError, env_keys: Mapping[str, str]) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        src = f" (from env {env_keys[loc]})" if loc in env_keys else ""
        parts.append(f"{loc}{src}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts)


def load_pool_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> PoolSettings:
    """Load ``PoolSettings`` from an optional flat TOML file, the environment and ``overrides``.

    Precedence: ``overrides`` > environment (``TPROXY_POOL__KEY``, case-insensitive)
    > file > defaults. Raises ``ConfigError`` naming every bad key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"pool config file not found: {p}")
        try:
            with p.open("rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: invalid TOML: {e}") from None
        if "pool" in data and isinstance(data["pool"], dict) and len(data) == 1:
            data = dict(data["pool"])  # tolerate a single [pool] table
    env_keys: dict[str, str] = {}
    for name, value in (os.environ if env is None else env).items():
        if name.upper().startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower()
            if not key:
                continue
            env_keys[key] = name
            data[key] = None if value.strip().lower() in ("", "none", "null") else value
    data.update(overrides)
    try:
        return PoolSettings(**data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, env_keys)) from None
