"""Inbound API dialects: pure wire translation for each client-facing API shape."""
