"""The official openai SDK against /v1/responses: any model, stored prompts, streams, stored state, errors."""
from __future__ import annotations

import openai
import pytest

from .conftest import settled_rows


@pytest.fixture
def sdk(live, seeded):
    """The official OpenAI client pointed at the gateway."""
    client = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0, timeout=20)
    yield client
    client.close()


def test_create_on_chat_model_with_stored_prompt(sdk, upstream, app, seeded):
    resp = sdk.responses.create(model="gpt-4o-mini:translator", input="Good morning", instructions="Be brief.")
    assert resp.output_text == "Bonjour!" and resp.status == "completed" and resp.model == "gpt-4o-mini"
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (11, 7)
    sent = upstream.last
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["model"] == "real-model-name:latest"
    assert sent["body"]["messages"] == [{"role": "system", "content": "Translate the user's words into French."},
                                        {"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Good morning"}]
    [row] = settled_rows(app)
    assert (row.inbound_format, row.endpoint, row.status, row.prompt) == ("responses", "/v1/responses", 200,
                                                                          "translator")
    assert (row.input_tokens, row.output_tokens, row.user_id) == (11, 7, seeded.user_id)
    assert row.cost == pytest.approx((11 * 1.0 + 7 * 2.0) / 1e6)


def test_stream_event_sequence_and_stored_response(sdk, upstream, app):
    with sdk.responses.stream(model="gpt-4o-mini", input="Hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and final.output_text == "Bonjour!"
    again = sdk.responses.retrieve(final.id)
    assert again.output_text == "Bonjour!" and again.id == final.id
    follow = sdk.responses.create(model="gpt-4o-mini", input="And again?", previous_response_id=final.id)
    assert follow.previous_response_id == final.id
    assert upstream.last["body"]["messages"] == [{"role": "user", "content": "Hi"},
                                                 {"role": "assistant", "content": "Bonjour!"},
                                                 {"role": "user", "content": "And again?"}]
    rows = settled_rows(app, 3)
    assert sorted((r.endpoint, r.stream, r.status) for r in rows) == [
        ("/v1/responses", False, 200), ("/v1/responses", True, 200), (f"/v1/responses/{final.id}", False, 200)]


def test_another_users_response_is_not_found(sdk, live, seeded, upstream):
    mine = sdk.responses.create(model="gpt-4o-mini", input="Hi")
    other = openai.OpenAI(base_url=live + "/v1", api_key=seeded.other_key, max_retries=0, timeout=20)
    with pytest.raises(openai.NotFoundError) as info:
        other.responses.retrieve(mine.id)
    assert info.value.body["code"] == "response_not_found"
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="gpt-4o-mini", input="x", previous_response_id=mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)
    sdk.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(mine.id)
    other.close()


def test_hosted_tool_is_a_400_naming_it(sdk, upstream):
    with pytest.raises(openai.BadRequestError) as info:
        sdk.responses.create(model="gpt-4o-mini", input="x", tools=[{"type": "file_search", "vector_store_ids": []}])
    assert info.value.body["param"] == "tools[0].type" and "file_search" in info.value.body["message"]
    assert upstream.requests == []
