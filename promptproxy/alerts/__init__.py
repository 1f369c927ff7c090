"""Alerts by webhook: events from the request path, a durable outbox, and the thread that delivers it."""
