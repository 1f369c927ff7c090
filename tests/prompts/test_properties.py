"""Property tests: the `model` string parser and variable rendering."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptproxy.core.grammar import ModelRef, parse_model, valid_label, valid_slug
from promptproxy.core.prompts import PromptError, render, variables_in

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
slugs = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._/\-]{0,40}\Z")
labels = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._\-]{0,20}\Z").filter(lambda s: not s.isdigit())
names = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,10}\Z")
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


# -- the model string ----------------------------------------------------------------------------------
@FAST
@given(st.text(max_size=80) | st.from_regex(r"\A[a-z:@0-9]{0,12}\Z"))
def test_parse_model_returns_a_ref_or_raises_value_error_only(value):
    try:
        ref = parse_model(value)
    except ValueError:
        return
    assert isinstance(ref, ModelRef) and ref.model
    assert ref.prompt is None or (ref.prompt and ":" not in ref.prompt)
    assert ref.version is None or ref.version


@FAST
@given(slugs, st.none() | slugs, st.none() | labels | st.integers(1, 10**6).map(str))
def test_valid_parts_round_trip(model, prompt, version):
    value = model + (f":{prompt}" if prompt else "") + (f"@{version}" if prompt and version else "")
    assert parse_model(value) == ModelRef(model, prompt, version if prompt else None)
    assert valid_slug(model) and (prompt is None or valid_slug(prompt))


@FAST
@given(st.text(max_size=40))
def test_slugs_and_labels_never_contain_separators(value):
    if valid_slug(value) or valid_label(value):
        assert ":" not in value and "@" not in value and value.strip() == value
    if valid_label(value):
        assert not value.isdigit()


def test_parse_model_examples():
    assert parse_model("gpt-4o-mini") == ModelRef("gpt-4o-mini")
    assert parse_model("gpt-4o-mini:translator@production") == ModelRef("gpt-4o-mini", "translator", "production")
    assert parse_model("org/llama3:p@3") == ModelRef("org/llama3", "p", "3")
    for bad in ("", ":p", "m@1", "m:", "m:@1", "m:p@", "m:a:b", "x" * 513, None, 5):
        try:
            parse_model(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


# -- rendering -----------------------------------------------------------------------------------------
@FAST
@given(st.text(max_size=60) | st.from_regex(r"\A[{} a-z%]{0,30}\Z"),
       st.none() | json_values, st.none() | st.dictionaries(names, json_scalars, max_size=3))
def test_render_returns_text_or_raises_prompt_error_only(text, values, defaults):
    try:
        out = render(text, values, defaults)
    except PromptError as exc:
        assert exc.param == "prompt_variables"
        return
    assert isinstance(out, str)


literal = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=8)


@FAST
@given(st.lists(st.tuples(literal, names), min_size=1, max_size=5), literal, st.data())
def test_each_placeholder_is_replaced_once_by_its_literal_value(parts, tail, data):
    used = {name for _, name in parts}
    values = {name: data.draw(st.text(max_size=20) | st.sampled_from(["{{" + n + "}}" for n in used]) |
                              st.just("{% raw %}{{x}}"), label=name) for name in used}
    text = "".join(f"{lit}{{{{{name}}}}}" for lit, name in parts) + tail
    expected = "".join(lit + values[name] for lit, name in parts) + tail
    assert render(text, values) == expected


@FAST
@given(st.text(max_size=60))
def test_text_without_variables_is_returned_byte_for_byte(text):
    if not variables_in(text):
        assert render(text, None) == text
        assert render(text, {"x": "{{y}}"}) == text


@FAST
@given(st.lists(names, min_size=1, max_size=4, unique=True), st.data())
def test_missing_variables_are_all_named(declared, data):
    given_names = data.draw(st.sets(st.sampled_from(declared)))
    text = " ".join("{{ " + n + " }}" for n in declared)
    missing = [n for n in declared if n not in given_names]
    try:
        render(text, {n: "v" for n in given_names})
    except PromptError as exc:
        assert missing and str(exc) == f"Missing prompt variable(s): {', '.join(missing)}"
        assert exc.code == "missing_prompt_variable"
    else:
        assert not missing
