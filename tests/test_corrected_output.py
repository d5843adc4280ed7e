"""Regions a tool found, fixed by dragging them in Review (taco_app.ui.boxes.save → queries.correct_output):
the store keeps them with the tool's picture redrawn; the exports (cota-mantis, cota-llava, trl-sft) write
the observation the step loop would have written for them, with that picture; a fork from the next step
continues from them. "What the loop would have written" is checked against a live run whose tool found
the corrected regions in the first place: the same text, the same picture, byte for byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from taco_app.backends.replay import ReplayBackend
from taco_app.fork import fork, plan_fork
from taco_app.store import queries
from taco_app.store.corrections import observed
from taco_app.store.export import export
from taco_app.tools import default_tools, detection
from taco_app.ui import boxes

from .conftest import run_loop

pytestmark = pytest.mark.store  # the store's feedback, exports and forks: CI runs these on PostgreSQL too

QUESTION = "Where is the sign?"
LOCALIZE = {"thought": "I look for the sign.",
            "actions": [{"name": "LocalizeObjects", "arguments": {"image": "image-0", "objects": ["sign"]}}]}
CALC = {"thought": "The sign is on the right.", "actions": [{"name": "Calculate", "arguments": {"expression": "1 + 1"}}]}
DONE = {"thought": "On the right.", "actions": [{"name": "Terminate", "arguments": {"answer": "right"}}]}
FOUND = [{"label": "sign", "bbox": [0.05, 0.1, 0.35, 0.5], "score": 0.91}]  # what the (stand-in) detector found
FIXED = [{"label": "sign", "bbox": [0.5, 0.4, 0.9, 0.9]}]  # where a person drags it
SIZE = (320, 200)


class Recording(ReplayBackend):
    """A replay backend that keeps each prompt's text and images, as the model was given them."""

    def __init__(self, outputs):
        super().__init__(outputs)
        self.prompts: list[tuple[str, list[Image.Image]]] = []

    def stream(self, prompt, images):
        self.prompts.append((prompt.text, [image.copy() for image in images]))
        yield from super().stream(prompt, images)


def _photo() -> Image.Image:
    return Image.linear_gradient("L").convert("RGB").resize(SIZE)


def _record(store, monkeypatch, found, replies=(LOCALIZE, CALC, DONE)) -> str:
    """A finished session whose LocalizeObjects (the real tool, its detector a stand-in) finds ``found``."""
    monkeypatch.setattr(detection, "localize", lambda image, objects: [dict(r) for r in found])
    backend = ReplayBackend([json.dumps(reply) for reply in replies])
    events = list(store.record(run_loop(QUESTION, [_photo()], backend, sink=store.images)))
    assert events[-1].status == "finished", events[-1]
    return events[-1].session_id


def _drag(store, session, reviewer="Ann"):
    """Drag the found sign's box to FIXED, as the box editor sends it (pixels), and save it."""
    left, top, right, bottom = FIXED[0]["bbox"]
    width, height = SIZE
    value = {"boxes": [{"xmin": left * width, "ymin": top * height, "xmax": right * width, "ymax": bottom * height,
                        "label": "sign"}]}
    return boxes.save(store, session, 1, value, reviewer=reviewer)


def _file(store, session, image_id) -> Path:
    return next(i.path for i in queries.get_trace(store, session).images if i.image_id == image_id)


def _same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def test_saved_regions_are_a_structured_correction_with_the_picture_redrawn(store, monkeypatch):
    session = _record(store, monkeypatch, FOUND)
    kind, saved = _drag(store, session)
    assert kind == "regions" and saved["regions"] == FIXED
    image = saved["image"]
    assert image["image_id"] == "image-1" and (image["width"], image["height"]) == SIZE
    redrawn = store.images_root / image["path"]
    assert not Path(image["path"]).is_absolute() and redrawn.is_file() and redrawn.stem == image["sha256"]

    trace = queries.get_trace(store, session)
    assert trace.corrected_outputs == {1: saved}
    last = trace.feedback[-1]
    assert (last.step, last.rating, last.blame, last.reviewer, last.note) == (1, "down", "tool", "Ann", None)
    assert last.corrected_output == saved
    assert boxes.corrected_regions(trace, 1) == FIXED and boxes.editable(trace, 1).regions == FIXED

    # The tool's picture, redrawn on its parent with the tool's own drawing: the box moved.
    with Image.open(redrawn) as new, Image.open(_file(store, session, "image-1")) as old:
        assert not _same(new, old)
        assert _same(new, boxes.draw_regions(_photo(), FIXED))

    # A later save replaces it; the step's rating stays the tool's fault.
    boxes.save(store, session, 1, {"boxes": []})
    trace = queries.get_trace(store, session)
    assert trace.corrected_outputs[1]["regions"] == [] and trace.step_blame[1] == "tool"


def test_a_corrected_output_that_is_not_one_is_refused_in_words(store, monkeypatch):
    session = _record(store, monkeypatch, FOUND)
    with pytest.raises(ValueError, match="bbox must be"):
        queries.correct_output(store, session, 1, {"regions": [{"label": "sign", "bbox": [0.5, 0.5, 0.4, 0.9]}]})
    with pytest.raises(ValueError, match="no label"):
        queries.correct_output(store, session, 1, {"regions": [{"label": " ", "bbox": [0.1, 0.1, 0.4, 0.9]}]})
    with pytest.raises(ValueError, match="a file in the images folder"):
        queries.correct_output(store, session, 1, {"regions": FIXED, "image": {
            "image_id": "image-1", "sha256": "0" * 64, "path": "/etc/passwd", "width": 1, "height": 1}})
    with pytest.raises(ValueError, match="no regions a tool found"):
        queries.correct_output(store, session, 2, {"regions": FIXED})  # Calculate
    with pytest.raises(ValueError, match="made no image 'image-0'"):
        relative = queries.get_trace(store, session).images[0].path
        queries.correct_output(store, session, 1, {"regions": FIXED, "image": {
            "image_id": "image-0", "sha256": relative.stem, "path": str(relative), "width": 320, "height": 200}})
    assert queries.get_trace(store, session).feedback == []


def test_the_corrected_observation_is_the_one_the_loop_writes_for_those_regions(store, monkeypatch):
    """A live run whose detector found FIXED writes the same observation text and the same picture bytes as
    the parent's corrected step 1 is exported and forked with."""
    parent = _record(store, monkeypatch, FOUND)
    _, saved = _drag(store, parent)
    live = _record(store, monkeypatch, FIXED)
    row = next(s for s in queries.get_trace(store, live).steps if s["index"] == 1)
    step = next(s for s in queries.get_trace(store, parent).steps if s["index"] == 1)
    seen = observed(step["output"], step["image_ids"], saved)
    assert seen.text == row["observation"] and seen.output == row["output"] and seen.image_ids == ["image-1"]
    assert "[0.5, 0.4, 0.9, 0.9]" in seen.text and "0.05" not in seen.text
    assert (store.images_root / saved["image"]["path"]).read_bytes() == _file(store, live, "image-1").read_bytes()


def _observation(messages: list[str]) -> str:
    return next(text for text in messages if "OBSERVATION" in text and "regions" in text)


@pytest.mark.parametrize("fmt", ["cota-mantis", "cota-llava", "trl-sft"])
def test_exports_write_the_corrected_regions_and_the_redrawn_picture(store, monkeypatch, tmp_path, fmt):
    session = _record(store, monkeypatch, FOUND)
    out = tmp_path / "before"
    assert export(store, out, fmt).count == 1
    before = _exported(out, fmt)
    _, saved = _drag(store, session)
    out = tmp_path / "after"
    result = export(store, out, fmt)
    assert result.count == 1 and result.reasons == {}
    after = _exported(out, fmt)

    old_text, new_text = _observation(before[0]), _observation(after[0])
    assert "[0.05, 0.1, 0.35, 0.5]" in old_text and "[0.5, 0.4, 0.9, 0.9]" not in old_text
    assert "'bbox': [0.5, 0.4, 0.9, 0.9]" in new_text and "[0.05, 0.1, 0.35, 0.5]" not in new_text
    assert new_text.count("<image>") == 1  # the picture is still shown where the tool's was
    # Only the observation changed: the request and the steps are the same turns.
    assert [t for t in before[0] if t != old_text] == [t for t in after[0] if t != new_text]

    (input_before, picture_before), (input_after, picture_after) = before[1], after[1]
    assert input_before == input_after and picture_before != picture_after
    redrawn = (store.images_root / saved["image"]["path"]).read_bytes()
    assert picture_after == f"images/{hashlib.sha256(redrawn).hexdigest()}.png"
    with Image.open(out / picture_after) as new, Image.open(tmp_path / "before" / picture_before) as old:
        assert not _same(new, old)
        # The pixels differ where the box was and where it is now, nowhere else.
        differ = ImageChops.difference(new.convert("RGB"), old.convert("RGB")).getbbox()
        assert differ[0] <= 0.05 * SIZE[0] + 2 and differ[2] >= 0.9 * SIZE[0] - 2 and differ[3] >= 0.9 * SIZE[1] - 2
    provenance = json.loads((out / "provenance.jsonl").read_text())
    assert provenance["corrections"]["outputs"] == {"1": {"regions": FIXED}}


def _exported(out: Path, fmt: str) -> tuple[list[str], list[str]]:
    """The row's turns as text and its images, whatever the format."""
    if fmt == "cota-llava":
        (row,) = json.loads((out / "data.json").read_text())
        return [m["value"] for m in row["conversations"]], row["image"]
    (row,) = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    if fmt == "trl-sft":
        texts = ["".join(p.get("text", "<image>\n") for p in m["content"]) for m in row["messages"]]
        return texts, row["images"]
    return [m["content"] for m in row["conversation"]], row["images"]


def test_a_fork_from_the_next_step_reads_the_corrected_regions_and_picture(store, monkeypatch):
    parent = _record(store, monkeypatch, FOUND)
    _, saved = _drag(store, parent)
    backend = Recording([json.dumps(CALC), json.dumps(DONE)])
    plan = plan_fork(store, parent, 2)
    events = list(store.record(fork(plan, backend, tools=default_tools(), sink=store.images)))
    assert events[-1].status == "finished"
    child = events[-1].session_id

    text, images = backend.prompts[0]  # what the model was given to write step 2
    assert "'bbox': [0.5, 0.4, 0.9, 0.9]" in text and "[0.05, 0.1, 0.35, 0.5]" not in text
    with Image.open(store.images_root / saved["image"]["path"]) as redrawn, \
            Image.open(_file(store, parent, "image-1")) as original:
        assert len(images) == 2 and _same(images[1], redrawn) and not _same(images[1], original)

    # The fork keeps step 1 as its model read it: the corrected observation and the redrawn picture.
    trace = queries.get_trace(store, child)
    step = next(s for s in trace.steps if s["index"] == 1)
    assert step["observation"] == observed(step["output"], step["image_ids"], saved).text
    assert step["output"]["regions"] == FIXED and "[0.5, 0.4, 0.9, 0.9]" in step["observation"]
    assert step["overlays"]["regions"] == FIXED  # what Review draws on the fork's step
    assert _file(store, child, "image-1").read_bytes() == (store.images_root / saved["image"]["path"]).read_bytes()
    assert trace.session["parent_session_id"] == parent and trace.corrected_outputs == {}


def test_a_fork_at_the_corrected_step_itself_runs_the_tool_again(store, monkeypatch):
    """Forking at step 1 replaces it: the tool runs again and finds what it finds; the correction is not used."""
    parent = _record(store, monkeypatch, FOUND)
    _drag(store, parent)
    backend = Recording([json.dumps(LOCALIZE), json.dumps(CALC), json.dumps(DONE)])
    events = list(store.record(fork(plan_fork(store, parent, 1), backend, tools=default_tools(), sink=store.images)))
    text, _ = backend.prompts[1]
    assert "[0.05, 0.1, 0.35, 0.5]" in text and "[0.5, 0.4, 0.9, 0.9]" not in text
    assert events[-1].status == "finished"
