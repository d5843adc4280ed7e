"""Fixing a box by dragging it (taco_app.ui.boxes): the pixel ↔ normalised conversions, saving a dragged
box as a corrected step (or as a tool's corrected output), forking from it and exporting the fork, and the
box editor driven by a mouse in a real browser."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from taco_app.backends.replay import ReplayBackend
from taco_app.fork import fork, plan_fork
from taco_app.store import queries
from taco_app.store.export import export
from taco_app.tools import default_tools
from taco_app.ui import boxes, review
from taco_app.ui.forking import edited_step
from taco_app.ui.review import step_json

from .conftest import run_loop

CROP = {"thought": "The sign is at the top; I look closer.",
        "actions": [{"name": "Crop", "arguments": {"image": "image-0", "bbox": [0.1, 0.05, 0.9, 0.7]}}]}
CALC = {"thought": "Regular is $3.49.", "actions": [{"name": "Calculate", "arguments": {"expression": "50 / 3.49"}}]}
DONE = {"thought": "About 14.33 gallons.", "actions": [{"name": "Terminate", "arguments": {"answer": "14.33"}}]}
FACES = {"thought": "Who is there?", "actions": [{"name": "DetectFaces", "arguments": {"image": "image-0"}}]}


def _record(store, replies, size=(320, 200)) -> str:
    photo = Image.linear_gradient("L").convert("RGB").resize(size)
    backend = ReplayBackend([json.dumps(reply) for reply in replies])
    events = list(store.record(run_loop("How much gas can I buy with $50?", [photo], backend, sink=store.images)))
    assert events[-1].status == "finished", events[-1]
    return events[-1].session_id


# --- conversions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(320, 200), (1024, 768), (101, 333), (4000, 3000)])
def test_a_two_decimal_box_survives_the_round_trip_through_pixels(size):
    width, height = size
    for bbox in ([0.1, 0.05, 0.9, 0.7], [0.0, 0.0, 1.0, 1.0], [0.33, 0.47, 0.34, 0.52], [0.5, 0.01, 0.99, 0.02]):
        pixels = boxes.to_pixels(bbox, width, height)
        assert all(isinstance(v, int) for v in pixels.values())
        assert boxes.to_normalised(pixels, width, height) == bbox


@pytest.mark.parametrize("size", [(7, 5), (37, 91), (3, 1000)])
def test_on_tiny_and_odd_images_the_round_trip_is_within_a_pixel(size):
    width, height = size
    for bbox in ([0.1, 0.2, 0.9, 0.8], [0.0, 0.5, 0.5, 1.0]):
        back = boxes.to_normalised(boxes.to_pixels(bbox, width, height), width, height)
        limits = [0.5 / width + 0.005, 0.5 / height + 0.005] * 2
        assert all(abs(a - b) <= limit for a, b, limit in zip(back, bbox, limits)), (bbox, back)
        assert back[0] < back[2] and back[1] < back[3]


def test_pixel_boxes_are_clamped_ordered_and_rounded():
    assert boxes.to_normalised({"xmin": -40, "ymin": -3, "xmax": 250, "ymax": 90}, 200, 100) == [0.0, 0.0, 1.0, 0.9]
    # Dragged "inside out" (xmax left of xmin): the corners are put in order.
    assert boxes.to_normalised({"xmin": 150, "ymin": 80, "xmax": 50, "ymax": 20}, 200, 100) == [0.25, 0.2, 0.75, 0.8]
    assert boxes.to_normalised({"xmin": 33.3, "ymin": 0, "xmax": 66.7, "ymax": 10.04}, 100, 10) == [0.33, 0.0, 0.67, 1.0]
    # Strings of numbers, as a JSON client might send them, are read as numbers.
    assert boxes.to_normalised({"xmin": "10", "ymin": "10", "xmax": "90", "ymax": "50"}, 100, 100) == [0.1, 0.1, 0.9, 0.5]


@pytest.mark.parametrize("box, says", [
    ({"xmin": 10, "ymin": 10, "xmax": 10, "ymax": 50}, "too thin"),
    ({"xmin": 10, "ymin": 10, "xmax": 10.4, "ymax": 50}, "too thin"),  # under 1% of the width: rounds to one edge
    ({"xmin": 300, "ymin": 10, "xmax": 400, "ymax": 50}, "outside the picture"),
    ({"xmin": -90, "ymin": -60, "xmax": -1, "ymax": -1}, "outside the picture"),
    ({"xmin": 1, "ymin": 2, "xmax": 3}, "xmin, ymin, xmax and ymax"),
    ({"xmin": "left", "ymin": 2, "xmax": 3, "ymax": 4}, "as numbers"),
    ({"xmin": float("nan"), "ymin": 2, "xmax": 3, "ymax": 4}, "finite"),
    ([1, 2, 3, 4], "xmin, ymin, xmax and ymax"),
])
def test_a_box_that_is_not_one_is_refused_in_words(box, says):
    with pytest.raises(ValueError, match=says):
        boxes.to_normalised(box, 200, 100)


# --- what a step shows, and saving it -------------------------------------------------------------


def test_a_crop_step_shows_its_image_and_box_in_pixels(store):
    session = _record(store, [CROP, CALC, DONE])
    trace = queries.get_trace(store, session)
    shown = boxes.editable(trace, 1)
    assert (shown.kind, shown.name, shown.image_id, shown.width, shown.height) == ("bbox", "Crop", "image-0", 320, 200)
    assert shown.path == next(i.path for i in trace.images if i.image_id == "image-0") and shown.path.is_file()
    assert shown.value() == {"image": str(shown.path),
                             "boxes": [{"xmin": 32, "ymin": 10, "xmax": 288, "ymax": 140, "label": "crop"}]}
    assert boxes.editable(trace, 2) is None and boxes.editable(trace, 3) is None  # Calculate, Terminate: no box
    assert boxes.editable(trace, 9) is None and boxes.editable(None, 1) is None


def test_saving_a_dragged_box_records_the_corrected_step_with_the_thought_kept(store):
    session = _record(store, [CROP, CALC, DONE])
    value = {"image": "ignored.png", "boxes": [{"xmin": 64, "ymin": 100, "xmax": 192, "ymax": 180, "label": "crop",
                                                "color": (0, 0, 0)}], "orientation": 0}
    kind, saved = boxes.save(store, session, 1, value)
    assert kind == "bbox"
    expected = {"thought": CROP["thought"],
                "actions": [{"name": "Crop", "arguments": {"image": "image-0", "bbox": [0.2, 0.5, 0.6, 0.9]}}]}
    assert saved == expected
    trace = queries.get_trace(store, session)
    assert trace.corrected_steps == {1: expected}
    # The editor now starts from the correction, as the step editor does.
    assert boxes.editable(trace, 1).regions == [{"label": "crop", "bbox": [0.2, 0.5, 0.6, 0.9]}]
    # A second drag corrects the correction.
    boxes.save(store, session, 1, {"boxes": [{"xmin": 0, "ymin": 0, "xmax": 160, "ymax": 100}]})
    assert queries.get_trace(store, session).corrected_steps[1]["actions"][0]["arguments"]["bbox"] == [0, 0, 0.5, 0.5]


@pytest.mark.parametrize("value, says", [
    ({"boxes": []}, "takes one box; the picture has 0: draw one"),
    ({"boxes": [{"xmin": 1, "ymin": 1, "xmax": 90, "ymax": 90}] * 2}, "has 2: remove the others"),
    ({"boxes": [{"xmin": 1, "ymin": 1, "xmax": 90, "ymax": 90}], "orientation": 1}, "rotate it back upright"),
    ({"boxes": [{"xmin": 500, "ymin": 1, "xmax": 900, "ymax": 90}]}, "outside the picture"),
    (None, "no box to save"),
])
def test_a_box_that_cannot_be_saved_stores_nothing(store, value, says):
    session = _record(store, [CROP, CALC, DONE])
    with pytest.raises(ValueError, match=says):
        boxes.save(store, session, 1, value)
    with pytest.raises(ValueError, match="step 2 has no box to fix"):
        boxes.save(store, session, 2, {"boxes": [{"xmin": 1, "ymin": 1, "xmax": 90, "ymax": 90}]})
    with pytest.raises(ValueError, match="no session"):
        boxes.save(store, "nope", 1, {"boxes": []})
    assert queries.get_trace(store, session).feedback == []


def test_a_dragged_box_forked_from_runs_the_new_crop_and_the_fork_exports_with_it(store, tmp_path):
    """The Review tab's path: save the box, the step editor shows the correction, Fork from step 1 runs it;
    the parent is left out of the exports (its observation is the old crop's), the fork goes in with the new box."""
    parent = _record(store, [CROP, CALC, DONE])
    boxes.save(store, parent, 1, {"boxes": [{"xmin": 160, "ymin": 100, "xmax": 320, "ymax": 200}]})
    trace = queries.get_trace(store, parent)
    text = step_json(trace, 1, trace.corrected_steps.get(1))  # what the step editor now holds
    thought, action = edited_step(text, step_json(trace, 1, None), 1)
    assert action["arguments"]["bbox"] == [0.5, 0.5, 1.0, 1.0] and thought == CROP["thought"]
    plan = plan_fork(store, parent, 1, thought=thought, action=action)
    events = list(store.record(fork(plan, ReplayBackend([json.dumps(CALC), json.dumps(DONE)]), tools=default_tools(),
                                    sink=store.images)))
    child = events[-1].session_id
    assert events[-1].status == "finished" and child != parent
    child_trace = queries.get_trace(store, child)
    assert child_trace.steps[0]["action"]["arguments"]["bbox"] == [0.5, 0.5, 1.0, 1.0]
    crop = next(i for i in child_trace.images if i.image_id == "image-1")
    assert crop.parent == "image-0" and crop.bbox[2:] == [1.0, 1.0]  # the new region was cut out

    result = export(store, tmp_path / "out", "cota-mantis")
    assert result.count == 1 and result.reasons == {"stale-observation": 1}
    (row,) = [json.loads(line) for line in (tmp_path / "out" / "data.jsonl").read_text().splitlines()]
    assert child in row["id"]
    first = next(turn for turn in row["conversation"] if turn["role"] == "assistant")
    assert json.loads(first["content"])["actions"][0] == {"name": "Crop", "arguments": {"image": "image-0",
                                                                                       "bbox": [0.5, 0.5, 1.0, 1.0]}}


def test_regions_a_tool_found_are_saved_as_its_corrected_output(store):
    session = _record(store, [FACES, DONE], size=(300, 240))
    trace = queries.get_trace(store, session)
    shown = boxes.editable(trace, 1)
    assert (shown.kind, shown.name, shown.image_id) == ("regions", "DetectFaces", "image-0")
    assert shown.regions == _regions(trace)  # what the tool found (none, on a gradient)
    value = {"boxes": [{"xmin": 30, "ymin": 24, "xmax": 120, "ymax": 144, "label": " face "},
                       {"xmin": 150, "ymin": 48, "xmax": 240, "ymax": 168, "label": "face-2"}]}
    kind, saved = boxes.save(store, session, 1, value, reviewer=" Ann ")
    expected = [{"label": "face", "bbox": [0.1, 0.1, 0.4, 0.6]}, {"label": "face-2", "bbox": [0.5, 0.2, 0.8, 0.7]}]
    assert kind == "regions" and saved["regions"] == expected
    assert saved["image"]["image_id"] == "image-1"  # DetectFaces' picture, redrawn with the two faces
    trace = queries.get_trace(store, session)
    assert (trace.step_ratings[1], trace.step_blame[1]) == ("down", "tool")
    assert trace.corrected_outputs == {1: saved} and trace.feedback[-1].reviewer == "Ann"
    assert "**Corrected regions:** step 1 (2)" in review._feedback_text(trace)  # what the Review tab says of it
    assert boxes.corrected_regions(trace, 1) == expected
    assert boxes.editable(trace, 1).regions == expected  # the editor starts from them now
    with pytest.raises(ValueError, match="box 2 has no label"):
        boxes.save(store, session, 1, {"boxes": [value["boxes"][0], {**value["boxes"][1], "label": ""}]})
    # A later save replaces them; a later rating of the step leaves them (as it leaves a corrected step).
    boxes.save(store, session, 1, {"boxes": [value["boxes"][1]]})
    queries.rate(store, session, "up", step=1)
    trace = queries.get_trace(store, session)
    assert boxes.corrected_regions(trace, 1) == expected[1:] and boxes.editable(trace, 1).regions == expected[1:]


def _regions(trace):
    return trace.steps[0]["output"]["regions"]


def test_the_save_button_saves_under_the_reviewers_name(store):
    """Review's Save button sends the name typed in "Your name" (review-name) last; the save is kept under it,
    and a call that leaves the name out still saves, unnamed, as the rating buttons do."""
    from taco_app.ui.app import build_app
    from taco_app.ui.studio import Studio

    session = _record(store, [FACES, DONE], size=(300, 240))
    with build_app(Studio(store, probe=False)) as app:
        (saving,) = [f for f in app.fns.values() if f.api_name == "save_box"]
    assert getattr(saving.inputs[-1], "elem_id", None) == "review-name"
    value = {"boxes": [{"xmin": 30, "ymin": 24, "xmax": 120, "ymax": 144, "label": "face"}]}
    saving.fn(session, 1, value, "  Ann ")
    saving.fn(session, 1, value)
    assert [f.reviewer for f in queries.get_trace(store, session).feedback] == ["Ann", None]


def test_the_editor_shows_only_for_a_step_with_a_box(store):
    from types import SimpleNamespace

    session = _record(store, [CROP, CALC, DONE])
    studio = SimpleNamespace(store=store)
    annotator, info, button = boxes.editor_updates(studio, session, 1)
    assert annotator["visible"] and annotator["single_box"] and annotator["disable_edit_boxes"]
    assert annotator["value"]["boxes"][0]["xmin"] == 32 and info["visible"] and button["visible"]
    for where in ((session, 2), (session, 3), ("", 1), (None, None), (session, "x")):
        annotator, info, button = boxes.editor_updates(studio, *where)
        assert annotator["visible"] is False and annotator["value"] is None and button["visible"] is False


# --- the browser ------------------------------------------------------------------------------


CHROMIUM = Path(os.environ.get("TACO_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio"]


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
def test_dragging_the_crop_box_in_a_browser_saves_the_corrected_bbox(tmp_path):
    """Open a stored session with a Crop in Review, show step 1, drag the whole box and then its bottom-right
    corner with the mouse, save: the store holds the box where it was dropped (within 0.01), under the
    reviewer's name typed in the tab."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from .ui_server import running

    with running(tmp_path / "home") as (url, studio), sync_api.sync_playwright() as p:
        session = _record(studio.store, [CROP, CALC, DONE], size=(640, 400))
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1100})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            page.get_by_role("tab", name="Review").click()
            page.locator("#review-search input, #review-search textarea").first.fill("gas")
            page.locator("#review-refresh").click()
            page.locator("#review-table").locator(f"text={session} >> visible=true").first.click()
            page.locator("#review-chat").get_by_text("Answer:").wait_for(timeout=30_000)
            name = page.locator("#review-name input, #review-name textarea").first
            name.fill("Ada")  # saved with the box, as with each rating
            name.blur()
            # Step 3 (Terminate) has no box: the editor stays hidden until step 1 is shown.
            for _ in range(2):
                page.get_by_role("button", name="◀ Previous step").click()
            page.get_by_role("button", name="Fork from step 1").wait_for(timeout=10_000)
            canvas = page.locator("#review-box-editor canvas")
            canvas.wait_for(state="visible", timeout=20_000)
            page.wait_for_function("""() => {
                const c = document.querySelector('#review-box-editor canvas');
                if (!c || !c.width || !c.height) return false;
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                for (let i = 3; i < d.length; i += 4 * 97) if (d[i]) return true;  // the image is drawn
                return false; }""", timeout=20_000)
            canvas.scroll_into_view_if_needed()

            def at(x: float, y: float) -> tuple[float, float]:
                """A normalised point of the image → the page's pixels. The image is fitted to the canvas's
                width (never enlarged) and centred; its top is the canvas's. Measured at each use: the page
                may scroll between two drags."""
                frame = canvas.bounding_box()
                scale = min(1.0, frame["width"] / 640)
                shown_w, shown_h = 640 * scale, 400 * scale
                return frame["x"] + (frame["width"] - shown_w) / 2 + x * shown_w, frame["y"] + y * shown_h

            def drag(start, end):
                page.mouse.move(*at(*start))
                page.mouse.down()
                for k in range(1, 9):  # several moves, as a hand makes
                    page.mouse.move(*at(start[0] + (end[0] - start[0]) * k / 8, start[1] + (end[1] - start[1]) * k / 8))
                page.mouse.up()

            # The Crop's box is [0.1, 0.05, 0.9, 0.7]: move it by its middle 0.05 left, 0.2 down ...
            drag((0.5, 0.4), (0.45, 0.6))  # → [0.05, 0.25, 0.85, 0.9]
            # ... then pull its bottom-right corner handle to (0.6, 0.8).
            drag((0.85, 0.9), (0.6, 0.8))  # → [0.05, 0.25, 0.6, 0.8]
            page.locator("#review-box-save").click()
            page.locator("#review-box-info").get_by_text("Corrected step 1 saved").wait_for(timeout=20_000)
            trace = queries.get_trace(studio.store, session)
            fixed = trace.corrected_steps[1]
            assert trace.feedback[-1].reviewer == "Ada"
            bbox = fixed["actions"][0]["arguments"]["bbox"]
            assert all(abs(a - b) <= 0.01 for a, b in zip(bbox, [0.05, 0.25, 0.6, 0.8])), bbox
            assert fixed["thought"] == CROP["thought"] and fixed["actions"][0]["arguments"]["image"] == "image-0"
            # The step editor now holds the corrected step, so Fork from step 1 runs the new box.
            editor = page.locator("#review-step-text").inner_text()
            assert f'{bbox[2]:g}' in editor and "0.9" not in editor, editor
            assert not errors, errors
        finally:
            browser.close()
