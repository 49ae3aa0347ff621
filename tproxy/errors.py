"""Typed errors of the translator application, and what the edges do with each.

Split as h11 splits them: a ``PeerError`` means the other side (a miner or
the pool) broke the protocol or went away, and is handled at the edge by the
one action ``ERROR_ACTIONS`` gives its class; a ``LocalError`` means our own
code misused an API, is a bug, and is never answered to a peer as if the peer
were at fault. (The sv2 library draws the same line: ``sv2.errors.ProtocolError``
is the peer's fault, ``sv2.errors.StateError`` is ours.)

The SV1 server (``tproxy.sv1.server``) and the upstream supervisor
(``tproxy.upstream.supervisor``) consult ``action_for`` instead of deciding
per except clause.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final


class TproxyError(Exception):
    """Base class of application errors."""


class ConfigError(TproxyError):
    """The configuration is invalid; the message names the key."""


class LocalError(TproxyError):
    """Our own code used an API wrongly (a bug): logged with its traceback, never blamed on a peer."""


class PeerError(TproxyError):
    """The remote side did something wrong; ``action_for`` says what the edge does about it."""


class Sv1BadRequest(PeerError):
    """A miner's request cannot be served (bad JSON-RPC, bad params); the request gets an error reply.

    ``tproxy.sv1.protocol.Sv1ProtocolError`` and its subclasses carry the
    JSON-RPC/Stratum code to answer with.
    """


class Sv1Garbage(PeerError):
    """Bytes that are not SV1 lines at all (an over-long line): the connection is closed."""


class Sv1Flood(PeerError):
    """A miner sent more lines in one read than the server accepts: the connection is closed."""


class UpstreamError(PeerError):
    """The pool connection failed or the pool refused us (the message says how)."""


class UpstreamProtocolError(UpstreamError):
    """The pool sent bytes or messages that break SV2 (bad frame, failed handshake, unexpected reply)."""


class UpstreamClosed(UpstreamError):
    """The pool connection ended (closed by the pool, reset, or closed by us)."""


class UpstreamSilent(UpstreamClosed):
    """The pool's TCP connection is open but the pool stopped answering shares or reading
    (``proxy.upstream_silence_timeout_s``): treated as a lost connection."""


class Action(enum.Enum):
    """What the edge does about one peer error."""

    REPLY_ERROR = "reply-error"  # answer that one request with a JSON-RPC error; keep the miner
    CLOSE_CONNECTION = "close-connection"  # answer with a last error line if the error has a code, then close
    DROP_UPSTREAM = "drop-upstream"  # close the pool connection; the supervisor fails over


ERROR_ACTIONS: Final[Mapping[type[PeerError], Action]] = MappingProxyType(
    {
        Sv1BadRequest: Action.REPLY_ERROR,
        Sv1Garbage: Action.CLOSE_CONNECTION,
        Sv1Flood: Action.CLOSE_CONNECTION,
        UpstreamError: Action.DROP_UPSTREAM,
    }
)
"""The one table from peer error class to action (the most derived listed class wins)."""


def action_for(err: PeerError, *, greeted: bool = True) -> Action:
    """The action for ``err``. Before a miner's first valid request (``greeted`` False)
    a request-level error closes too: a TLS client or a port scanner is not a miner."""
    for cls in type(err).__mro__:
        action = ERROR_ACTIONS.get(cls)
        if action is not None:
            if action is Action.REPLY_ERROR and not greeted:
                return Action.CLOSE_CONNECTION
            return action
    raise LocalError(f"no action for peer error {type(err).__name__}")  # a PeerError missing from the table
