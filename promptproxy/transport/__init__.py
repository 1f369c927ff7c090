"""Upstream HTTP: pooled connections that reach only public hosts, bounded reads."""
