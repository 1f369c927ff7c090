"""Which upstream serves a call: retries, fallbacks, deployments, breakers and health."""
