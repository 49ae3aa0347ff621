"""Shared test helpers (not test modules): the dev-pool + proxy stack, a scripted SV1 client."""
