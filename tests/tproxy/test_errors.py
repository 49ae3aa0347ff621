"""tproxy.errors: every peer error has exactly one action, from one table; local errors have none."""

from __future__ import annotations

import pytest

from tproxy.errors import (
    ERROR_ACTIONS,
    Action,
    LocalError,
    PeerError,
    Sv1BadRequest,
    Sv1Flood,
    Sv1Garbage,
    UpstreamClosed,
    UpstreamError,
    UpstreamProtocolError,
    action_for,
)
from tproxy.sv1 import protocol as p
from tproxy.upstream.channel import ChannelLayoutError


@pytest.mark.parametrize(
    ("err", "action"),
    [
        (p.InvalidParams("nonce", "missing"), Action.REPLY_ERROR),
        (p.InvalidRequest("not an object"), Action.REPLY_ERROR),
        (p.ParseError("line is not valid JSON"), Action.REPLY_ERROR),
        (p.TlsClientHello("TLS"), Action.CLOSE_CONNECTION),  # issue 10.6: TLS is closed, even mid-connection
        (p.LineTooLong("line longer than 1024 bytes"), Action.CLOSE_CONNECTION),
        (Sv1Flood("2000 lines in one read"), Action.CLOSE_CONNECTION),
        (UpstreamClosed("closed by the pool"), Action.DROP_UPSTREAM),
        (UpstreamProtocolError("bad frame"), Action.DROP_UPSTREAM),
        (UpstreamError("channel refused"), Action.DROP_UPSTREAM),
        (ChannelLayoutError("extranonce_size=5"), Action.DROP_UPSTREAM),
    ],
)
def test_each_peer_error_maps_to_one_action(err: PeerError, action: Action) -> None:
    assert action_for(err) is action


def test_before_the_first_valid_request_a_bad_line_closes_the_connection() -> None:
    assert action_for(p.TlsClientHello("TLS"), greeted=False) is Action.CLOSE_CONNECTION
    assert action_for(p.ParseError("bad json"), greeted=False) is Action.CLOSE_CONNECTION
    assert action_for(UpstreamClosed("x"), greeted=False) is Action.DROP_UPSTREAM


def test_over_long_line_is_still_a_parse_error_with_its_code() -> None:
    err = p.LineTooLong("too long")
    assert isinstance(err, p.ParseError) and isinstance(err, Sv1Garbage) and err.code == p.PARSE_ERROR


def test_the_table_covers_every_peer_error_family_and_nothing_local() -> None:
    assert set(ERROR_ACTIONS) == {Sv1BadRequest, Sv1Garbage, Sv1Flood, UpstreamError}
    assert not issubclass(LocalError, PeerError)
    with pytest.raises(LocalError, match="no action"):
        action_for(type("Unlisted", (PeerError,), {})("x"))
