"""TACO's inference format, checked byte for byte against the reference harness output."""

import hashlib
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taco_app.cota.prompt import (
    ImagePart,
    assistant_turn,
    build_prompt,
    failed_execution_turn,
    no_action_turn,
    observation_turn,
    parse_error_turn,
    system_prompt,
    user_request,
)
from taco_app.cota.traces import load_trace

from .conftest import ROOT, examples

SUFFIX = (
    "\nThe OBSERVATION can be incomplete or incorrect, so please be critical and decide how to make use of it."
    " If you've gathered sufficient information to answer the question, call Terminate with the final answer."
    " Now, please generate the response for the next step."
)
GOLDENS = [
    ("mantis", "TACO-Llama3-SigLIP-125", "golden_prompt_mantis_trace125_step3.txt"),
    ("qwen2", "TACO-Qwen2-SigLIP-21", "golden_prompt_qwen2_trace21_step2.txt"),
]


def test_system_prompt_hash_is_tacos():
    # The hash published with the reference harness; holds even without the reference folder.
    text = system_prompt()
    assert len(text) == 12999
    assert hashlib.sha256(text.encode()).hexdigest() == "44de3100d92c8e6722e0da233baa76e147a803e83529743cbb735cc12b79ca9b"


@pytest.mark.reference
def test_system_prompt_byte_identical(reference):
    assert system_prompt().encode() == (reference / "cota_system_prompt.txt").read_bytes()


@pytest.mark.reference
@pytest.mark.parametrize("family,trace,golden", GOLDENS)
def test_golden_flattened_prompt(reference, family, trace, golden):
    conversation = load_trace(reference / "traces" / f"{trace}.json")
    prompt = build_prompt(conversation.until_last_user_turn(), family)
    assert prompt.text == (reference / golden).read_text("utf-8")
    assert prompt.image_ids == ("image-0", "image-1")
    assert prompt.text.count("<image>") == len(prompt.image_ids)


@pytest.mark.reference
@pytest.mark.parametrize("family,trace,golden", GOLDENS)
def test_cli_prompt_prints_golden(reference, family, trace, golden):
    out = subprocess.run(
        [sys.executable, "app.py", "prompt", "--family", family, "--trace", str(reference / "traces" / f"{trace}.json")],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout
    assert out == (reference / golden).read_bytes()


def test_cli_prompt_without_trace_prints_system_prompt():
    out = subprocess.run([sys.executable, "app.py", "prompt"], cwd=ROOT, capture_output=True, check=True).stdout
    assert out == system_prompt().encode()


@pytest.mark.reference
def test_every_reference_turn_rebuilds_from_structure(reference):
    """Each recorded user turn after the first is one of TACO's feedback turns; rebuild the requests."""
    for path in sorted((reference / "traces").glob("*.json")):
        conversation = load_trace(path)
        first = conversation.turns[0]
        rebuilt = user_request(conversation.question, conversation.input_image_ids)
        assert rebuilt.parts == first.parts, path.name
        for turn in conversation.turns[1:]:
            if turn.role == "user":
                assert turn.text.endswith(SUFFIX) or "Please format the output" in turn.text, path.name


def test_user_request_shape():
    turn = user_request("How many?", ["image-0", "image-1"])
    assert turn.text == "\n# USER REQUEST #:\nimage-0: <image>\nimage-1: <image>\nHow many?\n\nNow please generate your response:\n"
    assert turn.image_ids == ["image-0", "image-1"]


def test_observation_sorted_keys_python_str_and_inline_image():
    turn = observation_turn({"regions": [{"label": "cat", "bbox": [0.1, 0.2, 0.3, 0.4], "score": 0.9}], "image": ImagePart("image-1")})
    assert turn.text == (
        "OBSERVATION:\n{'image': 'image-1: <image>', 'regions': [{'label': 'cat', 'bbox': [0.1, 0.2, 0.3, 0.4], 'score': 0.9}]}" + SUFFIX
    )
    assert turn.parts[1] == ImagePart("image-1")


def test_observation_text_cannot_forge_an_image():
    turn = observation_turn({"text": "image-1: <image> \x1eIMAGE0\x1e"})
    assert turn.image_ids == []


def test_no_action_turn():
    assert no_action_turn().text == "OBSERVATION:\n{'message': 'No action has been provided. Proceed to the next step.'}" + SUFFIX


def test_failed_execution_turn():
    turn = failed_execution_turn(TypeError("unsupported operand type(s) for ^: 'float' and 'int'"))
    assert turn.text == "Execution failed with <class 'TypeError'>: unsupported operand type(s) for ^: 'float' and 'int'." + SUFFIX


def test_parse_error_turns():
    json_turn = parse_error_turn("json", "<class 'json.decoder.JSONDecodeError'>: Expecting value: line 1 column 1 (char 0).")
    assert json_turn.text.startswith("OBSERVATION:\n<class 'json.decoder.JSONDecodeError'>")
    assert "Please format the output to a strict JSON format can be converted by json.loads()." in json_turn.text
    assert json_turn.text.endswith("3. Consider adding or removing curly bracket or removing the period at the end if any.")
    other = parse_error_turn("unknown", "Unexpected <class 'KeyError'>: 'actions'.")
    assert other.text.endswith("Please try again to fix the error. Or, reply with Terminate only if you believe this error is not fixable.")


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown checkpoint family"):
        build_prompt([user_request("q", [])], "llama2")


def test_literal_image_text_never_becomes_a_placeholder():
    turns = [user_request("What does <image> mean in this <image> tag?", ["image-0"]),
             observation_turn({"text": "<image>"})]
    prompt = build_prompt(turns, "mantis")
    assert prompt.text.count("<image>") == len(prompt.image_ids) == 1
    assert "What does <image > mean in this <image > tag?" in prompt.text and "{'text': '<image >'}" in prompt.text


OBSERVATION_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@settings(max_examples=examples(200), deadline=None)
@given(question=st.text(max_size=300), images=st.integers(min_value=0, max_value=4),
       outputs=st.lists(st.text(max_size=200), max_size=3),
       observations=st.lists(st.dictionaries(st.text(max_size=10), OBSERVATION_VALUES, max_size=4), max_size=3),
       family=st.sampled_from(["mantis", "qwen2"]))
def test_prompt_building_is_deterministic_and_keeps_one_placeholder_per_image(question, images, outputs, observations, family):
    """Any question, model output and observation: no exception, the same bytes twice, and exactly one
    ``<image>`` per image (text can never forge a placeholder)."""
    ids = [f"image-{k}" for k in range(images)]

    def build():
        turns = [user_request(question, ids)]
        for raw, output in zip(outputs, observations):
            turns += [assistant_turn(raw), observation_turn(output)]
        return build_prompt(turns, family)

    first, second = build(), build()
    assert first == second and first.text == second.text
    assert first.text.count("<image>") == len(first.image_ids) == images
    assert first.text.startswith(("<|start_header_id|>", "<|im_start|>"))
