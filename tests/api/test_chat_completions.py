"""End-to-end chat completions through the official openai SDK against a real local upstream."""
from __future__ import annotations

import openai
import pytest

from ..conftest import log_rows


@pytest.fixture
def sdk(live, seeded):
    """The official OpenAI client pointed at the gateway."""
    with openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0, timeout=30) as client:
        yield client


def test_stored_prompt_injected_first_and_upstream_gets_real_name_and_key(sdk, upstream, app, seeded):
    resp = sdk.chat.completions.create(
        model="gpt-4o-mini:translator", messages=[{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": "Good morning"}])
    assert resp.choices[0].message.content == "Bonjour!"
    assert resp.model == "gpt-4o-mini"
    sent = upstream.last
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["model"] == "real-model-name:latest"
    assert sent["body"]["messages"] == [
        {"role": "system", "content": "Translate the user's words into French."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Good morning"},
    ]
    assert sent["headers"]["Authorization"] == "Bearer sk-upstream-secret-1234"
    assert seeded.key not in str(sent["headers"])
    [row] = log_rows(app)
    assert (row.status, row.model, row.prompt, row.prompt_version) == (200, "gpt-4o-mini", "translator", 1)
    assert (row.input_tokens, row.output_tokens) == (11, 7)
    assert row.cost == pytest.approx((11 * 1.0 + 7 * 2.0) / 1e6)
    assert row.user_id == seeded.user_id and row.error_type is None


def test_unknown_fields_and_zero_temperature_pass_through_untouched(sdk, upstream):
    sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], temperature=0,
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
        extra_body={"top_k": 5, "my_vendor_flag": {"nested": [1, 2]}})
    body = upstream.last["body"]
    assert body["temperature"] == 0
    assert body["top_k"] == 5
    assert body["my_vendor_flag"] == {"nested": [1, 2]}
    assert body["tools"][0]["function"]["name"] == "f"
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_models_list_shows_models_and_prompt_combinations(sdk):
    ids = {m.id for m in sdk.models.list()}
    assert {"gpt-4o-mini", "gpt-4o-mini:translator", "embed", "text-davinci:translator"} <= ids
    assert "embed:translator" not in ids
