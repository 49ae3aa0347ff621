"""The translator application: SV1 server, SV2 upstream, bridge, share log, CLI."""
