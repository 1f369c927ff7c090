"""Variables: filled from prompt_variables, declared defaults, missing is a 400, values stay literal."""
from __future__ import annotations

import openai
import pytest
import requests

from promptproxy import manage

from ..conftest import log_rows
from .conftest import chat, system_text

TEXT = "Speak {{lang}} to {{ name }}. Tone: {{tone}}."


@pytest.fixture
def greeter(change):
    """A prompt with three variables, one of them declared with a default."""
    change(lambda _: manage.create_prompt("t", "greeter", TEXT, variables={"tone": "friendly"}), None)


def ask(sdk, variables=None, model="gpt-4o-mini:greeter"):
    """Chat with prompt_variables in the body (extra_body, as SDK users send it); None sends none."""
    return chat(sdk, model, extra_body=None if variables is None else {"prompt_variables": variables})


def test_values_and_declared_defaults_fill_the_text(sdk, upstream, greeter):
    ask(sdk, {"lang": "French", "name": "Ana"})
    assert system_text(upstream.last) == "Speak French to Ana. Tone: friendly."
    ask(sdk, {"lang": "French", "name": "Ana", "tone": "formal"})
    assert system_text(upstream.last) == "Speak French to Ana. Tone: formal."
    assert "prompt_variables" not in upstream.last["body"], "the gateway's own field must not reach the upstream"


def test_missing_variable_is_400_naming_it_and_nothing_is_sent(sdk, upstream, app, greeter):
    with pytest.raises(openai.BadRequestError) as info:
        ask(sdk, {"lang": "French"})
    err = info.value.body
    assert err == {"message": "Missing prompt variable(s): name", "type": "invalid_request_error",
                   "param": "prompt_variables", "code": "missing_prompt_variable"}
    with pytest.raises(openai.BadRequestError) as info:
        ask(sdk)
    assert info.value.body["message"] == "Missing prompt variable(s): lang, name"
    assert upstream.requests == []
    assert [(r.status, r.error_type, r.prompt) for r in log_rows(app)] == [
        (400, "missing_prompt_variable", "greeter")] * 2


def test_extra_variables_are_ignored(sdk, upstream):
    ask(sdk, {"unused": "x", "also": 3}, model="gpt-4o-mini:translator")
    assert system_text(upstream.last) == "Translate the user's words into French."


@pytest.mark.parametrize("value", [
    "{{tone}}", "{{ lang }}", "{% for x in range(3) %}{{ 7*7 }}{% endfor %}", "${HOME} %(name)s {0} \\1 \\g<0>",
    "{{ ''.__class__.__mro__ }}", "}}{{", "{#{{name}}#}",
])
def test_values_with_template_syntax_stay_literal_and_are_not_re_expanded(sdk, upstream, greeter, value):
    ask(sdk, {"lang": value, "name": "Ana", "tone": "{{lang}}"})
    assert system_text(upstream.last) == f"Speak {value} to Ana. Tone: {{{{lang}}}}."


def test_stored_text_with_template_syntax_is_sent_literally(sdk, upstream, change):
    text = "Compute {{7*7}} and {% if x %}x{% endif %} and {{ name }}."
    change(lambda _: manage.create_prompt("t", "tricky", text), None)
    ask(sdk, {"name": "{{name}}"}, model="gpt-4o-mini:tricky")
    assert system_text(upstream.last) == "Compute {{7*7}} and {% if x %}x{% endif %} and {{name}}."


@pytest.mark.parametrize(("value", "text"), [(3, "3"), (2.5, "2.5"), (True, "true"), (False, "false"), ("", "")])
def test_numbers_and_booleans_become_text(sdk, upstream, greeter, value, text):
    ask(sdk, {"lang": value, "name": "Ana"})
    assert system_text(upstream.last) == f"Speak {text} to Ana. Tone: friendly."


@pytest.mark.parametrize("value", [None, {"a": 1}, ["French"]])
def test_null_objects_and_arrays_are_400_naming_the_variable(sdk, upstream, greeter, value):
    with pytest.raises(openai.BadRequestError) as info:
        ask(sdk, {"lang": value, "name": "Ana"})
    assert info.value.body["message"] == "Prompt variable `lang` must be a string, number or boolean"
    assert info.value.param == "prompt_variables"
    assert upstream.requests == []


@pytest.mark.parametrize("variables", ["French", ["French"], 1])
def test_prompt_variables_must_be_an_object(sdk, upstream, greeter, variables):
    with pytest.raises(openai.BadRequestError) as info:
        ask(sdk, variables)
    assert info.value.body["message"] == "`prompt_variables` must be an object"
    assert upstream.requests == []


def test_prompt_variables_without_a_stored_prompt_is_400(sdk, upstream):
    with pytest.raises(openai.BadRequestError) as info:
        ask(sdk, {"lang": "French"}, model="gpt-4o-mini")
    assert info.value.param == "prompt_variables"
    assert upstream.requests == []


def test_huge_integer_value_is_a_400_not_a_500(live, seeded, upstream, greeter):
    body = b'{"model": "gpt-4o-mini:greeter", "messages": [{"role": "user", "content": "hi"}], ' \
           b'"prompt_variables": {"lang": 1' + b"0" * 5000 + b', "name": "x"}}'
    resp = requests.post(live + "/v1/chat/completions", data=body, timeout=10,
                         headers={"Authorization": f"Bearer {seeded.key}", "Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


def test_variables_in_completions_with_string_and_array_prompts(sdk, upstream, greeter):
    extra = {"prompt_variables": {"lang": "Dutch", "name": "Bo"}}
    sdk.completions.create(model="text-davinci:greeter", prompt="Hello", extra_body=extra)
    assert upstream.last["body"]["prompt"] == "Speak Dutch to Bo. Tone: friendly.\n\nHello"
    sdk.completions.create(model="text-davinci:greeter", prompt=["One", "Two"], extra_body=extra)
    assert upstream.last["body"]["prompt"] == ["Speak Dutch to Bo. Tone: friendly.\n\nOne",
                                               "Speak Dutch to Bo. Tone: friendly.\n\nTwo"]
    assert upstream.last["body"]["model"] == "davinci-002"


def test_completions_with_token_array_prompt_and_a_stored_prompt_is_400(sdk, upstream):
    with pytest.raises(openai.BadRequestError) as info:
        sdk.completions.create(model="text-davinci:translator", prompt=[1, 2, 3])
    assert info.value.param == "prompt"
    assert upstream.requests == []
    sdk.completions.create(model="text-davinci", prompt=[1, 2, 3])  # without a stored prompt it passes through
    assert upstream.last["body"]["prompt"] == [1, 2, 3]


def test_stored_prompt_on_an_embedding_model_is_400(sdk, upstream):
    with pytest.raises(openai.BadRequestError) as info:
        sdk.embeddings.create(model="embed:translator", input="hi")
    assert (info.value.code, info.value.param) == ("prompt_not_supported", "model")
    assert upstream.requests == []
