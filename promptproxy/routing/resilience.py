"""The retry policy: how often and how long to wait before asking a deployment again, and upstream Retry-After."""
from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait before trying the same model again."""

    max_retries: int = 2
    backoff: float = 0.5
    backoff_max: float = 8.0
    retry_after_cap: float = 20.0

    @classmethod
    def from_config(cls, cfg) -> RetryPolicy:
        """Read RETRY_* settings."""
        return cls(int(cfg.get("RETRY_MAX", 2)), float(cfg.get("RETRY_BACKOFF", 0.5)),
                   float(cfg.get("RETRY_BACKOFF_MAX", 8.0)), float(cfg.get("RETRY_AFTER_CAP", 20.0)))

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number `retry` (1-based); None when Retry-After exceeds the cap."""
        if retry_after is not None:
            return retry_after if retry_after <= self.retry_after_cap else None
        top = min(self.backoff_max, self.backoff * 2 ** (retry - 1))
        # Jitter, so many clients do not retry in lockstep (not a security use of randomness).
        return random.uniform(top / 2, top)  # nosec B311


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date); None when absent or bad."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0) if when else None
