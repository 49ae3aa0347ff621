"""sv2.connection: the sans-IO connection in memory and over a real TCP socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from sv2.connection import AnyMessage, Role, State, Sv2Connection
from sv2.errors import (
    AuthorityKeyMismatch,
    CertificateExpired,
    DecryptError,
    FrameTooLarge,
    HandshakeTruncated,
    LocalProtocolError,
    ProtocolError,
    StateError,
)
from sv2.framing import HEADER_SIZE, MAX_MSG_LENGTH, FrameHeader, encode_frame
from sv2.keys import generate_keypair
from sv2.messages import (
    NewExtendedMiningJob,
    SetupConnection,
    SubmitSharesExtended,
    SubmitSharesSuccess,
    UnknownMessage,
    decode_message,
)
from sv2.noise import (
    HEADER_CT_SIZE,
    MAX_CHUNK_PLAINTEXT,
    NoiseInitiator,
    NoiseResponder,
    NoiseTransport,
)
from tests.helpers.sv2_pair import connected_pair
from tests.helpers.vectors import load_vector

AUTH_SECRET, AUTH_XONLY = generate_keypair()


def pair(
    *, authority: bytes = AUTH_XONLY, now: float | None = None, max_payload: int = 1 << 20
) -> tuple[Sv2Connection, Sv2Connection]:
    clock = (lambda: now) if now is not None else time.time
    client = Sv2Connection(NoiseInitiator(authority, now=clock), max_payload=max_payload)
    server = Sv2Connection(NoiseResponder(AUTH_SECRET), max_payload=max_payload)
    return client, server


def handshake(client: Sv2Connection, server: Sv2Connection) -> None:
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert client.state is State.TRANSPORT and server.state is State.TRANSPORT


def share(seq: int) -> SubmitSharesExtended:
    return SubmitSharesExtended(
        channel_id=1, sequence_number=seq, job_id=7, nonce=seq * 3, ntime=1_700_000_000, version=0x20000000,
        extranonce=seq.to_bytes(8, "little"),
    )


def job(i: int, coinbase_len: int = 100) -> NewExtendedMiningJob:
    return NewExtendedMiningJob(
        channel_id=1, job_id=i, min_ntime=None if i % 2 else 1_700_000_000 + i, version=0x20000000,
        version_rolling_allowed=True, merkle_path=tuple(bytes([i % 256]) * 32 for _ in range(3)),
        coinbase_tx_prefix=bytes(coinbase_len), coinbase_tx_suffix=b"\x01" * 40,
    )


def test_roles_and_act_sizes() -> None:
    client, server = pair()
    assert client.role is Role.INITIATOR and server.role is Role.RESPONDER
    act1 = client.data_to_send()
    assert len(act1) == 64 and client.data_to_send() == b""
    server.receive_data(act1)
    act2 = server.data_to_send()
    assert len(act2) == 234
    client.receive_data(act2)
    assert client.handshake_complete and server.handshake_complete


def test_messages_both_ways_split_at_every_byte() -> None:
    client, server = pair()
    handshake(client, server)
    wire = client.send(share(1)) + client.send(job(2, coinbase_len=65_535)) + client.send(share(3))
    got: list[AnyMessage] = []
    for b in wire:  # one byte at a time: the worst fragmentation a socket can produce
        server.receive_data(bytes([b]))
        got.extend(server.messages())
    assert got == [share(1), job(2, coinbase_len=65_535), share(3)]
    server_wire = server.send(SubmitSharesSuccess(channel_id=1, last_sequence_number=3, new_submits_accepted_count=3, new_shares_sum=9))
    client.receive_data(server_wire)
    assert list(client.messages()) == [
        SubmitSharesSuccess(channel_id=1, last_sequence_number=3, new_submits_accepted_count=3, new_shares_sum=9)
    ]


def test_unknown_message_type_is_surfaced_not_fatal() -> None:
    client, server = pair()
    handshake(client, server)
    unknown = UnknownMessage(extension_type=0x4242, msg_type=0x99, channel_msg=False, payload=b"hello")
    server.receive_data(client.send(unknown) + client.send(share(5)))
    msgs = list(server.messages())
    assert isinstance(msgs[0], UnknownMessage) and msgs[0].payload == b"hello"
    assert msgs[1] == share(5)


def test_send_before_handshake_is_a_state_error() -> None:
    client, _ = pair()
    with pytest.raises(StateError, match="handshake"):
        client.send(share(1))


def test_caller_misuse_is_local_and_not_a_protocol_error() -> None:
    """A caller bug raises LocalProtocolError, which `except ProtocolError` does not catch."""
    assert issubclass(StateError, LocalProtocolError)
    assert not issubclass(StateError, ProtocolError)
    assert not issubclass(LocalProtocolError, ProtocolError)
    client, _ = pair()
    caught_as_peer_error = False
    with pytest.raises(StateError):
        try:
            client.send(share(1))  # before the handshake: our mistake
        except ProtocolError:
            caught_as_peer_error = True
    assert not caught_as_peer_error
    assert client.state is State.HANDSHAKE  # misuse does not tear the connection down


def test_peer_fault_is_a_protocol_error_and_not_local() -> None:
    """Bad bytes from the peer raise ProtocolError, never the local error class."""
    client, server = pair()
    handshake(client, server)
    wire = bytearray(client.send(share(1)))
    wire[0] ^= 0x01  # corrupt the header ciphertext in transit
    server.receive_data(bytes(wire))
    with pytest.raises(ProtocolError) as ei:
        list(server.messages())
    assert isinstance(ei.value, DecryptError)
    assert not isinstance(ei.value, LocalProtocolError)
    assert server.state is State.CLOSED
    # Using the connection after that is the caller's mistake again.
    with pytest.raises(StateError):
        server.next_message()


def test_wrong_authority_key_is_rejected() -> None:
    _, other = generate_keypair()
    client, server = pair(authority=other)
    server.receive_data(client.data_to_send())
    with pytest.raises(AuthorityKeyMismatch):
        client.receive_data(server.data_to_send())
    assert client.state is State.CLOSED
    with pytest.raises(StateError):
        client.receive_data(b"x")


def test_expired_certificate_is_rejected() -> None:
    client, server = pair(now=time.time() + 7200)
    server.receive_data(client.data_to_send())
    with pytest.raises(CertificateExpired):
        client.receive_data(server.data_to_send())


@pytest.mark.parametrize("offset", [10, 100, 200])
def test_tampered_act2_is_rejected(offset: int) -> None:
    client, server = pair()
    server.receive_data(client.data_to_send())
    act2 = bytearray(server.data_to_send())
    act2[offset] ^= 1
    with pytest.raises(ProtocolError):  # DecryptError (MAC) or a bad ephemeral key
        client.receive_data(bytes(act2))


def test_truncated_handshake_at_eof() -> None:
    client, server = pair()
    server.receive_data(client.data_to_send()[:63])
    assert server.state is State.HANDSHAKE
    with pytest.raises(HandshakeTruncated):
        server.eof()
    client2, server2 = pair()
    server2.receive_data(client2.data_to_send())
    client2.receive_data(server2.data_to_send()[:233])
    with pytest.raises(HandshakeTruncated):
        client2.eof()


def test_truncated_frame_at_eof() -> None:
    client, server = pair()
    handshake(client, server)
    wire = client.send(share(1))
    server.receive_data(wire[:-1])
    assert list(server.messages()) == []
    with pytest.raises(ProtocolError, match="inside a frame"):
        server.eof()


def test_tampered_transport_frame() -> None:
    client, server = pair()
    handshake(client, server)
    wire = bytearray(client.send(share(1)))
    wire[30] ^= 0x80  # inside the payload ciphertext
    server.receive_data(bytes(wire))
    with pytest.raises(DecryptError):
        list(server.messages())
    assert server.state is State.CLOSED


def test_replayed_frame_fails_the_mac() -> None:
    client, server = pair()
    handshake(client, server)
    wire = client.send(share(1))
    server.receive_data(wire)
    assert list(server.messages()) == [share(1)]
    server.receive_data(wire)
    with pytest.raises(DecryptError):
        list(server.messages())


def test_oversize_frame_rejected_before_buffering() -> None:
    client, _ = pair(max_payload=1 << 20)
    _, server = pair(max_payload=100)
    client = Sv2Connection(NoiseInitiator(AUTH_XONLY), max_payload=1 << 20)
    handshake(client, server)
    wire = client.send(job(1, coinbase_len=1000))
    server.receive_data(wire[:22])  # the header alone is enough to refuse
    with pytest.raises(FrameTooLarge, match="limit 100"):
        list(server.messages())


def test_outgoing_oversize_refused() -> None:
    client, server = pair(max_payload=200)
    handshake(client, server)
    # Our own message over our own limit is our bug: a local error, which an
    # `except ProtocolError` meant for a misbehaving peer must not swallow.
    with pytest.raises(LocalProtocolError, match="exceeds 200"):
        try:
            client.send(job(1, coinbase_len=1000))
        except ProtocolError:  # pragma: no cover - the failure this test guards against
            pytest.fail("outgoing oversize was reported as the peer's fault")
    assert client.state is State.TRANSPORT  # nothing was sent, the connection is intact
    assert client.send(share(1))


async def test_tcp_handshake_and_10000_messages_each_way() -> None:
    """Initiator and responder over a real socket on 127.0.0.1, 10,000 messages both ways."""
    n = 10_000
    server_got: list[object] = []
    server_done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Sv2Connection(NoiseResponder(AUTH_SECRET))
        while len(server_got) < n:
            data = await reader.read(65536)
            if not data:
                break
            conn.receive_data(data)
            writer.write(conn.data_to_send())
            for msg in conn.messages():
                server_got.append(msg)
                assert isinstance(msg, SubmitSharesExtended)
                writer.write(
                    conn.send(
                        SubmitSharesSuccess(
                            channel_id=1, last_sequence_number=msg.sequence_number,
                            new_submits_accepted_count=1, new_shares_sum=msg.nonce,
                        )
                    )
                )
            await writer.drain()
        server_done.set()
        writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = Sv2Connection(NoiseInitiator(AUTH_XONLY))
    writer.write(conn.data_to_send())
    while not conn.handshake_complete:
        conn.receive_data(await reader.read(65536))
    out = bytearray()
    for i in range(n):
        out += conn.send(share(i))
    writer.write(bytes(out))
    await writer.drain()
    acks: list[SubmitSharesSuccess] = []
    while len(acks) < n:
        data = await asyncio.wait_for(reader.read(65536), 20)
        assert data, "server closed early"
        conn.receive_data(data)
        for m in conn.messages():
            assert isinstance(m, SubmitSharesSuccess)
            acks.append(m)
    await asyncio.wait_for(server_done.wait(), 20)
    writer.close()
    srv.close()
    await srv.wait_closed()
    assert [m.sequence_number for m in server_got] == list(range(n))  # type: ignore[attr-defined]
    assert [a.last_sequence_number for a in acks] == list(range(n))
    assert [a.new_shares_sum for a in acks] == [i * 3 for i in range(n)]


def test_setup_connection_is_not_a_channel_message() -> None:
    client, server = pair()
    handshake(client, server)
    msg = SetupConnection(
        protocol=0, min_version=2, max_version=2, flags=4, endpoint_host="127.0.0.1", endpoint_port=34254,
        vendor="tproxy", hardware_version="Translator Proxy", firmware="", device_id="",
    )
    server.receive_data(client.send(msg))
    assert list(server.messages()) == [msg]


# -- frame reassembly (re-homed from the removed plaintext FrameDecoder) ----------------------
#
# Sv2Connection is the project's only frame reassembler: it cuts the
# encrypted stream into header and payload ciphertexts itself.

VECTOR_FRAMES = [
    bytes.fromhex(v["frame_hex"])
    for v in load_vector("common_messages")["vectors"]
    + load_vector("mining_messages_derived")["messages"]
]


def _decode_plain(frame: bytes) -> AnyMessage:
    h = FrameHeader.decode(frame[:HEADER_SIZE])
    return decode_message(h.extension_type, h.msg_type, frame[HEADER_SIZE:], h.channel_msg)


VECTOR_MESSAGES = [_decode_plain(f) for f in VECTOR_FRAMES]


def _wire(client: Sv2Connection, msgs: Sequence[AnyMessage]) -> bytes:
    return b"".join(client.send(msg) for msg in msgs)


def test_vector_frames_are_what_the_connection_sends() -> None:
    client, server = connected_pair()
    wire = _wire(client, VECTOR_MESSAGES)
    server.receive_data(wire)
    got = list(server.messages())
    # Byte for byte: each received message re-encodes to its vector frame.
    assert [encode_frame(msg) for msg in got] == VECTOR_FRAMES
    assert server.next_message() is None
    assert server.buffered == 0
    server.eof()  # complete frames followed by EOF: no error


def test_reassembly_byte_by_byte() -> None:
    client, server = connected_pair()
    got: list[AnyMessage] = []
    for b in _wire(client, VECTOR_MESSAGES):
        server.receive_data(bytes([b]))
        while (msg := server.next_message()) is not None:
            got.append(msg)
    assert [encode_frame(msg) for msg in got] == VECTOR_FRAMES


def test_reassembly_empty_payload_and_empty_feed() -> None:
    client, server = connected_pair()
    server.receive_data(b"")
    assert server.next_message() is None
    new_template = UnknownMessage(0, 0x71, False, b"")  # NewTemplate, zero-length payload
    wire = client.send(new_template)
    assert len(wire) == HEADER_CT_SIZE  # nothing follows the header
    server.receive_data(wire)
    msg = server.next_message()
    assert isinstance(msg, UnknownMessage) and msg.msg_type == 0x71 and msg.payload == b""
    assert server.buffered == 0


def test_reassembly_accepts_bytearray_and_memoryview() -> None:
    client, server = connected_pair()
    wire = _wire(client, VECTOR_MESSAGES[:3])
    server.receive_data(bytearray(wire[:10]))
    server.receive_data(memoryview(wire)[10:])
    assert list(server.messages()) == VECTOR_MESSAGES[:3]


def test_oversize_header_alone_is_refused_and_the_connection_stays_closed() -> None:
    client, server = connected_pair(max_payload=100)
    wire = client.send(UnknownMessage(0, 0x70, False, bytes(101)))
    server.receive_data(wire[:HEADER_CT_SIZE])  # no payload byte sent at all
    with pytest.raises(FrameTooLarge, match="101"):
        server.next_message()
    assert server.state is State.CLOSED and server.buffered == 0
    with pytest.raises(StateError):
        server.receive_data(b"\x00")
    assert issubclass(FrameTooLarge, ProtocolError)


def test_oversize_after_good_frames_keeps_them() -> None:
    client, server = connected_pair(max_payload=1000, client_max_payload=MAX_MSG_LENGTH)
    good = [share(1), share(2)]
    wire = _wire(client, good)
    huge = client.send(UnknownMessage(0, 0x70, True, bytes(MAX_MSG_LENGTH)))  # 16 MiB - 1
    server.receive_data(wire + huge[: HEADER_CT_SIZE + 500])
    it = server.messages()
    assert [next(it), next(it)] == good
    with pytest.raises(FrameTooLarge):
        next(it)


def test_exact_max_payload_is_accepted() -> None:
    client, server = connected_pair(max_payload=10)
    msg = UnknownMessage(0, 0x70, False, bytes(10))
    server.receive_data(client.send(msg))
    assert server.next_message() == msg


def test_largest_legal_length_waits_then_eof_is_truncation() -> None:
    client, server = connected_pair(MAX_MSG_LENGTH, client_max_payload=MAX_MSG_LENGTH)
    wire = client.send(UnknownMessage(0, 0x70, True, bytes(MAX_MSG_LENGTH)))
    server.receive_data(wire[:HEADER_CT_SIZE])
    assert server.next_message() is None  # header accepted, payload awaited
    assert server.buffered == 0
    with pytest.raises(ProtocolError, match="inside a frame"):
        server.eof()


def test_receive_buffer_is_bounded() -> None:
    limit = 300
    client, server = connected_pair(max_payload=limit)
    msgs = [msg for msg, f in zip(VECTOR_MESSAGES, VECTOR_FRAMES, strict=True) if len(f) - HEADER_SIZE <= limit]
    stream = _wire(client, msgs * 3)
    bound = max(HEADER_CT_SIZE, NoiseTransport.encrypted_payload_length(limit))
    got: list[AnyMessage] = []
    for i in range(0, len(stream), 7):
        server.receive_data(stream[i : i + 7])
        got.extend(server.messages())
        # Drained after every read, at most one incomplete frame is held.
        assert server.buffered < bound
    assert got == msgs * 3


def test_truncated_stream_in_header() -> None:
    client, server = connected_pair()
    wire = client.send(share(1)) + client.send(share(2))[:3]
    server.receive_data(wire)
    assert server.next_message() == share(1)
    assert server.next_message() is None
    with pytest.raises(ProtocolError, match="inside a frame"):
        server.eof()
    with pytest.raises(StateError):
        server.receive_data(b"\x00")


@pytest.mark.parametrize("max_payload", [-1, MAX_MSG_LENGTH + 1])
def test_max_payload_argument(max_payload: int) -> None:
    with pytest.raises(ValueError, match="max_payload"):
        Sv2Connection(NoiseInitiator(AUTH_XONLY), max_payload=max_payload)
    Sv2Connection(NoiseInitiator(AUTH_XONLY), max_payload=0)


def test_closing_while_iterating_ends_the_iteration() -> None:
    client, server = connected_pair()
    server.receive_data(_wire(client, [share(1), share(2), share(3)]))
    got: list[AnyMessage] = []
    for msg in server.messages():
        got.append(msg)
        server.close()  # e.g. the pool closed our only channel
    assert got == [share(1)]
    # Starting a new iteration on the closed connection is misuse.
    with pytest.raises(StateError):
        list(server.messages())


@pytest.mark.parametrize(
    "size", [0, 1, MAX_CHUNK_PLAINTEXT, MAX_CHUNK_PLAINTEXT + 1, 2 * MAX_CHUNK_PLAINTEXT + 5]
)
def test_payloads_around_the_chunk_limit(size: int) -> None:
    """send and next_message take the CipherStates directly for one chunk, the transport for
    more: either way the wire is encrypt_frame's and both nonces advance by 1 + chunks."""
    client, server = connected_pair()
    msg = UnknownMessage(extension_type=0x4242, msg_type=0x99, channel_msg=True,
                         payload=bytes(i % 251 for i in range(size)))  # fmt: skip
    tx = client.transport
    assert tx is not None
    start = tx.send_nonce
    wire = client.send(msg)
    nonces = 1 + -(-size // MAX_CHUNK_PLAINTEXT)
    assert tx.send_nonce == start + nonces
    assert len(wire) == HEADER_CT_SIZE + NoiseTransport.encrypted_payload_length(size)
    tx.send_cipher.n = start  # same key, same nonces: the general path must give the same bytes
    assert tx.encrypt_frame(encode_frame(msg)) == wire
    half = len(wire) // 2
    server.receive_data(wire[:half])
    assert server.next_message() is None
    server.receive_data(wire[half:])
    assert list(server.messages()) == [msg]
    assert server.transport is not None and server.transport.recv_nonce == start + nonces


def test_closed_connection_refuses_send_and_receive() -> None:
    client, server = connected_pair()
    wire = client.send(share(1))
    client.close()
    server.close()
    with pytest.raises(StateError, match="closed"):
        client.send(share(2))
    with pytest.raises(StateError, match="closed"):
        server.next_message()
    with pytest.raises(StateError, match="closed"):
        server.receive_data(wire)


def test_nonce_exhaustion_through_the_connection() -> None:
    """The connection's direct cipher calls keep CipherState's nonce limits and errors."""
    last = (1 << 64) - 1  # Noise reserves this nonce
    client, server = connected_pair()
    assert client.transport is not None and server.transport is not None
    tx, rx = client.transport.send_cipher, server.transport.recv_cipher
    tx.n = rx.n = last - 2
    server.receive_data(client.send(share(1)))  # the last two usable nonces
    assert list(server.messages()) == [share(1)] and tx.n == rx.n == last
    with pytest.raises(StateError, match="exhausted"):
        client.send(share(2))
    assert tx.n == last and client.state is State.TRANSPORT  # our limit, not the peer's fault
    # The header would take the last usable nonce, the payload has none left: as two calls.
    tx.n = last - 1
    with pytest.raises(StateError, match="exhausted"):
        client.send(share(3))
    assert tx.n == last
    # A peer that sends past its last nonce is a protocol error and closes the connection.
    server.receive_data(bytes(HEADER_CT_SIZE))
    with pytest.raises(ProtocolError, match="exhausted"):
        server.next_message()
    assert server.state is State.CLOSED
