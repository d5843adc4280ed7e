"""The exports made from people's judgments: trl-dpo (preference pairs) and trl-stepwise (labelled steps).

A store holds sessions on the same question and image that people judged in every way a pair can come
from (a preference, a tie, a correction in Review, an edit made before a step ran, a fork, ratings up
and down) and in the ways a pair goes wrong (another question, a fork that changed nothing, a pair that
repeats or contradicts a stronger one, a completion that shows an image). Each export is checked row by
row, then read by TRL's own code: its chat-template helpers and the vision collator DPOTrainer uses
(``DataCollatorForVisionPreference``), and, for stepwise rows, PRMTrainer's tokenization (vendored:
TRL 1.16 no longer ships a PRM trainer). Every check has a negative control.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from taco_app import cli
from taco_app.backends.replay import ReplayBackend
from taco_app.cota.actions import Action
from taco_app.cota.training import goal
from taco_app.store.db import Store
from taco_app.store.export import REASONS, export
from taco_app.store.export.trl_dpo import LOAD as DPO_LOAD, TRAIN as DPO_TRAIN
from taco_app.store.export.trl_stepwise import LOAD as STEPWISE_LOAD, TRAIN as STEPWISE_TRAIN
from taco_app.store.schema import FeedbackRow, PreferenceRow, SessionRow

from .conftest import run_loop

pytestmark = pytest.mark.store

Q = "What is 2+3?"
CALC = '{"thought":"add them","actions":[{"name":"Calculate","arguments":{"expression":"2+3"}}]}'
WRONG = '{"thought":"multiply them","actions":[{"name":"Calculate","arguments":{"expression":"2*3"}}]}'
DONE = '{"thought":"done","actions":[{"name":"Terminate","arguments":{"answer":"5"}}]}'
DONE6 = '{"thought":"done","actions":[{"name":"Terminate","arguments":{"answer":"6"}}]}'
NOT_JSON = "The answer is 5, I am sure of it."
FIXED = {"thought": "the sum, not the product", "actions": [{"name": "Calculate", "arguments": {"expression": "2+3"}}]}
ZOOM = '{"thought":"look closer","actions":[{"name":"ZoomIn","arguments":{"image":"image-0","bbox":[0,0,0.5,0.5],"zoom_factor":2}}]}'
TEAL = '{"thought":"it is teal","actions":[{"name":"Terminate","arguments":{"answer":"teal"}}]}'
RED = '{"thought":"it is red","actions":[{"name":"Terminate","arguments":{"answer":"red"}}]}'


# --- building a store ----------------------------------------------------------------------------


def _record(store: Store, replies: list[str], question: str = Q, colour: str = "teal", **kwargs) -> str:
    events = list(store.record(run_loop(question, [Image.new("RGB", (96, 64), colour)], ReplayBackend(replies), **kwargs)))
    return events[-1].session_id


_clock = iter(range(1, 10_000))


def _feedback(store: Store, session_id: str, **fields) -> None:
    with store.writing() as db:
        db.add(FeedbackRow(session_id=session_id, created_at=1e9 + next(_clock), **fields))


def _prefer(store: Store, chosen: str, rejected: str, *, tie: bool = False, reason: str | None = None) -> None:
    with store.writing() as db:
        db.add(PreferenceRow(chosen_id=chosen, rejected_id=rejected, tie=tie, reason=reason,
                             created_at=1e9 + next(_clock)))


def _fork(store: Store, session_id: str, parent: str, step: int) -> None:
    """Make a recorded session a fork of ``parent`` at ``step`` (it ran the parent's first steps)."""
    with store.writing() as db:
        row = db.get(SessionRow, session_id)
        row.parent_session_id, row.fork_step = parent, step


@pytest.fixture
def judged(store) -> dict[str, str]:
    """Sessions on "What is 2+3?" (a teal picture) judged every way, by name."""
    s = {
        "up": _record(store, [CALC, DONE]),
        "down": _record(store, [WRONG, DONE6]),
        "r-up": _record(store, [CALC, DONE6]),  # right sum, wrong answer: rated up all the same
        "r-down": _record(store, [CALC, DONE]),
        "p-good": _record(store, [CALC, DONE]),
        "p-bad": _record(store, [CALC, DONE6]),
        "other-question": _record(store, [CALC, DONE], question="What is 2+3, in words?"),
        "corrected": _record(store, [WRONG, DONE6]),
        "edited": _record(store, [WRONG, DONE], review=lambda step, a: Action("Calculate", {"expression": "2+3"})
                          if a.name == "Calculate" else a),
        "parent": _record(store, [CALC, NOT_JSON, DONE]),
        "fork": _record(store, [CALC, DONE]),
        "same-fork": _record(store, [CALC, DONE]),
        "zoom-up": _record(store, [ZOOM, TEAL], question="What colour is it?"),
        "zoom-down": _record(store, [RED], question="What colour is it?"),
    }
    for name in ("up", "r-up", "zoom-up"):
        _feedback(store, s[name], rating="up")
    for name in ("down", "r-down", "zoom-down"):
        _feedback(store, s[name], rating="down")
    _prefer(store, s["p-good"], s["p-bad"], reason="the right answer")
    _prefer(store, s["p-good"], s["other-question"])  # another question: no pair
    _prefer(store, s["up"], s["r-down"], tie=True)  # as good as each other: no pair, and their ratings give none
    _feedback(store, s["corrected"], step=1, corrected_step=FIXED)  # in Review, after the run
    _fork(store, s["fork"], s["parent"], 2)  # replaced the parent's non-JSON step 2
    _fork(store, s["same-fork"], s["p-good"], 2)  # ran step 2 again and wrote the same step
    return s


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "data.jsonl").read_text("utf-8").splitlines()]


def _provenance(folder: Path) -> dict[str, dict]:
    return {p["id"]: p for p in map(json.loads, (folder / "provenance.jsonl").read_text("utf-8").splitlines())}


def _text(messages: list[dict]) -> list[tuple[str, str]]:
    """(role, text) of messages, an image part written as TACO's training text writes it."""
    return [(m["role"], "".join(p["text"] if p["type"] == "text" else "<image>\n" for p in m["content"]))
            for m in messages]


def _image_parts(messages: list[dict]) -> int:
    return sum(part["type"] == "image" for m in messages for part in m["content"])


# --- trl-dpo: where pairs come from ----------------------------------------------------------------


def test_every_source_gives_its_pair_and_every_bad_pair_is_counted(store, judged, tmp_path):
    s = judged
    result = export(store, tmp_path / "dpo", "trl-dpo")
    rows = {row["id"]: row for row in _rows(tmp_path / "dpo")}
    preference = f"taco-studio-{s['p-good']}-over-{s['p-bad']}-step2"
    correction = f"taco-studio-{s['corrected']}-step1-corrected"
    fork = f"taco-studio-{s['fork']}-over-{s['parent']}-step2"
    rating = f"taco-studio-{s['up']}-over-{s['down']}-step1"
    zoom = f"taco-studio-{s['zoom-up']}-over-{s['zoom-down']}-step1"
    assert list(rows) == [preference, correction, fork, rating, zoom]  # strongest source first
    assert result.reasons == {"contradicted": 1, "different-task": 1, "duplicate": 1, "overruled": 1,
                              "same-step": 1, "tie": 1}
    assert result.summary("trl-dpo") == (
        "exported 5 pair(s) as trl-dpo; left out 6: 1 a stronger judgment prefers the other step of the same pair, "
        "1 the two sessions answer different questions or images, 1 the same pair as another row, "
        "1 a person's preference between the same two sessions stands instead, "
        "1 the chosen and the rejected step are the same, 1 people judged the two sessions as good as each other")
    skipped = dict(line.split(": ", 1) for line in result.skipped)
    assert skipped[f"{s['r-up']} over {s['down']} (rating)"].startswith(REASONS["duplicate"])  # = up over down
    assert skipped[f"{s['r-up']} over {s['r-down']} (rating)"] == REASONS["contradicted"] + " (step 2)"
    assert skipped[f"{s['up']} over {s['r-down']} (rating)"] == REASONS["overruled"]  # their tie stands
    assert skipped[f"{s['same-fork']} over {s['p-good']} (fork)"] == REASONS["same-step"] + " (the two sessions ran the same steps)"

    def step(messages):
        (message,) = messages
        assert message["role"] == "assistant" and len(message["content"]) == 1
        return message["content"][0]["text"]

    # The rating pair: the first steps differ, so the prompt is the request alone, with its image.
    row = rows[rating]
    assert (step(row["chosen"]), step(row["rejected"])) == (CALC, WRONG)
    assert _text(row["prompt"]) == [("user", goal() + "\n\n# USER REQUEST #:\nimage-0: \n<image>\n\n" + Q
                                     + "\n\nNow please generate your response:\n\n")]
    assert len(row["images"]) == 1 and row["images"][0].startswith("images/")
    # The preference: the second steps differ; the prompt holds the shared first step and its observation.
    row = rows[preference]
    assert (step(row["chosen"]), step(row["rejected"])) == (DONE, DONE6)
    assert [role for role, _ in _text(row["prompt"])] == ["user", "assistant", "user"]
    assert _text(row["prompt"])[1] == ("assistant", CALC) and "{'result': 5}" in _text(row["prompt"])[2][1]
    # The correction made in Review is chosen over the model's own reply; the edit made before the step ran gives none.
    assert (step(rows[correction]["chosen"]), step(rows[correction]["rejected"])) == (
        json.dumps(FIXED, separators=(",", ":")), WRONG)
    assert not any(s["edited"] in row_id for row_id in rows)
    # The fork's step is chosen over its parent's, which was not JSON: a true example of what not to write.
    assert (step(rows[fork]["chosen"]), step(rows[fork]["rejected"])) == (DONE, NOT_JSON)
    assert rows[fork]["prompt"] == rows[preference]["prompt"]

    provenance = _provenance(tmp_path / "dpo")
    assert set(provenance) == set(rows)
    assert provenance[preference]["source"] == "preference" and provenance[preference]["preference"] == {
        "reason": "the right answer"}
    assert (provenance[fork]["chosen"]["session_id"], provenance[fork]["rejected"]["session_id"]) == (s["fork"], s["parent"])
    assert provenance[fork]["fork"] == {"fork_step": 2} and provenance[fork]["step"] == 2
    assert provenance[rating]["rating"] == {"chosen_rating": "up", "rejected_rating": "down"}
    assert provenance[correction]["chosen"]["corrections"]["steps"]["1"] == FIXED
    card = (tmp_path / "dpo" / "README.md").read_text("utf-8")
    assert "- **Rows:** 5 preference pairs; 1 distinct images." in card and "**Left out:** 6 pair(s):" in card
    assert "- **Filters:** pair = step." in card and DPO_LOAD in card and DPO_TRAIN in card
    assert "- **Provenance** of each row (where the pair came from: a preference, a correction, a fork" in card
    assert sorted(p.name for p in (tmp_path / "dpo" / "images").iterdir()) == [Path(rows[rating]["images"][0]).name]


def test_trajectory_pairs_hold_the_rests_of_the_two_traces(store, judged, tmp_path):
    s = judged
    result = export(store, tmp_path / "dpo", "trl-dpo", pair="trajectory")
    rows = {row["id"]: row for row in _rows(tmp_path / "dpo")}
    fork = f"taco-studio-{s['fork']}-over-{s['parent']}-step2"
    rating = f"taco-studio-{s['up']}-over-{s['down']}-step1"
    again = f"taco-studio-{s['r-up']}-over-{s['down']}-step1"  # the same first steps, another rest: no duplicate now
    assert list(rows) == [f"taco-studio-{s['p-good']}-over-{s['p-bad']}-step2", fork, rating, again]
    assert result.reasons == {"contradicted": 1, "different-task": 1, "image-in-completion": 1, "overruled": 1,
                              "same-step": 1, "stale-observation": 1, "tie": 1}
    skipped = dict(line.split(": ", 1) for line in result.skipped)
    # The Review correction asked for another action than the one that ran: the rest after it is not its own.
    assert skipped[f"{s['corrected']} step 1 (correction)"] == REASONS["stale-observation"] + " (step 1)"
    # The zoomed picture is in the chosen rest, and TRL's DPO takes images in the prompt only.
    assert skipped[f"{s['zoom-up']} over {s['zoom-down']} (rating)"] == REASONS["image-in-completion"]

    rest = _text(rows[rating]["chosen"])
    assert [role for role, _ in rest] == ["assistant", "user", "assistant"]
    assert rest[0] == ("assistant", CALC) and "{'result': 5}" in rest[1][1] and rest[2] == ("assistant", DONE)
    assert rest[1][1].startswith("OBSERVATION:") and not rest[1][1].startswith("[BEGIN OF GOAL]")  # no goal after the first turn
    assert [text for _, text in _text(rows[rating]["rejected"])][::2] == [WRONG, DONE6]
    # The parent's rest: its non-JSON reply, the repair it was sent, and the step after it, as they were.
    parent = _text(rows[fork]["rejected"])
    assert [role for role, _ in parent] == ["assistant", "user", "assistant"]
    assert parent[0] == ("assistant", NOT_JSON) and parent[2] == ("assistant", DONE)
    assert _text(rows[fork]["chosen"]) == [("assistant", DONE)]
    assert all(_image_parts(row["chosen"]) == _image_parts(row["rejected"]) == 0 for row in rows.values())
    assert "- **Filters:** pair = trajectory." in (tmp_path / "dpo" / "README.md").read_text("utf-8")


def test_filters_choose_the_chosen_session(store, judged, tmp_path):
    s = judged
    # Only sessions rated up as the chosen side: the rating pairs, and their tie. The preference the filter
    # leaves out still outweighs the rating pair it contradicts.
    result = export(store, tmp_path / "up", "trl-dpo", rating="up")
    assert [r["id"] for r in _rows(tmp_path / "up")] == [f"taco-studio-{s['up']}-over-{s['down']}-step1",
                                                         f"taco-studio-{s['zoom-up']}-over-{s['zoom-down']}-step1"]
    assert result.reasons == {"contradicted": 1, "duplicate": 1, "overruled": 1, "tie": 1}
    everything = {r["id"]: r for r in _rows(tmp_path / "all")} if export(store, tmp_path / "all", "trl-dpo") else {}
    assert all(everything[r["id"]] == r for r in _rows(tmp_path / "up"))  # the same rows as the whole export's
    # Only corrected sessions: the correction, and the edited session, whose edit is what ran.
    corrected = export(store, tmp_path / "c", "trl-dpo", corrected_only=True)
    assert corrected.count == 1 and [r["id"] for r in _rows(tmp_path / "c")] == [
        f"taco-studio-{s['corrected']}-step1-corrected"]
    assert export(store, None, "trl-dpo", since="2999-01-01", dry_run=True).count == 0


def test_the_same_store_gives_the_same_bytes(store, judged, tmp_path):
    for fmt, pair in (("trl-dpo", "step"), ("trl-dpo", "trajectory"), ("trl-stepwise", None)):
        folders = [tmp_path / f"{fmt}-{pair}-{n}" for n in (1, 2)]
        for folder in folders:
            export(store, folder, fmt, pair=pair)
        first, second = ({p.relative_to(f): p.read_bytes() for p in f.rglob("*") if p.is_file()} for f in folders)
        assert first == second and len(first) >= 4


def test_pair_is_an_option_of_trl_dpo_only(store, judged, tmp_path, capsys):
    with pytest.raises(ValueError, match="--pair is an option of trl-dpo, not of trl-sft"):
        export(store, tmp_path / "x", "trl-sft", pair="step")
    with pytest.raises(ValueError, match="--pair must be one of step, trajectory, not 'steps'"):
        export(store, tmp_path / "x", "trl-dpo", pair="steps")
    assert not (tmp_path / "x").exists()
    assert cli.main(["export", "--format", "trl-sft", "--pair", "step", "--out", str(tmp_path / "y")]) == 2
    assert capsys.readouterr().err.strip() == "error: --pair is an option of trl-dpo, not of trl-sft"
    assert cli.main(["export", "--format", "trl-dpo", "--pair", "trajectory", "--out", str(tmp_path / "t")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("exported 4 pair(s) as trl-dpo; left out 7:") and "left out 7 pair(s):" in err
    assert len(_rows(tmp_path / "t")) == 4



def test_a_fork_made_by_the_fork_command_gives_its_pair(store, tmp_path):
    """A real fork (taco_app.fork): its copied first steps are the parent's, so the pair is at the fork step,
    and the prompt shows the image the parent's Crop made before it."""
    from taco_app.fork import fork, plan_fork
    from taco_app.tools import default_tools

    crop = '{"thought":"look closer","actions":[{"name":"Crop","arguments":{"image":"image-0","bbox":[0,0,0.5,0.5]}}]}'
    parent = _record(store, [crop, WRONG, DONE6])
    plan = plan_fork(store, parent, 2, action={"name": "Calculate", "arguments": {"expression": "2+3"}})
    child = list(store.record(fork(plan, ReplayBackend([DONE]), tools=default_tools(), sink=store.images)))[-1].session_id
    again = list(store.record(fork(plan_fork(store, parent, 1), ReplayBackend([crop, WRONG, DONE6]),
                                   tools=default_tools(), sink=store.images)))[-1].session_id  # ran the same again

    result = export(store, tmp_path / "dpo", "trl-dpo")
    (row,) = _rows(tmp_path / "dpo")
    assert row["id"] == f"taco-studio-{child}-over-{parent}-step2"
    assert result.skipped == [f"{again} over {parent} (fork): {REASONS['same-step']} (the two sessions ran the same steps)"]
    (chosen,), (rejected,) = row["chosen"], row["rejected"]
    assert json.loads(chosen["content"][0]["text"])["actions"] == [{"name": "Calculate", "arguments": {"expression": "2+3"}}]
    assert rejected["content"][0]["text"] == WRONG
    assert len(row["images"]) == _image_parts(row["prompt"]) == 2  # the input, and the Crop's picture in step 1's observation
    check_pair_images(row)
    trajectory = export(store, tmp_path / "t", "trl-dpo", pair="trajectory")
    assert trajectory.count == 1 and _text(_rows(tmp_path / "t")[0]["rejected"])[::2] == [("assistant", WRONG), ("assistant", DONE6)]

# --- trl-stepwise -----------------------------------------------------------------------------------


@pytest.fixture
def rated(store) -> dict[str, str]:
    s = {
        "tool-blamed": _record(store, [CALC, DONE]),
        "model-blamed": _record(store, [WRONG, DONE6]),
        "unblamed": _record(store, [WRONG, DONE6]),
        "session-up": _record(store, [CALC, DONE]),
        "partly": _record(store, [CALC, DONE]),
        "down-unrated": _record(store, [WRONG, DONE6]),
        "corrected": _record(store, [CALC, DONE6]),
        "zoom": _record(store, [ZOOM, TEAL], question="What colour is it?"),
        "not-json": _record(store, [NOT_JSON, CALC, DONE]),
    }
    _feedback(store, s["tool-blamed"], step=1, rating="down", blame="tool")  # the tool was wrong, not the model
    _feedback(store, s["tool-blamed"], step=2, rating="up")
    _feedback(store, s["model-blamed"], step=1, rating="down", blame="model")
    _feedback(store, s["model-blamed"], step=2, rating="down", blame="model")
    _feedback(store, s["unblamed"], step=1, rating="up")
    _feedback(store, s["unblamed"], step=1, rating="down")  # the latest rating counts; no one blamed: the model
    _feedback(store, s["unblamed"], step=2, rating="down", blame="tool")
    _feedback(store, s["unblamed"], step=2, rating="down")  # a later rating without blame replaces the blame too
    _feedback(store, s["session-up"], rating="up")
    _feedback(store, s["partly"], step=1, rating="up")  # step 2 has no judgment, and the session none either
    _feedback(store, s["down-unrated"], rating="down")
    _feedback(store, s["down-unrated"], step=1, rating="down")
    _feedback(store, s["corrected"], step=1, rating="up")
    _feedback(store, s["corrected"], step=2, rating="down", blame="model")
    _feedback(store, s["corrected"], corrected_answer="5")  # the person's answer replaces it
    _feedback(store, s["zoom"], rating="up")
    _feedback(store, s["not-json"], rating="up")
    return s


def test_stepwise_labels_come_from_step_ratings_and_blame(store, rated, tmp_path):
    s = rated
    result = export(store, tmp_path / "sw", "trl-stepwise")
    rows = {row["id"].removeprefix("taco-studio-"): row for row in _rows(tmp_path / "sw")}
    labels = {name: rows[sid]["labels"] for name, sid in s.items() if sid in rows}
    assert labels == {"tool-blamed": [True, True], "model-blamed": [False, False], "unblamed": [False, False],
                      "session-up": [True, True], "corrected": [True, True], "zoom": [True, True]}
    assert result.reasons == {"not-json": 1, "unjudged": 2}
    skipped = dict(line.split(": ", 1) for line in result.skipped)
    assert skipped[s["partly"]] == REASONS["unjudged"] + " (step 2)"
    assert skipped[s["down-unrated"]] == REASONS["unjudged"] + " (step 2)"

    row = rows[s["tool-blamed"]]
    assert row["prompt"] == goal() + "\n\n# USER REQUEST #:\nimage-0: \n<image>\n\n" + Q + "\n\nNow please generate your response:\n\n"
    first, second = row["completions"]
    assert first == CALC  # the first step follows the prompt directly
    assert second.startswith("OBSERVATION:\n") and "{'result': 5}" in second and second.endswith("\n" + DONE)
    assert rows[s["corrected"]]["completions"][1].endswith(DONE)  # the person's answer, labelled good
    # The zoomed picture is in the second completion, after the observation that showed it.
    zoom = rows[s["zoom"]]
    assert len(zoom["images"]) == 2 and zoom["prompt"].count("<image>") == 1 and zoom["completions"][1].count("<image>") == 1
    provenance = _provenance(tmp_path / "sw")
    assert provenance[f"taco-studio-{s['tool-blamed']}"]["step_blame"] == {"1": "tool"}
    assert provenance[f"taco-studio-{s['unblamed']}"]["step_blame"] == {}  # the latest ratings blame no one
    card = (tmp_path / "sw" / "README.md").read_text("utf-8")
    assert "**Left out:** 3 session(s):" in card and STEPWISE_LOAD in card and STEPWISE_TRAIN in card


def test_stepwise_text_is_the_cota_mantis_rows_text(store, rated, tmp_path):
    """The prompt is the cota-mantis row's first turn; each completion is the next observation and step."""
    export(store, tmp_path / "sw", "trl-stepwise")
    export(store, tmp_path / "mantis", "cota-mantis")
    mantis = {row["id"]: row for row in _rows(tmp_path / "mantis")}
    rows = _rows(tmp_path / "sw")
    assert len(rows) == 6
    for row in rows:
        turns = [m["content"] for m in mantis[row["id"]]["conversation"]]
        assert row["prompt"] == turns[0] and row["images"] == mantis[row["id"]]["images"]
        assert row["completions"] == [turns[1]] + [turns[k] + turns[k + 1] for k in range(2, len(turns), 2)]


# --- read by TRL's own code ----------------------------------------------------------------------------

TACO_IMAGE = "<image>\n"  # an image in TACO's training text
VISION = "<|vision_start|><|image_pad|><|vision_end|>"  # an image in Qwen2-VL's chat template
QWEN_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
ASSISTANT = "<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def trl_data():
    return pytest.importorskip("trl.data_utils", reason="`trl` is not installed: the TRL checks are skipped")


@pytest.fixture(scope="module")
def processor(trl_data, tmp_path_factory):
    """A tiny Qwen2-VL processor, as tests/test_export_trl.py builds it: the tiny Qwen2 tokenizer with
    Qwen2-VL's vision tokens, the real image processor (at most 4 image tokens an image) and TRL's copy
    of the Qwen2.5-VL chat template."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor
    from trl.chat_template_utils import qwen2_5_vl_chat_template

    from tests.tiny.chat_tokenizer import build

    tokenizer = build(tmp_path_factory.mktemp("qwen2-tokenizer"), family="qwen2")
    tokenizer.add_tokens(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"], special_tokens=True)
    images = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=4 * 28 * 28)
    return Qwen2VLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
                            chat_template=qwen2_5_vl_chat_template)


def _load(code: str, folder: Path, cache: Path):
    """The card's loading code, run as it stands with the folder filled in."""
    datasets = pytest.importorskip("datasets", reason="`datasets` is not installed: the load check is skipped")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
        scope: dict = {}
        exec(code.replace('"EXPORT"', json.dumps(str(folder))), scope)
    return scope["dataset"]


def check_pair_images(row: dict) -> None:
    """One image part per image, all in the prompt."""
    assert _image_parts(row["prompt"]) == len(row["images"]), row["id"]
    assert _image_parts(row["chosen"]) == _image_parts(row["rejected"]) == 0, row["id"]


def _rendered(messages: list[dict]) -> str:
    """Messages as the Qwen2-VL template writes them: TACO's training text, each image its vision markers."""
    return "".join(f"<|im_start|>{role}\n{text.replace(TACO_IMAGE, VISION)}<|im_end|>\n" for role, text in _text(messages))


def check_rendered(row: dict, out: dict) -> None:
    """What TRL's chat-template helper made of a pair is TACO's text: the prompt up to the assistant's
    turn, then each answer (its first turn without the header the prompt already holds)."""
    assert out["prompt"] == QWEN_SYSTEM + _rendered(row["prompt"]) + ASSISTANT, row["id"]
    for side in ("chosen", "rejected"):
        assert out[side] == _rendered(row[side]).removeprefix(ASSISTANT), (row["id"], side)
    assert out["prompt"].count(VISION) == len(row["images"])


def check_stepwise_images(row: dict) -> None:
    assert (row["prompt"] + "".join(row["completions"])).count("<image>") == len(row["images"]), row["id"]


def check_prm(row: dict, tokenized: dict, tokenizer) -> None:
    """PRMTrainer's tokens are the prompt and each completion followed by the separator, and its
    labels are the row's, one on each separator."""
    ids, labels = tokenized["input_ids"], tokenized["labels"]
    assert tokenizer.decode(ids) == row["prompt"] + "".join(c + "\n" for c in row["completions"]), row["id"]
    marked = [i for i, label in enumerate(labels) if label != -100]
    assert [labels[i] for i in marked] == [int(label) for label in row["labels"]], row["id"]
    assert all(tokenizer.decode([ids[i]]) == "\n" for i in marked)
    ends, text = [], row["prompt"]
    for completion in row["completions"]:
        text += completion + "\n"
        ends.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]) - 1)
    assert marked == ends, row["id"]  # each label right after its own step


@pytest.fixture
def pairs(store, judged, tmp_path) -> dict:
    """Both trl-dpo exports of the judged store: their folders and rows."""
    out = {}
    for mode in ("step", "trajectory"):
        export(store, tmp_path / mode, "trl-dpo", pair=mode)
        out[mode] = (tmp_path / mode, _rows(tmp_path / mode))
    assert [len(rows) for _, rows in out.values()] == [5, 4]
    return out


def test_trls_chat_template_helpers_read_every_pair_as_tacos_text(pairs, processor, trl_data):
    for _, rows in pairs.values():
        for row in rows:
            check_pair_images(row)
            assert trl_data.is_conversational(row)
            assert trl_data.maybe_extract_prompt(row) == row  # the prompt is explicit already
            check_rendered(row, trl_data.maybe_apply_chat_template(row, processor))
            trl_data.prepare_multimodal_messages(row["prompt"], images=row["images"])  # as many images as parts


def test_dpos_vision_collator_takes_every_pair(pairs, processor, tmp_path):
    """DPOTrainer's collator for vision rows fills the prompt's images and scores exactly the two answers."""
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    collate = DataCollatorForVisionPreference(processor=processor)
    tokenizer = processor.tokenizer
    pad, start, end = tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|vision_start|>", "<|vision_end|>"])
    checked = 0
    for mode, (folder, rows) in pairs.items():
        loaded = _load(DPO_LOAD, folder, tmp_path / f"hf-{mode}")
        batch = [loaded[i] for i in range(loaded.num_rows)]
        out = collate(batch)
        n = len(batch)
        grids = out["image_grid_thw"].tolist()
        assert len(grids) == 2 * sum(len(row["images"]) for row in rows)  # each prompt's images, for both answers
        for b in range(2 * n):
            row = rows[b % n]
            ids = out["input_ids"][b][out["attention_mask"][b] == 1].tolist()
            images = [(s, e) for s, e in _runs(ids, pad)]
            assert len(images) == len(row["images"]) and all(ids[s - 1] == start and ids[e] == end for s, e in images)
            scored = out["input_ids"][b][out["completion_mask"][b] == 1].tolist()
            side = "chosen" if b < n else "rejected"
            assert tokenizer.decode(scored) == _rendered(row[side]).removeprefix(ASSISTANT), (row["id"], side)
            assert pad not in scored
            checked += 1
    assert checked == 2 * (5 + 4)


def _runs(values: list[int], wanted: int) -> list[tuple[int, int]]:
    """(start, end) of each run of ``wanted`` in ``values``."""
    found, start = [], None
    for i, value in enumerate([*values, None]):
        if value == wanted and start is None:
            start = i
        elif value != wanted and start is not None:
            found.append((start, i))
            start = None
    return found


def test_the_checks_fail_on_broken_pairs(pairs, processor, trl_data):
    """Negative controls: each check catches the row it exists for, and so does TRL."""
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    row = pairs["step"][1][0]
    picture = Image.new("RGB", (40, 30), "red")
    one_image_short = {**row, "images": []}
    image_in_answer = json.loads(json.dumps(row))
    image_in_answer["chosen"][0]["content"].append({"type": "image"})
    for broken in (one_image_short, image_in_answer):
        with pytest.raises(AssertionError):
            check_pair_images(broken)
    with pytest.raises(ValueError, match="does not match number of image placeholders"):
        trl_data.prepare_multimodal_messages(one_image_short["prompt"], images=one_image_short["images"])
    with pytest.raises(ValueError, match="does not match number of image placeholders"):  # TRL's DPO: images in the prompt only
        DataCollatorForVisionPreference(processor=processor)([{**image_in_answer, "images": [picture]}])
    no_newline = json.loads(json.dumps(row))
    no_newline["prompt"][0]["content"][-1]["text"] = no_newline["prompt"][0]["content"][-1]["text"][:-1]
    with pytest.raises(AssertionError):
        check_rendered(row, trl_data.maybe_apply_chat_template(no_newline, processor))


def test_the_cards_code_loads_both_exports(store, judged, rated, tmp_path):
    datasets = pytest.importorskip("datasets", reason="`datasets` is not installed: the load check is skipped")
    export(store, tmp_path / "dpo", "trl-dpo")
    export(store, tmp_path / "sw", "trl-stepwise")
    # 9 stepwise rows: the 6 of the rated sessions and the 3 judged sessions rated up as a whole.
    for folder, code, count in ((tmp_path / "dpo", DPO_LOAD, 5), (tmp_path / "sw", STEPWISE_LOAD, 9)):
        assert code in (folder / "README.md").read_text("utf-8")  # the code run here is the card's
        loaded, written = _load(code, folder, tmp_path / f"hf-{folder.name}"), _rows(folder)
        assert loaded.num_rows == len(written) == count
        for row, w in zip(loaded, written):
            assert row["id"] == w["id"] and len(row["images"]) == len(w["images"]) >= 1
            for picture, rel in zip(row["images"], w["images"]):
                with Image.open(folder / rel) as on_disk:  # the right picture, in the right place
                    assert isinstance(picture, Image.Image) and picture.tobytes() == on_disk.tobytes()
        # The folder is a Hub dataset repository: its card's metadata names the data file.
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / f"hub-{folder.name}"))
            assert datasets.load_dataset(str(folder), split="train").num_rows == count


def test_prm_trainer_tokenizes_every_stepwise_row(store, rated, tmp_path):
    pytest.importorskip("trl", reason="`trl` is not installed: the TRL checks are skipped")
    from tests.tiny.chat_tokenizer import build
    from tests.vendor.trl_prm import PRMTrainer

    export(store, tmp_path / "sw", "trl-stepwise")
    rows = _rows(tmp_path / "sw")
    tokenizer = build(tmp_path / "qwen2-tokenizer", family="qwen2")
    labels = 0
    for row in rows:
        check_stepwise_images(row)
        tokenized = PRMTrainer.tokenize_row(row, tokenizer, "\n", max_length=None, max_completion_length=None,
                                            train_on_last_step_only=False, is_eval=False)
        check_prm(row, tokenized, tokenizer)
        labels += len(row["labels"])
    assert labels == 12
    # Negative controls: a label short, an image short, a label moved.
    row = rows[0]
    with pytest.raises(ValueError):  # zip(strict=True) in tokenize_row
        PRMTrainer.tokenize_row({**row, "labels": row["labels"][:-1]}, tokenizer, "\n", None, None, False, False)
    with pytest.raises(AssertionError):
        check_stepwise_images({**row, "images": row["images"][1:]})
    tokenized = PRMTrainer.tokenize_row(row, tokenizer, "\n", None, None, False, False)
    moved = {**tokenized, "labels": tokenized["labels"][1:] + [-100]}
    with pytest.raises(AssertionError):
        check_prm(row, moved, tokenizer)


def _tiny_qwen2_vl(processor):
    """A 1-layer Qwen2-VL model for the tiny processor (as tests/test_export_trl.py builds it)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tokenizer = processor.tokenizer
    names = ["vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id"]
    special = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    torch.manual_seed(0)
    return Qwen2VLForConditionalGeneration(Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "bos_token_id": None,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2},
        **dict(zip(names, special))))


def test_the_dpo_cards_training_code_trains(pairs, processor, monkeypatch, tmp_path):
    """The card's DPOTrainer code, run as it stands on a tiny Qwen2-VL model instead of the Hub's: only
    the model (built here and saved, so DPOTrainer loads it and its reference copy from a folder as it
    would from the Hub), its processor, and a short CPU run in a temp folder are swapped."""
    import trl
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    folder, _ = pairs["step"]
    dataset = _load(DPO_LOAD, folder, tmp_path / "hf")
    checkpoint = tmp_path / "tiny-qwen2-vl"
    _tiny_qwen2_vl(processor).save_pretrained(checkpoint)

    class TinyDPOTrainer(trl.DPOTrainer):
        def __init__(self, model: str, **kwargs):
            assert model == "Qwen/Qwen2.5-VL-3B-Instruct"  # the card's model, which needs the Hub
            super().__init__(model=str(checkpoint), processing_class=processor, **kwargs)

    real_config = trl.DPOConfig

    def config(**card_settings):
        assert card_settings == {"output_dir": "taco-dpo", "max_length": None}
        return real_config(**{**card_settings, "output_dir": str(tmp_path / "taco-dpo")}, max_steps=2,
                           per_device_train_batch_size=2, use_cpu=True, report_to="none", save_strategy="no",
                           logging_steps=1, seed=0, bf16=False)

    monkeypatch.setattr(trl, "DPOTrainer", TinyDPOTrainer)
    monkeypatch.setattr(trl, "DPOConfig", config)
    namespace = {"dataset": dataset}
    exec(DPO_TRAIN, namespace)
    trainer = namespace["trainer"]
    assert isinstance(trainer.data_collator, DataCollatorForVisionPreference) and trainer.ref_model is not None
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(losses) == 2 and all(0 < loss < 100 for loss in losses)


def test_the_stepwise_cards_training_code_trains(store, rated, monkeypatch, tmp_path):
    """The card's PRMTrainer code, run as it stands with TRL's PRM trainer (vendored: TRL 1.16 has none) on a
    tiny Qwen2 token classifier and the tiny Qwen2 tokenizer instead of the Hub's."""
    import sys
    import types

    import torch
    import transformers
    from transformers import Qwen2Config, Qwen2ForTokenClassification

    from tests.tiny.chat_tokenizer import build
    from tests.vendor import trl_prm

    export(store, tmp_path / "sw", "trl-stepwise")
    dataset = _load(STEPWISE_LOAD, tmp_path / "sw", tmp_path / "hf")
    tokenizer = build(tmp_path / "qwen2-tokenizer", family="qwen2")
    torch.manual_seed(0)
    tiny = Qwen2ForTokenClassification(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, pad_token_id=tokenizer.pad_token_id, num_labels=2))

    class Hub:
        def __init__(self, made):
            self.made = made

        def from_pretrained(self, name, **kwargs):
            assert name == "Qwen/Qwen2.5-0.5B"  # the card's model, which needs the Hub
            assert kwargs in ({}, {"num_labels": 2})
            return self.made

    def config(**card_settings):
        assert card_settings == {"output_dir": "taco-prm", "step_separator": "\n", "max_length": None}
        return trl_prm.PRMConfig(**{**card_settings, "output_dir": str(tmp_path / "taco-prm")}, max_steps=2,
                                 per_device_train_batch_size=2, use_cpu=True, report_to="none", save_strategy="no",
                                 logging_steps=1, seed=0, bf16=False, gradient_checkpointing=False)

    seen = []

    class PRMTrainer(trl_prm.PRMTrainer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            seen.append(self.train_dataset)

    prm = types.ModuleType("trl.experimental.prm")
    prm.PRMConfig, prm.PRMTrainer = config, PRMTrainer
    monkeypatch.setitem(sys.modules, "trl.experimental.prm", prm)
    monkeypatch.setattr(transformers, "AutoModelForTokenClassification", Hub(tiny))
    monkeypatch.setattr(transformers, "AutoTokenizer", Hub(tokenizer))
    exec(STEPWISE_TRAIN, {"dataset": dataset})
    (tokenized,) = seen
    assert tokenized.column_names == ["labels", "input_ids"]
    marked = [[label for label in row["labels"] if label != -100] for row in tokenized]
    assert marked == [[int(label) for label in row["labels"]] for row in _rows(tmp_path / "sw")]


def test_the_export_tab_offers_pairs_for_trl_dpo_and_counts_them(store, judged):
    from types import SimpleNamespace

    from taco_app.ui.export_tab import _count_text, _options

    studio = SimpleNamespace(store=store)
    text = _count_text(studio, "trl-dpo", "any", False, "", "trajectory")
    assert text.startswith("**4** pair(s) match. 7 left out (training rows hold clean targets only):\n")
    assert f"- 1 × {REASONS['image-in-completion']}" in text.splitlines()
    assert _count_text(studio, "trl-dpo", "any", False, "", "step").startswith("**5** pair(s) match. 6 left out")
    assert _options("trl-sft", "any", False, "", "step")["pair"] is None  # the option of another format
    assert _count_text(studio, "trl-stepwise", "any", False, "", "step").startswith("**3** session(s) match.")
