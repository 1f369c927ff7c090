"""The call lifecycle: resolve, inject, send, relay, record; features register on its stages."""
