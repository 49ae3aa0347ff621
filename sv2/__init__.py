"""Stratum V2 protocol library, sans-IO.

Owns the wire format (codec, framing, messages), the Noise NX transport (a
DH-agnostic Noise core in ``noise_core``; the SV2 ElligatorSwift DH,
handshake roles, certificates and transport cipher in ``noise``), the
per-connection state machine and the mining work arithmetic. Errors are split
as in h11: ``ProtocolError`` for the peer's bad bytes, ``LocalProtocolError``
for the caller's misuse (see ``errors``). Nothing in this package touches a socket,
a clock it was not given, or asyncio.
"""
