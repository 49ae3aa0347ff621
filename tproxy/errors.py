"""Typed errors of the translator application (protocol errors live in sv2.errors)."""

from __future__ import annotations


class TproxyError(Exception):
    """Base class of application errors."""


class ConfigError(TproxyError):
    """The configuration is invalid; the message names the key."""


class UpstreamError(TproxyError):
    """The upstream connection failed or the pool refused us (the message says how)."""
