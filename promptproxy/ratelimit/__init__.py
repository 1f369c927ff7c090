"""Rate limits, concurrency caps and budgets: what the limiter admits and settles."""
