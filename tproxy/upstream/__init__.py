"""The upstream side: everything between the proxy and its SV2 pools.

Rooms, each owning one thing:

* ``connection`` -- one live pool connection (``UpstreamConnection``): TCP,
  Noise NX, SetupConnection, a bounded write buffer; messages in arrival order.
* ``supervisor`` -- which pool we are connected to (``UpstreamSupervisor``):
  ordered upstream list, backoff, failover, fail-back, the pool's Reconnect.
* ``channel`` -- what the pool told us about one extended channel
  (``ChannelState``, sans-IO): extranonce layout, future/active jobs, targets,
  sequence numbers. It builds the ``tproxy.events.Job`` objects.
* ``manager`` -- the policy over the channels (``ChannelManager``): aggregated
  or per-miner channels, routing, share forwarding, verdict attribution,
  UpdateChannel, keepalive jobs, difficulty floors, CloseChannel.

This package never imports ``tproxy.sv1``: it talks to the SV1 side only in
the event types of ``tproxy.events``.
"""
