"""The translator application: SV1 side (sv1/), SV2 upstream side (upstream/), the events between them, share log, CLI."""
