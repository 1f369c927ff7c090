"""Inbound API dialects on the one request pipeline: OpenAI, Anthropic Messages, OpenAI Responses."""
