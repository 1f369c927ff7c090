"""The request path: resolve, inject, send, relay, record."""
