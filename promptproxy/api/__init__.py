"""The /v1 JSON API blueprint (routes.bp)."""
