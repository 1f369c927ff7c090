"""What the gateway records: the request-log writer and tracing."""
