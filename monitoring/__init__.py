"""Monitoring: SnapshotCache, Prometheus exposition and the JSON HTTP API."""
