"""Tests for the inbound API dialects."""
