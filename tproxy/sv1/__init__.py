"""The downstream side: everything between the proxy and its SV1 miners.

Rooms, each owning one thing:

* ``protocol`` -- the SV1 JSON-RPC codec (sans-IO): lines in, typed requests
  out, and the serializers for every line we send.
* ``session`` -- one miner's policy (``MinerSession``, sans-IO): a request and
  the clock in, reply bytes and typed events (``Share``, ``MinerReady``) out.
* ``vardiff`` -- per-miner variable difficulty (pure, clock injected).
* ``hub`` -- every session (``Hub``): extranonce1 allocation, job fan-out,
  vardiff ticks, the outage watchdog, and the hand-off of shares to the
  upstream side and the share log.
* ``server`` -- the TCP listener (``Sv1Server``): sockets, limits, line
  buffering, writes.

This package never imports ``tproxy.upstream``: it talks to the upstream side
only in the event types of ``tproxy.events``.
"""
