"""``tproxy import-sri``: convert an SRI translator (``translator_sv2``) TOML config into ours.

Owns the key mapping from both SRI layouts to ``tproxy.config.Settings``, the
report of what was mapped and what has no equivalent, and the rendering of the
result as TOML. Accepted layouts (anchors 1.2):

* current: ``[[upstreams]]`` (address, port, authority_pubkey, user_identity),
  ``downstream_extranonce2_size``, ``[downstream_difficulty_config]``,
  ``monitoring_address`` ...;
* older (mid-2025): one ``upstream_address``/``upstream_port``/
  ``upstream_authority_pubkey``, ``min_extranonce2_size``,
  ``[upstream_difficulty_config]``.

The converted config is validated with our own section models before it is
written, so what this command writes is something ``tproxy run`` accepts.
Every failure (missing file, bad TOML, not an SRI config, a value our config
refuses) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import math
import sys
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tproxy.config import (
    DifficultySettings,
    DownstreamSettings,
    MonitoringSettings,
    ProxySettings,
    UpstreamSettings,
    format_validation_error,
)
from tproxy.shares.settings import ClickHouseSettings

__all__ = ["SriImportError", "convert", "convert_file", "render_toml", "run"]

DIFF1_HASHES = 2.0**32  # expected hashes per share at difficulty 1

# Keys SRI has and we do not, with the reason printed to the operator.
NO_EQUIVALENT: dict[str, str] = {
    "max_supported_version": "tproxy always speaks SV2 protocol version 2 (the only one that exists)",
    "min_supported_version": "tproxy always speaks SV2 protocol version 2 (the only one that exists)",
    "supported_extensions": "tproxy negotiates no SV2 extensions; per-worker accounting is in the share log"
    " and tproxy_worker_hashrate{worker} instead of extension 0x0002",
    "required_extensions": "tproxy negotiates no SV2 extensions, so it never falls back because of one",
    "verify_payout": "tproxy does not check coinbase payouts (solo/donation identities)",
    "max_past_jobs": "tproxy keeps every job of the current chain tip; shares on an older tip are stale-share",
    "log_file": "tproxy logs to stderr; redirect it or use journald / docker logs",
    "monitoring_sv1_per_client_metrics": "tproxy always exports sv1_client_hashrate{worker}",
    "miner_telemetry": "tproxy does not scan miners' web APIs",
    "upstream_difficulty_config.channel_diff_update_interval": "tproxy updates the channel's nominal"
    " hashrate from its miners' vardiff (difficulty.retarget_interval_s)",
    "upstream_difficulty_config.channel_nominal_hashrate": "tproxy announces the sum of its miners'"
    " hashrates (proxy.nominal_hashrate_per_miner before they are measured)",
}

# SRI top-level key -> (our section, our key, kind).
_TOP_LEVEL: dict[str, tuple[str, str, str]] = {
    "downstream_address": ("downstream", "address", "str"),
    "downstream_port": ("downstream", "port", "int"),
    "downstream_extranonce2_size": ("downstream", "extranonce2_size", "int"),
    "min_extranonce2_size": ("downstream", "extranonce2_size", "int"),
    "aggregate_channels": ("proxy", "aggregate_channels", "bool"),
    "should_aggregate": ("proxy", "aggregate_channels", "bool"),
    "monitoring_cache_refresh_secs": ("monitoring", "refresh_interval_s", "float"),
}
_DIFFICULTY: dict[str, tuple[str, str, str]] = {
    "shares_per_minute": ("difficulty", "shares_per_minute", "float"),
    "enable_vardiff": ("difficulty", "vardiff", "bool"),
    "job_keepalive_interval_secs": ("proxy", "job_keepalive_interval_s", "float"),
}
_OLD_UPSTREAM = ("upstream_address", "upstream_port", "upstream_authority_pubkey")
_HANDLED_ELSEWHERE = frozenset(
    {"upstreams", *_OLD_UPSTREAM, "user_identity", "monitoring_address", "downstream_difficulty_config",
     "upstream_difficulty_config"}
)
_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "downstream": DownstreamSettings,
    "difficulty": DifficultySettings,
    "proxy": ProxySettings,
    "monitoring": MonitoringSettings,
    "clickhouse": ClickHouseSettings,
}
_SECTION_ORDER = ("downstream", "difficulty", "proxy", "monitoring", "clickhouse")


class SriImportError(Exception):
    """A config that cannot be converted; the message is one line for the operator."""


@dataclass
class Conversion:
    """Our config as nested plain values, and what the operator should be told."""

    upstreams: list[dict[str, Any]] = field(default_factory=list)
    sections: dict[str, dict[str, Any]] = field(default_factory=lambda: {s: {} for s in _SECTION_ORDER})
    notes: list[str] = field(default_factory=list)

    def set(self, section: str, key: str, value: Any, origin: str) -> None:
        self.sections[section][key] = value
        self.notes.append(f"mapped: {origin} -> {section}.{key} = {_toml_value(value)}")

    def as_dict(self) -> dict[str, Any]:
        return {"upstreams": self.upstreams, **{s: v for s, v in self.sections.items() if v}}


def _typed(value: Any, kind: str, key: str) -> Any:
    """Check an SRI value's TOML type; SRI (serde) refuses the same mismatches."""
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
    }[kind]
    if not ok:
        raise SriImportError(f"{key}: expected {kind}, got {value!r}")
    if kind == "float":
        if not math.isfinite(value):
            raise SriImportError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    return value


def _upstreams(sri: Mapping[str, Any], conv: Conversion) -> None:
    new = sri.get("upstreams")
    old_present = [k for k in _OLD_UPSTREAM if k in sri]
    if new is not None and old_present:
        raise SriImportError(f"both [[upstreams]] and {old_present[0]} are set: not one SRI layout")
    if new is not None:
        if not isinstance(new, list) or not new or not all(isinstance(u, dict) for u in new):
            raise SriImportError("upstreams: expected a non-empty array of tables ([[upstreams]])")
        for i, u in enumerate(new):
            entry = {
                "address": _typed(u.get("address"), "str", f"upstreams[{i}].address"),
                "port": _typed(u.get("port"), "int", f"upstreams[{i}].port"),
                "authority_pubkey": _typed(u.get("authority_pubkey"), "str", f"upstreams[{i}].authority_pubkey"),
                "user_identity": _typed(u.get("user_identity", ""), "str", f"upstreams[{i}].user_identity"),
            }
            for extra in sorted(set(u) - set(entry)):
                conv.notes.append(f"unknown key, ignored: upstreams[{i}].{extra}")
            conv.upstreams.append(entry)
            conv.notes.append(f"mapped: upstreams[{i}] -> upstreams[{i}] ({entry['address']}:{entry['port']})")
        if "user_identity" in sri:
            conv.notes.append("ignored: top-level user_identity (each [[upstreams]] has its own)")
        return
    if len(old_present) != len(_OLD_UPSTREAM):
        missing = next(k for k in _OLD_UPSTREAM if k not in sri)
        raise SriImportError(f"not an SRI translator config: no [[upstreams]] and no {missing}")
    conv.upstreams.append(
        {
            "address": _typed(sri["upstream_address"], "str", "upstream_address"),
            "port": _typed(sri["upstream_port"], "int", "upstream_port"),
            "authority_pubkey": _typed(sri["upstream_authority_pubkey"], "str", "upstream_authority_pubkey"),
            "user_identity": _typed(sri.get("user_identity", ""), "str", "user_identity"),
        }
    )
    conv.notes.append("mapped: upstream_address/upstream_port/upstream_authority_pubkey -> upstreams[0]")


def _monitoring(sri: Mapping[str, Any], conv: Conversion) -> None:
    addr = sri.get("monitoring_address")
    if addr is None:
        conv.sections["monitoring"]["enabled"] = False
        conv.notes.append("mapped: no monitoring_address -> monitoring.enabled = false (off, as in SRI)")
        return
    addr = _typed(addr, "str", "monitoring_address")
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SriImportError(f"monitoring_address: expected ip:port, got {addr!r}")
    conv.sections["monitoring"]["enabled"] = True
    conv.set("monitoring", "address", host.strip("[]"), "monitoring_address")
    conv.set("monitoring", "port", int(port), "monitoring_address")


def _difficulty(sri: Mapping[str, Any], conv: Conversion) -> None:
    dd = sri.get("downstream_difficulty_config")
    if dd is None:
        conv.notes.append("absent: [downstream_difficulty_config] -> tproxy difficulty defaults")
        return
    if not isinstance(dd, dict):
        raise SriImportError("downstream_difficulty_config: expected a table")
    for key, value in dd.items():
        origin = f"downstream_difficulty_config.{key}"
        if key in _DIFFICULTY:
            section, ours, kind = _DIFFICULTY[key]
            conv.set(section, ours, _typed(value, kind, origin), origin)
        elif key != "min_individual_miner_hashrate":
            conv.notes.append(f"unknown key, ignored: {origin}")
    if "min_individual_miner_hashrate" not in dd:
        return
    origin = "downstream_difficulty_config.min_individual_miner_hashrate"
    hashrate = _typed(dd["min_individual_miner_hashrate"], "float", origin)
    if hashrate <= 0:
        raise SriImportError(f"{origin}: must be positive, got {hashrate!r}")
    spm = float(conv.sections["difficulty"].get("shares_per_minute", DifficultySettings().shares_per_minute))
    start = start_difficulty(hashrate, spm)
    conv.sections["difficulty"]["start_difficulty"] = start
    conv.notes.append(
        f"computed: difficulty.start_difficulty = {_toml_value(start)}"
        f" (= {hashrate:g} H/s * 60 / ({spm:g} shares/min * 2^32))"
    )
    default_min = DifficultySettings().min_difficulty
    if start < default_min:
        conv.set("difficulty", "min_difficulty", start, f"{origin} (below the default floor)")
    conv.set("proxy", "nominal_hashrate_per_miner", hashrate, origin)


def start_difficulty(hashrate: float, shares_per_minute: float) -> float:
    """The difficulty at which a miner of ``hashrate`` H/s finds ``shares_per_minute`` shares."""
    return hashrate * 60.0 / (shares_per_minute * DIFF1_HASHES)


def _versions(sri: Mapping[str, Any], conv: Conversion) -> None:
    lo, hi = sri.get("min_supported_version"), sri.get("max_supported_version")
    if isinstance(lo, int) and isinstance(hi, int) and not lo <= 2 <= hi:
        conv.notes.append(f"warning: SRI allowed versions {lo}..{hi}, which excludes 2; tproxy uses version 2")


def convert(sri: Mapping[str, Any]) -> Conversion:
    """Map a parsed SRI config to ours. Raises ``SriImportError``."""
    if "downstream" in sri and isinstance(sri["downstream"], dict):
        raise SriImportError("this looks like a tproxy config already (it has a [downstream] table)")
    conv = Conversion()
    _upstreams(sri, conv)
    for key, value in sri.items():
        if key in _TOP_LEVEL:
            section, ours, kind = _TOP_LEVEL[key]
            conv.set(section, ours, _typed(value, kind, key), key)
        elif key in NO_EQUIVALENT:
            conv.notes.append(f"no equivalent: {key} = {_toml_value(value)} ({NO_EQUIVALENT[key]})")
        elif key not in _HANDLED_ELSEWHERE:
            conv.notes.append(f"unknown key, ignored: {key}")
    _versions(sri, conv)
    _monitoring(sri, conv)
    _difficulty(sri, conv)
    ud = sri.get("upstream_difficulty_config")
    if isinstance(ud, dict):
        for key, value in ud.items():
            full = f"upstream_difficulty_config.{key}"
            reason = NO_EQUIVALENT.get(full, "unknown key")
            conv.notes.append(f"no equivalent: {full} = {_toml_value(value)} ({reason})")
    # SRI has no share log and no instance identity: a fixed id keeps share rows of
    # this installation together across restarts (our default is random per start).
    conv.sections["proxy"]["instance_id"] = f"tproxy-{uuid.uuid4().hex[:8]}"
    conv.notes.append(f"new: proxy.instance_id = {conv.sections['proxy']['instance_id']} (keep it stable)")
    _validate(conv)
    return conv


def _validate(conv: Conversion) -> None:
    """Check the result with our own models, so that ``tproxy run`` accepts it."""
    checks: list[tuple[str, type[BaseModel], Any]] = [
        (f"upstreams[{i}]", UpstreamSettings, u) for i, u in enumerate(conv.upstreams)
    ]
    checks += [(section, model, conv.sections[section]) for section, model in _SECTION_MODELS.items()]
    for where, model, data in checks:
        try:
            model.model_validate(data)
        except ValidationError as e:
            raise SriImportError(f"converted value refused by tproxy: {where}: {format_validation_error(e)}") from None


# -- TOML output ---------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)  # finite (checked on input); repr round-trips and is valid TOML
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string literal is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def render_toml(conv: Conversion, source: str) -> str:
    """Our config file, with a header saying where it came from."""
    lines = [
        f"# tproxy configuration converted from the SRI translator config {source}",
        "# by `tproxy import-sri`. Every key can be overridden as TPROXY__SECTION__KEY.",
        "# Keys not written here keep tproxy's defaults (see config-examples/tproxy.toml).",
        "",
    ]
    for u in conv.upstreams:
        lines.append("[[upstreams]]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in u.items())
        lines.append("")
    for section in _SECTION_ORDER:
        values = conv.sections[section]
        if section == "clickhouse":
            lines.append("[clickhouse]  # SRI has no share log; this is tproxy's embedded default")
            lines.append('url = "chdb://./data/shares.chdb"  # or http(s)://user:pass@host:8123/db')
            lines.append("")
            continue
        if not values:
            continue
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        if section == "monitoring":
            lines.append("# sri_metric_names = true  # keep SRI's sv1_clients_total, sv1_hashrate_total,")
            lines.append("#                          # sv2_server_hashrate_total for existing dashboards")
        lines.append("")
    return "\n".join(lines)


# -- command -------------------------------------------------------------------


def convert_file(path: str | Path) -> tuple[Conversion, str]:
    """Read, parse and convert one SRI file: (conversion, our TOML text)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise SriImportError(f"{p}: no such file") from None
    except OSError as e:
        raise SriImportError(f"{p}: {e.strerror or e}") from None
    try:
        sri = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SriImportError(f"{p}: not valid TOML: {e}") from None
    conv = convert(sri)
    return conv, render_toml(conv, p.name)


def run(path: str, output: str | None, *, err: Callable[[str], None] | None = None) -> int:
    """``tproxy import-sri FILE [-o OUT]``: report on stderr, config to stdout or OUT."""
    say = err or (lambda line: print(line, file=sys.stderr))
    try:
        conv, text = convert_file(path)
        if output is not None:
            try:
                Path(output).write_text(text, encoding="utf-8")
            except OSError as e:
                raise SriImportError(f"{output}: cannot write: {e.strerror or e}") from None
    except SriImportError as e:
        say(f"tproxy import-sri: {e}")
        return 2
    for note in conv.notes:
        say(note)
    if output is None:
        sys.stdout.write(text)
    else:
        say(f"wrote {output}")
    return 0
