"""The UI's rendering layer: events → chat messages, stored traces → the same events, step pictures.

Hand-built events for the exact shapes, and real scripted sessions (run_session, offline tools) for
realism. No gradio and no server: the renderers return plain dicts and PIL images.
"""

from __future__ import annotations

import html
import json
import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageColor
from skimage import data

from taco_app.cota import events as ev
from taco_app.cota.actions import Action
from taco_app.cota.parser import partial_thought
from taco_app.drawing import COLOURS, colorize_depth, colormap
from taco_app.store.codec import trace_events
from taco_app.store.db import Store
from taco_app.store.files import ImageFiles
from taco_app.store.queries import get_trace
from taco_app.ui.overlays import render_step
from taco_app.ui.render import ChatView, chat_messages, code_block, escape_text, images_seen, step_choices

from .conftest import examples, run_session

RED = ImageColor.getrgb(COLOURS[0])  # the first region's colour
GREY = (128, 128, 128)
FENCE = re.compile(r"^(`{3,})[^\n]*\n.*?\n\1$", re.DOTALL | re.MULTILINE)


def step(name=None, thought="t", **arguments):
    return json.dumps({"thought": thought, "actions": [{"name": name, "arguments": arguments}] if name else []})


def outside_code(content: str) -> str:
    return FENCE.sub("", content)


@pytest.fixture
def files(taco_home) -> ImageFiles:
    return ImageFiles(taco_home / "images")


def started(files: ImageFiles, *pictures: Image.Image, question="q") -> ev.SessionStarted:
    infos = []
    for i, picture in enumerate(pictures):
        sha, path = files.save(picture)
        infos.append(ev.ImageInfo(f"image-{i}", sha, str(path), picture.width, picture.height))
    return ev.SessionStarted(session_id="s", question=question, images=infos)


def tool_step(n, name, arguments, overlays, output=None, **more):
    action = Action(name, arguments)
    return [ev.ActionParsed(step=n, raw="{}", thought="t", action=action, generation_s=0.5),
            ev.ToolStarted(step=n, action=action),
            ev.Observation(step=n, action=action, observation="OBSERVATION:\n{}", output=output or {}, overlays=overlays,
                           tool_s=0.25, **more)]


# --- the chat -----------------------------------------------------------------------------------


def test_thought_streams_token_by_token_then_settles():
    thought = "The sign says <b>$3.49</b> & more"
    raw = json.dumps({"thought": thought, "actions": [{"name": "OCR", "arguments": {"image": "image-0"}}]})
    view = ChatView()
    view.add(ev.SessionStarted(question="How much?", images=[ev.ImageInfo("image-0", "x", "p", 1, 1)]))
    view.add(ev.StepStarted(step=1))
    shown = []
    for i in range(0, len(raw), 3):
        view.add(ev.ThoughtDelta(step=1, text=raw[i:i + 3]))
        message = view.messages()[1]
        assert message["metadata"]["status"] == "pending" and message["metadata"]["id"] == "step-1"
        expected = partial_thought(raw[:i + 3])
        assert message["content"] == (escape_text(expected) if expected else "*Thinking…*")
        shown.append(expected or "")
    grown = [s for s in shown if s]
    assert len(set(grown)) > 5 and all(b.startswith(a) for a, b in pairwise(grown))
    action = Action("OCR", {"image": "image-0"})
    view.add(ev.ActionParsed(step=1, raw=raw, thought=thought, action=action, generation_s=1.5))
    view.add(ev.ToolStarted(step=1, action=action))
    assert "*Running OCR…*" in view.messages()[1]["content"]
    view.add(ev.Observation(step=1, action=action, observation="OBSERVATION:\n{'text': 'FUEL'}", tool_s=0.25))
    message = view.messages()[1]
    # Done: no status, so the page shows the step open (Gradio folds a "done" thought).
    assert message["metadata"] == {"title": "Step 1 · OCR", "id": "step-1", "duration": 1.75}
    assert message["content"].startswith("The sign says &lt;b&gt;\\$3.49&lt;/b&gt; &amp; more")
    assert '**Action:** OCR\n```json\n{"image": "image-0"}\n```' in message["content"]
    assert "OBSERVATION:\n{'text': 'FUEL'}" in message["content"]
    assert "generation 1.50 s · tool 0.25 s" in message["content"]
    assert view.messages()[0] == {"role": "user", "content": "How much?\n\n*Images: image-0*", "metadata": {}}


def test_raw_text_that_is_not_json_streams_as_is():
    view = ChatView()
    for piece in ["Let me ", "look at <b>this</b>", " first."]:
        view.add(ev.ThoughtDelta(step=1, text=piece))
    assert view.messages()[0]["content"] == "Let me look at &lt;b&gt;this&lt;/b&gt; first."
    view.add(ev.ThoughtDelta(step=2, text='{"thou'))  # JSON on its way: no raw braces shown
    assert view.messages()[1]["content"] == "*Thinking…*"


def test_a_streamed_chunk_re_renders_only_its_own_step():
    view = ChatView()
    for n in range(1, 30):
        view.add(ev.ActionParsed(step=n, raw="{}", thought=f"step {n}", action=None))
        view.add(ev.Observation(step=n, observation="OBSERVATION: none"))
    view.add(ev.ThoughtDelta(step=30, text='{"thought": "a'))
    before = view.messages()
    view.add(ev.ThoughtDelta(step=30, text="b"))
    after = view.messages()
    assert all(a["content"] is b["content"] for a, b in zip(before[:-1], after[:-1]))  # reused, not re-rendered
    assert after[-1]["content"] == "ab" and before[-1]["content"] == "a"
    after[0]["metadata"]["title"] = "changed"
    assert view.messages()[0]["metadata"]["title"] == "Step 1 · no action"  # fresh dicts every time


def test_a_real_session_renders_every_kind_of_step():
    outputs = [step("Crop", "Look closer", image="image-0", bbox=[0.1, 0.1, 0.5, 0.5]),
               "not json <script>alert(1)</script>",
               step("Crop", image="image-0", bbox=[0.5, 0.1, 0.2, 0.5]),
               step(None, "nothing to do"),
               step("Calculate", expression="50 / 3.49"),
               step("Terminate", answer="About 14.33 gallons")]
    events = run_session(outputs, [Image.new("RGB", (200, 100), "navy")], question="How much gas?")
    messages = chat_messages(events)
    json.dumps(messages)  # JSON-safe
    assert [m["role"] for m in messages] == ["user"] + ["assistant"] * 7
    assert [m["metadata"].get("title") for m in messages[1:7]] == [
        "Step 1 · Crop", "Step 2 · parse error", "Step 3 · Crop", "Step 4 · no action", "Step 5 · Calculate",
        "Step 6 · Terminate"]
    assert all("status" not in m["metadata"] for m in messages[1:7])  # finished steps stay open
    crop, bad, failed, empty, calc = (m["content"] for m in messages[1:6])
    assert crop.startswith("Look closer") and "*New image: image-1*" in crop and "image-1: <image>" in crop
    assert bad.startswith("**Could not parse the model's reply:** &lt;class 'json.decoder.JSONDecodeError'&gt;")
    assert "```text\nnot json <script>alert(1)</script>\n```" in bad and "Please format the output" in bad
    assert "**The tool failed:** &lt;class 'ValueError'&gt;: bbox must have left &lt; right" in failed
    assert messages[3]["metadata"]["log"] == "tool failed" and messages[2]["metadata"]["log"] == "could not parse"
    assert "**No action:**" in empty and "No action has been provided" in empty
    assert "OBSERVATION:\n{'result': 14.326647564469914}" in calc
    assert messages[-1]["content"].startswith("**Answer:** About 14.33 gallons") and messages[-1]["metadata"] == {}


def test_failed_max_steps_and_cancelled_sessions_say_why():
    failed = chat_messages(run_session([step("Calculate", expression="1+1")], [Image.new("RGB", (50, 50))]))
    assert failed[-1]["content"].startswith("**The session failed.** the replay script has no more outputs")
    limited = chat_messages(run_session([step("Calculate", expression="1+1")] * 3, [], max_replies=1))
    assert limited[-1]["content"].startswith("**No answer.** No answer within 2 steps")
    assert "*Not run: the session ended" in limited[-2]["content"]  # the last step's action never ran
    cancelled = chat_messages([ev.StepStarted(step=1), ev.ThoughtDelta(step=1, text="hm"),
                               ev.Finished(step=1, status="cancelled", message="Stopped while the model was replying.")])
    assert "status" not in cancelled[0]["metadata"]  # no spinner once the session has ended
    assert cancelled[-1]["content"] == "**Stopped.** Stopped while the model was replying."
    broken = chat_messages([ev.Error(step=1, message="The model backend failed: <boom>")])  # no Finished (yet)
    assert broken[-1]["content"] == "**Error:** The model backend failed: &lt;boom&gt;"


def test_review_waits_and_an_edit_shows_what_ran_and_what_the_model_proposed():
    proposed = Action("OCR", {"image": "image-0"})
    edited = Action("Crop", {"image": "image-0", "bbox": [0, 0, 0.5, 0.5]})
    view = ChatView()
    view.add(ev.ActionParsed(step=1, thought="read it", action=proposed))
    view.add(ev.ActionReview(step=1, action=proposed))
    assert "*Waiting for review: approve, edit or stop this action.*" in view.messages()[0]["content"]
    view.add(ev.ActionEdited(step=1, original=proposed, action=edited, text="{}"))
    view.add(ev.ToolStarted(step=1, action=edited))
    message = view.messages()[0]
    assert message["metadata"]["title"] == "Step 1 · Crop" and "Waiting for review" not in message["content"]
    assert '**Action:** Crop\n```json\n{"image": "image-0", "bbox": [0, 0, 0.5, 0.5]}' in message["content"]
    assert '*Edited at review; the model proposed:*\n```json\n{"name": "OCR"' in message["content"]
    stopped = chat_messages([ev.ActionParsed(step=1, action=proposed), ev.ActionReview(step=1, action=proposed),
                             ev.Finished(step=1, status="cancelled", message="Stopped at the review of step 1.")])
    assert "*Not run: the session ended" in stopped[0]["content"] and "Waiting" not in stopped[0]["content"]
    assert stopped[-1]["content"] == "**Stopped.** Stopped at the review of step 1."


def test_html_and_markdown_from_anyone_come_out_as_text():
    hostile = "<img src=x onerror=alert(1)> <script>alert(2)</script> [link](javascript:x) ![i](http://x/y.png)"
    action = Action("<b>OCR</b>", {"image": "```<script>"})
    events = [ev.SessionStarted(question=hostile),
              ev.ActionParsed(step=1, raw="r", thought=hostile, action=action),
              ev.ToolStarted(step=1, action=action),
              ev.Observation(step=1, action=action, observation="OBSERVATION:\n```\n" + hostile, error=hostile),
              ev.ParseError(step=2, raw="````\n</code><script>x</script>", message=hostile, observation=hostile),
              ev.FinalAnswer(step=3, answer=hostile), ev.Finished(step=3, answer=hostile)]
    messages = chat_messages(events)
    for message in messages:
        text = outside_code(message["content"]) + str(message["metadata"].get("title", ""))
        assert "<" not in text and ">" not in text.replace("&gt;", "")
        assert "](" not in text.replace("\\](", "")  # no link or image syntax survives
    assert messages[1]["metadata"]["title"] == "Step 1 · &lt;b&gt;OCR&lt;/b&gt;"
    assert "&lt;img src=x onerror=alert(1)&gt;" in messages[0]["content"]
    # A fence longer than any backtick run inside: the raw text cannot close its block early.
    assert "`````text\n````\n</code><script>x</script>\n`````" in messages[2]["content"]
    assert code_block("a ``` b") == "````text\na ``` b\n````"


# Markdown's backslash escapes (any ASCII punctuation) and HTML entities, undone: what the page shows.
BACKSLASH_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
LINKS_AND_MATH = ("See http://127.0.0.1:9/pixel, HTTPS://x.org/a?b=c, ftp://f.org, www.example.org or WWW.X.ORG,"
                  " mail admin@example.org; $$x^2$$ and $\\alpha$ cost $50")


def as_shown(markdown: str) -> str:
    return html.unescape(BACKSLASH_ESCAPE.sub(r"\1", markdown))


def linkable(markdown: str) -> list[str]:
    """What GFM (the Chatbot's marked) would turn into a link or LaTeX: an unescaped "://", "www.", "@", "$"."""
    return re.findall(r"(?<!\\):(?=//)|(?i:(?<=www))(?<!\\)\.|(?<!\\)[@$]", markdown)


def test_urls_addresses_and_latex_from_anyone_are_neither_links_nor_math():
    shown = escape_text(LINKS_AND_MATH)
    assert as_shown(shown) == LINKS_AND_MATH  # the page shows it as typed
    assert linkable(shown) == [] and "$$" not in shown
    action = Action("http://x.org", {"url": "http://x.org"})
    events = [ev.SessionStarted(question=LINKS_AND_MATH),
              ev.ActionParsed(step=1, raw="r", thought=LINKS_AND_MATH, action=action),
              ev.Observation(step=1, action=action, observation="OBSERVATION:\n$$x$$ http://x.org",
                             error=LINKS_AND_MATH),
              ev.FinalAnswer(step=2, answer=LINKS_AND_MATH),
              ev.Finished(step=2, status="failed", message=LINKS_AND_MATH)]
    for message in chat_messages(events):
        text = outside_code(message["content"]) + str(message["metadata"].get("title", ""))
        assert linkable(text) == [], text


@settings(max_examples=examples(300), deadline=None)
@given(st.text())
def test_escaped_text_always_reads_as_typed_and_links_nothing(text):
    shown = escape_text(text)
    assert as_shown(shown) == text
    assert linkable(shown) == [] and "$$" not in shown and "<" not in shown


def test_long_observations_are_cut_with_a_note():
    events = [ev.ActionParsed(step=1, action=None), ev.Observation(step=1, observation="x" * 9000)]
    content = chat_messages(events)[0]["content"]
    assert "x" * 4000 + "\n```" in content and "x" * 4001 not in content
    assert "*(the first 4,000 of 9,000 characters)*" in content


def test_step_choices_and_the_gallery_of_images(taco_home):
    events = run_session([step("Crop", image="image-0", bbox=[0.1, 0.1, 0.5, 0.5]), "oops",
                          step("ZoomIn", image="image-1", bbox=[0.2, 0.2, 0.8, 0.8], zoom_factor=2),
                          step("Terminate", answer="x")],
                         [Image.new("RGB", (80, 60), "red")])
    assert step_choices(events) == [("Step 1 · Crop", 1), ("Step 2 · parse error", 2), ("Step 3 · ZoomIn", 3),
                                    ("Step 4 · Terminate", 4)]
    gallery = images_seen(events)
    assert [caption for _, caption in gallery] == ["image-0 (input)", "image-1 (Crop of image-0, step 1)",
                                                   "image-2 (ZoomIn of image-1, step 3)"]
    assert all(Path(path).is_file() for path, _ in gallery)


# --- stored traces ------------------------------------------------------------------------------


def round_trip(store: Store, events: list[ev.Event]) -> list[ev.Event]:
    list(store.record(iter(events)))
    return trace_events(get_trace(store, events[0].session_id))


@pytest.mark.store
def test_a_stored_trace_renders_exactly_like_the_live_run(store):
    outputs = [step("DetectFaces", "Who is <here>?", image="image-0"),
               step("Crop", image="image-0", bbox=[0.3, 0.1, 0.6, 0.4]),
               "{'thought': broken", step("Crop", image="image-9", bbox=[0.1, 0.1, 0.2, 0.2]), step(None),
               step("ZoomIn", image="image-2", bbox=[0.2, 0.2, 0.8, 0.8], zoom_factor=2),
               step("Calculate", expression="2 + 3"), step("Terminate", answer={"count": 1})]
    live = run_session(outputs, [Image.fromarray(data.astronaut())])
    stored = round_trip(store, live)
    # Equal, timings included: the store keeps generation_s, tool_s and total_s as they were.
    assert chat_messages(stored) == chat_messages(live)
    assert step_choices(stored) == step_choices(live)
    assert [c for _, c in images_seen(stored)] == [c for _, c in images_seen(live)]
    live_picture, live_caption = render_step(live, 1)
    stored_picture, stored_caption = render_step(stored, 1)
    assert stored_caption == live_caption and "- face at [" in live_caption
    assert stored_picture.tobytes() == live_picture.tobytes()
    kinds = [e.kind for e in live if e.kind not in ("thought_delta", "step_started")]
    assert [e.kind for e in stored] == kinds


@pytest.mark.store
def test_failed_and_max_steps_traces_round_trip(store):
    limited = run_session([step("Calculate", expression="1+1")] * 3, [], max_replies=1)
    assert chat_messages(round_trip(store, limited)) == chat_messages(limited)
    # A failed backend leaves its unfinished step unstored: the live view shows it, the trace cannot.
    failed = run_session([step("Calculate", expression="1+1")], [])
    stored = chat_messages(round_trip(store, failed))
    assert stored == [m for m in chat_messages(failed) if m["metadata"].get("id") != "step-2"]


# --- step pictures ------------------------------------------------------------------------------


def test_boxes_are_drawn_where_the_regions_are(files):
    events = [started(files, Image.new("RGB", (400, 200), GREY)),
              *tool_step(1, "LocalizeObjects", {"image": "image-0", "objects": ["cat"]},
                         {"regions": [{"label": "cat", "bbox": [0.25, 0.25, 0.75, 0.75], "score": 0.9}],
                          "on": "image-0"})]
    picture, caption = render_step(events, 1)
    assert picture.size == (400, 200)
    assert picture.getpixel((100, 120)) == RED and picture.getpixel((300, 120)) == RED  # left and right edges
    assert picture.getpixel((200, 150)) == RED  # bottom edge
    assert picture.getpixel((200, 100)) == GREY and picture.getpixel((20, 180)) == GREY  # inside and outside untouched
    assert caption.splitlines() == ["Step 1 · LocalizeObjects on image-0", "- cat 0.90 at [0.25, 0.25, 0.75, 0.75]"]


def test_large_images_are_downscaled_with_their_boxes(files):
    events = [started(files, Image.new("RGB", (4000, 2000), GREY)),
              *tool_step(1, "LocalizeObjects", {"image": "image-0", "objects": ["cat"]},
                         {"regions": [{"label": "cat", "bbox": [0.25, 0.25, 0.75, 0.75], "score": 0.9}]})]
    picture, caption = render_step(events, 1)
    assert picture.size == (1600, 800)
    assert picture.getpixel((400, 500)) == RED and picture.getpixel((1200, 500)) == RED
    assert picture.getpixel((800, 400)) == GREY and "Shown at 1600×800 (the image is 4000×2000)" in caption


def test_crop_region_is_outlined_on_the_parent_and_faces_are_boxed(taco_home):
    events = run_session([step("Crop", image="image-0", bbox=[0.2, 0.2, 0.6, 0.6]),
                          step("DetectFaces", image="image-0"),
                          step("Terminate", answer="x")], [Image.new("RGB", (300, 200), GREY)])
    picture, caption = render_step(events, 1)
    assert picture.size == (300, 200)  # the parent, not the crop
    assert picture.getpixel((60, 80)) == RED and picture.getpixel((180, 80)) == RED  # left and right edges
    assert picture.getpixel((120, 80)) == GREY
    assert "- crop at [0.20, 0.20, 0.60, 0.60]" in caption and "Produced image-1." in caption
    picture, caption = render_step(events, 2)  # no faces in a grey square
    assert picture.size == (300, 200) and "Nothing found." in caption
    faces = run_session([step("DetectFaces", image="image-0"), step("Terminate", answer="x")],
                        [Image.fromarray(data.astronaut())])
    picture, caption = render_step(faces, 1)
    box = next(e for e in faces if isinstance(e, ev.Observation)).overlays["regions"][0]["bbox"]
    assert picture.getpixel((round(box[0] * 512), round((box[1] + box[3]) / 2 * 512))) == RED and "- face at" in caption


def depth_events(files: ImageFiles, size: tuple[int, int]) -> tuple[list[ev.Event], Path]:
    width, height = size
    depth = np.tile(np.linspace(0.0, 5.0, width, dtype=np.float32), (height, 1))  # near on the left
    sha, path = files.save(colorize_depth(depth))
    overlays = {"regions": [{"label": "depth", "bbox": [0.4, 0.4, 0.6, 0.6]}], "depth_range": [0.0, 5.0],
                "artifacts": {"depth_map": {"sha256": sha, "path": str(path)}}}
    arguments = {"image": "image-0", "bbox": [0.4, 0.4, 0.6, 0.6]}
    events = [started(files, Image.new("RGB", size, GREY)),
              *tool_step(1, "EstimateRegionDepth", arguments, overlays, output={"depth": 2.5})]
    return events, path


def test_depth_map_is_shown_with_its_region_and_its_scale(files):
    events, path = depth_events(files, (300, 200))
    picture, caption = render_step(events, 1)
    assert picture.size == (300, 200)  # the map carries its own scale bar: no second legend
    assert picture.getpixel((120, 100)) == RED  # the region, outlined on the map
    assert picture.getpixel((5, 20)) != GREY  # the map, not the photo
    assert "Depth map of image-0: bright = near, dark = far." in caption
    assert "Depth from 0 (nearest) to 5 (farthest)" in caption and "Depth of the region: 2.5" in caption
    path.unlink()
    picture, caption = render_step(events, 1)
    assert picture.getpixel((5, 20)) == GREY and "The depth map file is missing; showing image-0 itself." in caption


def test_a_small_depth_map_gets_a_legend_band(files):
    events, _ = depth_events(files, (48, 40))  # too small for the tool's own scale bar
    picture, _ = render_step(events, 1)
    assert picture.width == 48 and picture.height > 40
    near, far = tuple(colormap(np.array([1.0]))[0]), tuple(colormap(np.array([0.0]))[0])
    pad = 6  # depth_legend: half the label size, 12 px at least
    assert np.abs(np.subtract(picture.getpixel((pad, 40 + pad + 1)), near)).max() <= 8
    assert np.abs(np.subtract(picture.getpixel((48 - pad - 1, 40 + pad + 1)), far)).max() <= 8


def test_tags_and_similarity_scores_are_listed(files):
    events = [started(files, Image.new("RGB", (64, 64), GREY)),
              *tool_step(1, "GetObjects", {"image": "image-0"}, {"tags": [{"tag": "cat", "score": 0.81}]}),
              *tool_step(2, "GetImageToTextsSimilarity", {"image": "image-0", "texts": ["cat", "dog"]},
                         {"reference": "image-0", "best": "cat",
                          "scores": [{"text": "cat", "score": 0.9}, {"text": "dog", "score": 0.1}]})]
    assert render_step(events, 1)[1].splitlines()[1] == "Tags: cat 0.81"
    picture, caption = render_step(events, 2)
    assert picture.size == (64, 64) and "- cat: 0.900 (best)" in caption and "- dog: 0.100" in caption


def test_nothing_to_draw_never_crashes(files, taco_home):
    info = started(files, Image.new("RGB", (40, 40), GREY))
    events = [info, *tool_step(1, "OCR", {"image": "image-0"}, {}),
              *tool_step(2, "Frobnicate", {"image": "image-7"}, {}, error="<class 'ValueError'>: unknown"),
              *tool_step(3, "LocalizeObjects", {"image": "image-0"},
                         {"regions": ["junk", {"bbox": [1, 2]}], "depth_range": "x"}),
              ev.ParseError(step=4, raw="x"), *tool_step(5, "Calculate", {"expression": "1"}, {})]
    picture, caption = render_step(events, 1)
    assert picture.size == (40, 40) and "OCR has nothing to draw; showing image-0 as the model saw it." in caption
    picture, caption = render_step(events, 2)
    assert picture is None and caption.splitlines() == [
        "Step 2 · Frobnicate on image-7", "The tool failed: <class 'ValueError'>: unknown",
        "image-7 is not an image of this session; nothing to draw."]
    assert render_step(events, 3)[0].size == (40, 40)
    assert render_step(events, 4)[1] == "Step 4: the model's reply could not be parsed, so no tool ran; nothing to draw."
    assert render_step(events, 5)[0] is None and render_step(events, 99)[0] is None
    # A path stored relative to the images folder resolves; a file that is gone says so.
    relative = Path(info.images[0].path).relative_to(taco_home / "images")
    info.images[0].path = str(relative)
    assert render_step(events, 1)[0].size == (40, 40)
    (taco_home / "images" / relative).unlink()
    picture, caption = render_step(events, 1)
    assert picture is None and f"The file of image-0 is missing ({relative}); nothing to draw." in caption
    assert images_seen(events) == []


@pytest.mark.slow
@pytest.mark.store
def test_the_fuel_sign_example_with_real_ocr(store):
    """The README's example end to end with easyocr (slow on a CPU: it loads the OCR model)."""
    root = Path(__file__).resolve().parent.parent / "assets" / "examples"
    outputs = json.loads((root / "fuel_prices.replay.json").read_text())
    live = run_session(outputs, [root / "fuel_prices.png"], question="How much gas can I buy with $50?")
    messages = chat_messages(live)
    assert "Regular $3.49" in messages[1]["content"] and messages[1]["metadata"]["title"] == "Step 1 · OCR"
    assert messages[-1]["content"].startswith("**Answer:** About 14.33 gallons")
    assert chat_messages(round_trip(store, live)) == messages
    picture, caption = render_step(live, 1)  # each text read, boxed on the picture with its confidence
    assert picture is not None and "has nothing to draw" not in caption
    assert re.search(r"^- \$3\.49 [01]\.\d\d at \[0\.6\d, 0\.2\d, 0\.8\d, 0\.3\d\]$", caption, re.M), caption
