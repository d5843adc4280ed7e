"""The parser reads what models really emit and never raises."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taco_app.cota.actions import Action
from taco_app.cota.parser import ParsedStep, ParseFailure, _parse, parse, partial_thought
from taco_app.cota.traces import load_trace

from .conftest import examples

OCR = Action("OCR", {"image": "image-0"})
COMPACT = '{"thought":"read it","actions":[{"name":"OCR","arguments":{"image":"image-0"}}]}'


@pytest.mark.reference
def test_all_reference_outputs_parse_like_json_loads(reference):
    outputs = [out for path in sorted((reference / "traces").glob("*.json")) for out in load_trace(path).assistant_outputs()]
    assert len(outputs) == 289
    for raw in outputs:
        expected = json.loads(raw)
        result = parse(raw)
        assert isinstance(result, ParsedStep), raw
        assert result.thought == expected["thought"]
        assert result.action == (Action.from_dict(expected["actions"][0]) if expected["actions"] else None)


@pytest.mark.parametrize(
    "text",
    [
        COMPACT,
        f"```json\n{COMPACT}\n```",
        f"```\n{COMPACT}\n```",
        f"Sure! Here is my step:\n{COMPACT}\nLet me know.",
        '{"thought": "read it", "actions": [{"name": "OCR", "arguments": {"image": "image-0",},},],}',
        "{'thought': 'read it', 'actions': [{'name': 'OCR', 'arguments': {'image': 'image-0'}}]}",
        COMPACT + ".",
        '{"thought":"read it","actions":{"name":"OCR","arguments":{"image":"image-0"}}}',
        '{"thought":"read it","actions":[{"name":"OCR","arguments":{"image":"image-0"',  # cut off by the token limit
    ],
)
def test_tolerated_forms(text):
    assert parse(text) == ParsedStep("read it", OCR)


def test_apostrophes_and_quotes_inside_strings():
    text = """{'thought': "I'll read the {sign}", 'actions': [{'name': 'OCR', 'arguments': {'image': 'image-0'}}]}"""
    assert parse(text) == ParsedStep("I'll read the {sign}", OCR)


def test_python_literals_become_json():
    result = parse("{'thought': 'x', 'actions': [{'name': 'Terminate', 'arguments': {'answer': True}}]}")
    assert result.action == Action("Terminate", {"answer": True})


def test_empty_actions_is_no_action():
    assert parse('{"thought":"look again","actions":[]}') == ParsedStep("look again", None)


def test_first_action_only():
    text = '{"thought":"t","actions":[{"name":"OCR","arguments":{"image":"image-0"}},{"name":"Terminate","arguments":{"answer":"x"}}]}'
    assert parse(text).action == OCR


@pytest.mark.parametrize(
    "text,code",
    [
        ("", "json"),
        ("I think the answer is 42.", "json"),
        ('{"thought": "unterminated', "unknown"),  # closed by the repair, then no actions
        ('{"thought": "x" "actions": []}', "json"),
        ('{"thought": "no actions"}', "unknown"),
        ('{"actions": [{"name": "OCR"}]}', "unknown"),
        ('{"actions": [{"arguments": {}}]}', "unknown"),
        ('{"actions": "OCR"}', "unknown"),
        ('{"actions": [{"name": 3, "arguments": {}}]}', "unknown"),
        ('{"actions": [{"name": "OCR", "arguments": [1]}]}', "unknown"),
        ("[1, 2, 3]", "unknown"),
    ],
)
def test_failures_are_typed(text, code):
    result = parse(text)
    assert isinstance(result, ParseFailure) and result.code == code and result.message


def test_json_error_message_is_tacos():
    assert parse("hello").message == "<class 'json.decoder.JSONDecodeError'>: Expecting value: line 1 column 1 (char 0)."


@pytest.mark.parametrize(
    "text",
    ["{" * 10_000, "[" * 10_000 + "]" * 10_000, '{"a":' * 10_000 + "1" + "}" * 10_000, "{" + "x" * 1_000_000, "'" * 50_000, "{'" * 20_000],
)
def test_hostile_text_is_bounded(text):
    result = parse(text)
    assert isinstance(result, (ParsedStep, ParseFailure))


def test_huge_numbers():
    result = parse('{"thought":"t","actions":[{"name":"Calculate","arguments":{"expression":1e309}}]}')
    assert result.action.arguments["expression"] == float("inf")


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_never_raises_on_any_text(text):
    # parse() turns any exception into a ParseFailure, so it is the parser inside that must not raise.
    assert isinstance(_parse(text), (ParsedStep, ParseFailure))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=examples(300), deadline=None)
@given(thought=st.text(), name=st.text(min_size=1), arguments=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
       prose=st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=40), fenced=st.booleans())
def test_round_trips_any_valid_step(thought, name, arguments, prose, fenced):
    body = json.dumps({"thought": thought, "actions": [{"name": name, "arguments": arguments}]})
    text = f"{prose}\n```json\n{body}\n```" if fenced else f"{prose} {body}"
    assert parse(text) == ParsedStep(thought, Action(name, arguments))


@settings(max_examples=examples(200), deadline=None)
@given(st.text(), st.integers(min_value=0, max_value=200))
def test_partial_thought_on_any_prefix(thought, cut):
    full = json.dumps({"thought": thought, "actions": []})
    prefix = full[: cut]
    value = partial_thought(prefix)
    assert value is None or thought.startswith(value)
    assert partial_thought(full) == thought


def test_partial_thought_streams():
    assert partial_thought('{"thou') is None
    assert partial_thought('{"thought":"I need to re') == "I need to re"
    assert partial_thought('{"thought": "say \\"hi\\"\\n') == 'say "hi"\n'
