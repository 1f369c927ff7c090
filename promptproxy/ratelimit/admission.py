"""What the limiter hands the pipeline: an admission to settle once, and the no-limits limiter."""
from __future__ import annotations


class Admission:
    """What the limiter admitted for one call: response headers, then settle or release once."""

    headers: dict = {}

    def finish(self, call) -> None:
        """Settle usage and cost (or release the reservation if nothing was used)."""


class NullLimiter:
    """Admits everything; replaced by the configured limiter."""

    alerts = None

    def admit(self, call, body: dict) -> Admission:
        """Admit the call."""
        return Admission()
