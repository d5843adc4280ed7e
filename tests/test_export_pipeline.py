"""Every exported row is the row TACO's own data pipeline builds from the same conversation.

The pipeline's code (SalesforceAIResearch/CoTA ``cota/data_utils.py``, vendored in tests/vendor/cota)
is run on each of the 132 reference traces, and its row is compared with our export of the same
trace field by field. The two golden rows built by TACO's pipeline itself are compared too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from taco_app.cota.prompt import user_request
from taco_app.cota.training import goal, inference_text, training_text
from tests.vendor.cota import data_utils as cota

GOLDEN = {"TACO-Llama3-SigLIP-125", "TACO-Qwen2-SigLIP-21"}


@pytest.fixture(scope="module")
def exported(reference, reference_exports) -> dict:
    """All reference traces exported in both CoTA formats."""
    out = {fmt: reference_exports.export(fmt) for fmt in ("cota-mantis", "cota-llava")}
    mantis = [json.loads(line) for line in (out["cota-mantis"] / "data.jsonl").read_text("utf-8").splitlines()]
    llava = json.loads((out["cota-llava"] / "data.json").read_text("utf-8"))  # one JSON array, as CoTA writes it
    return {"traces": {p.stem: p for p in sorted((reference / "traces").glob("*.json"))}, "ids": reference_exports.ids,
            "out": out, "cota-mantis": {row["id"]: row for row in mantis},
            "cota-llava": {row["sample_id"]: row for row in llava}}


def _pipeline_rows(trace: Path, session_id: str) -> tuple[dict, dict]:
    """What CoTA's pipeline builds from the trace, given its messages the way its harness recorded them."""
    data = json.loads(trace.read_text("utf-8"))
    images, messages = [], []
    for message in data["messages"]:
        content = []
        for part in message["content"]:
            if part["type"] == "text":
                content.append({"type": "text", "text": part["text"]})
            else:
                path = str(trace.parent / part["path"])
                images.append(path)
                content.append({"type": "image_url", "image_url": {"url": Image.open(path).convert("RGB")}})
        messages.append({"role": message["role"], "content": content})
    metadata = {"dataset": "taco-studio", "task_instruction": cota.simple_task_goal}
    mantis = cota.convert_openai_data_to_mantis_format({"images": images, "all_messages": messages}, session_id, metadata)
    assert mantis is not None, f"CoTA's pipeline refuses {trace.name}"
    return mantis, cota.convert_mantis_example_into_llava_format(mantis)


def _same_images(ours: list[str], folder: Path, theirs: list[str]) -> bool:
    """Our image paths are content-addressed; the pipeline's are where the trace keeps them."""
    return len(ours) == len(theirs) and all((folder / a).read_bytes() == Path(b).read_bytes() for a, b in zip(ours, theirs))


def test_the_goal_is_the_pipelines_built_from_our_action_registry():
    assert goal() == cota.simple_task_goal


def test_every_reference_trace_exports_as_the_pipeline_builds_it(exported):
    differences = []
    for name, trace in exported["traces"].items():
        mantis, llava = _pipeline_rows(trace, exported["ids"][name])
        ours_mantis, ours_llava = exported["cota-mantis"][mantis["id"]], exported["cota-llava"][llava["sample_id"]]
        for fmt, ours, theirs, images in (("cota-mantis", ours_mantis, mantis, "images"), ("cota-llava", ours_llava, llava, "image")):
            if {k: v for k, v in ours.items() if k != images} != {k: v for k, v in theirs.items() if k != images}:
                differences.append(f"{fmt} {name}")
            if not _same_images(ours[images], exported["out"][fmt], theirs[images]):
                differences.append(f"{fmt} {name} images")
    print(f"{len(exported['traces'])} traces: {len(exported['traces']) * 2 - len(differences)} of "
          f"{len(exported['traces']) * 2} rows equal to the pipeline's")
    assert differences == []


@pytest.mark.parametrize("fmt", ["cota-mantis", "cota-llava"])
def test_the_golden_rows_are_equal_field_by_field(exported, reference, fmt):
    for name in sorted(GOLDEN):
        golden = json.loads((reference / "training-rows" / f"{fmt}.{name}.json").read_text("utf-8"))
        key, images = ("id", "images") if fmt == "cota-mantis" else ("sample_id", "image")
        ours = exported[fmt][f"taco-studio-{exported['ids'][name]}"]
        assert sorted(ours) == sorted(golden)
        for field in golden:
            if field == key:
                continue
            if field == "metadata":  # the dataset name is ours to choose
                assert ours[field] == {**golden[field], "dataset": "taco-studio"}
            elif field == images:  # the golden rows rename the images; the same pictures, in the same order
                trace = json.loads(exported["traces"][name].read_text("utf-8"))
                paths = [str(reference / "traces" / p["path"]) for m in trace["messages"] for p in m["content"]
                         if p["type"] == "image"]
                assert len(golden[field]) == len(paths) and _same_images(ours[field], exported["out"][fmt], paths)
            else:
                assert ours[field] == golden[field], f"{fmt} {name}: {field}"


def test_every_row_follows_the_pipelines_rules(exported):
    for row in exported["cota-mantis"].values():
        assert set(row["metadata"]) == {"dataset", "task_instruction"} and row["metadata"]["task_instruction"] == goal()
        turns = row["conversation"]
        assert [t["role"] for t in turns] == ["user", "assistant"] * (len(turns) // 2)
        assert turns[0]["content"].startswith(goal() + "\n\n# USER REQUEST #:\nimage-0: \n<image>\n\n")
        assert turns[0]["content"].endswith("\n\nNow please generate your response:\n\n")
        for turn in turns:
            if turn["role"] == "user":  # part by part: every text part then "\n", every image "<image>\n"
                assert all(piece.endswith("\n") for piece in turn["content"].split("<image>\n"))
                assert turn["content"].count("<image>") == turn["content"].count("<image>\n")
            else:
                assert "\n" not in turn["content"] and isinstance(json.loads(turn["content"])["actions"], list)
        for turn in turns[2::2]:
            assert turn["content"].startswith(("OBSERVATION:\n", "Execution failed with "))
            if "<image>" in turn["content"]:
                assert "'image-" in turn["content"] and ": \n<image>\n'" in turn["content"]
        assert sum(t["content"].count("<image>") for t in turns) == len(row["images"])
    for row in exported["cota-llava"].values():
        assert set(row) == {"sample_id", "image", "conversations", "choice_list", "metadata"} and row["choice_list"] is None
        assert [m["from"] for m in row["conversations"]] == ["human", "gpt"] * (len(row["conversations"]) // 2)


def test_training_text_and_its_inverse_with_several_images():
    """Two input images: each text part, empty or not, is followed by a newline, as the harness split them."""
    turn = user_request("Which is taller?", ["image-0", "image-1"])
    text = training_text(turn, first=True)
    assert text == (goal() + "\n\n# USER REQUEST #:\nimage-0: \n<image>\n\nimage-1: \n<image>\n\nWhich is taller?"
                    "\n\nNow please generate your response:\n\n")
    assert inference_text(text, first=True) == turn.text
    with pytest.raises(ValueError):
        inference_text("image-0: <image>\nno newline after the text part", first=False)
