"""Helpers shared by the sv2 tests: an in-memory connected pair of Sv2Connections, and
hypothesis strategies derived from the message field descriptors."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from sv2 import codec as c
from sv2 import messages as m
from sv2.connection import DEFAULT_MAX_PAYLOAD, State, Sv2Connection
from sv2.keys import generate_keypair
from sv2.noise import NoiseInitiator, NoiseResponder

AUTH_SECRET, AUTH_XONLY = generate_keypair()


def connected_pair(
    max_payload: int = DEFAULT_MAX_PAYLOAD, *, client_max_payload: int = DEFAULT_MAX_PAYLOAD
) -> tuple[Sv2Connection, Sv2Connection]:
    """(client, server) with the handshake done in memory; ``max_payload`` is the server's."""
    client = Sv2Connection(NoiseInitiator(AUTH_XONLY), max_payload=client_max_payload)
    server = Sv2Connection(NoiseResponder(AUTH_SECRET), max_payload=max_payload)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert client.state is State.TRANSPORT and server.state is State.TRANSPORT
    return client, server


def strategy_for(codec: c.Codec[Any]) -> st.SearchStrategy[Any]:
    """A strategy producing values that ``codec`` can encode."""
    if isinstance(codec, c.Bool):
        return st.booleans()
    if isinstance(codec, c.UInt):
        # Boundaries are where the bugs are: weight them in.
        return st.one_of(st.sampled_from([0, 1, codec.max]), st.integers(0, codec.max))
    if isinstance(codec, c.Float32):
        # width=32 gives only values exactly representable in binary32, so they round-trip.
        return st.floats(width=32, allow_nan=False)
    if isinstance(codec, c.FixedBytes):
        return st.binary(min_size=codec.size, max_size=codec.size)
    if isinstance(codec, c.VarBytes):
        return st.binary(max_size=min(codec.max_len, 300))
    if isinstance(codec, c.Str):
        # Valid text of at most 63 chars (<= 252 UTF-8 bytes), or any bytes as
        # surrogateescape'd text, which is what decoding a hostile peer yields.
        raw = st.binary(max_size=255).map(lambda b: b.decode("utf-8", "surrogateescape"))
        return st.one_of(st.text(max_size=63), raw)
    if isinstance(codec, c.RestBytes):
        return st.binary(max_size=40)
    if isinstance(codec, c.Seq):
        return st.lists(strategy_for(codec.inner), max_size=min(codec.max_count, 6)).map(tuple)
    if isinstance(codec, c.Option):
        return st.one_of(st.none(), strategy_for(codec.inner))
    raise AssertionError(f"no strategy for {codec!r}")


def message_strategy(cls: type[m.Message]) -> st.SearchStrategy[m.Message]:
    return st.builds(cls, **{name: strategy_for(codec) for name, codec in cls.FIELDS})
