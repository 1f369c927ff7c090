"""Shared types every layer may use: gateway errors, the per-request Call record, reading within a deadline."""
