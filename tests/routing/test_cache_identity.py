"""The response cache keys on the stored prompt as injected (its id, mode and version content), not on its name."""
from __future__ import annotations

import pytest

from promptproxy import manage
from promptproxy.cli import cli
from promptproxy.extensions import db

from .conftest import chat

TRANSLATE = {"model": "gpt-4o-mini:translator",
             "messages": [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "hi"}]}


@pytest.fixture
def cached(app, seeded):
    """gpt-4o-mini with a 60 s cache, per user; `translator` is a prepend prompt."""
    with app.app_context():
        manage.update_model("t", manage.get_model("gpt-4o-mini"), cache_ttl=60)
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()
    return seeded


def run_cli(app, *args) -> None:
    """A prompt command, as an operator types it; the gateway sees the change on its next request."""
    result = app.test_cli_runner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    app.extensions["promptproxy"].catalog.invalidate()


def system_messages(request: dict) -> list[str]:
    """The system messages an upstream received."""
    return [m["content"] for m in request["body"]["messages"] if m["role"] == "system"]


def test_a_recreated_prompt_never_gets_the_old_prompts_cached_answer(client, cached, upstream, app):
    first = chat(client, cached.key, TRANSLATE)
    assert first.headers["x-cache"] == "MISS" and len(upstream.requests) == 1
    run_cli(app, "prompt", "delete", "translator")
    run_cli(app, "prompt", "create", "translator", "--text", "Translate the user's words into German.")
    again = chat(client, cached.key, TRANSLATE)
    assert again.status_code == 200 and again.headers["x-cache"] == "MISS"  # same name, same version 1: new prompt
    assert len(upstream.requests) == 2
    assert system_messages(upstream.last)[0] == "Translate the user's words into German."
    assert chat(client, cached.key, TRANSLATE).headers["x-cache"] == "HIT"  # the new prompt's answer is cached
    assert len(upstream.requests) == 2


def test_a_mode_change_never_gets_an_answer_cached_under_the_old_mode(client, cached, upstream, app):
    assert chat(client, cached.key, TRANSLATE).headers["x-cache"] == "MISS"
    assert system_messages(upstream.last) == ["Translate the user's words into French.", "Answer in one word."]
    run_cli(app, "prompt", "update", "translator", "--mode", "replace")
    with app.app_context():
        assert manage.get_prompt("translator").latest_version == 1  # a mode change saves no new version
    replaced = chat(client, cached.key, TRANSLATE)
    assert replaced.headers["x-cache"] == "MISS" and len(upstream.requests) == 2
    assert system_messages(upstream.last) == ["Translate the user's words into French."]
    run_cli(app, "prompt", "update", "translator", "--mode", "prepend")
    assert chat(client, cached.key, TRANSLATE).headers["x-cache"] == "HIT"  # prepend's own answer, still fresh
    assert len(upstream.requests) == 2


def test_a_new_version_text_is_a_miss_and_the_same_prompt_still_hits(client, cached, upstream, app):
    chat(client, cached.key, TRANSLATE)
    assert chat(client, cached.key, TRANSLATE).headers["x-cache"] == "HIT" and len(upstream.requests) == 1
    run_cli(app, "prompt", "update", "translator", "--text", "Translate the user's words into Spanish.")
    assert chat(client, cached.key, TRANSLATE).headers["x-cache"] == "MISS" and len(upstream.requests) == 2
    assert system_messages(upstream.last)[0] == "Translate the user's words into Spanish."
