"""Two Sv2Connections with the Noise handshake done in memory (for the sv2 tests)."""

from __future__ import annotations

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
