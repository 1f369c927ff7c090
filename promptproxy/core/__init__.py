"""Shared types every layer may use: gateway errors and the per-request Call record."""
