"""Stratum V2 protocol library, sans-IO.

Owns the wire format (codec, framing, messages), the Noise NX transport
(handshake, certificates, transport cipher), the per-connection state machine
and the mining work arithmetic. Nothing in this package touches a socket,
a clock it was not given, or asyncio.
"""
