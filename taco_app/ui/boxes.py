"""Fixing a step's box by dragging it, in the Review tab.

A step whose action takes a ``bbox`` (Crop, ZoomIn, EstimateRegionDepth) or whose tool found regions
(LocalizeObjects, DetectFaces) is shown once more under its overlay, in a box editor
(gradio-image-annotation's ``image_annotator``): the image the action names, with its box(es) on it,
which a person drags or resizes.

- A ``bbox`` action: "Save box as correction" records a corrected step (:func:`queries.correct_step`)
  whose action is the same one with the dragged box, the thought kept, and puts it in the step
  editor, so "Fork from step k" runs it with the real tool. Until the session is run again from that
  step, the exports leave it out: its observation belongs to the old box.
- A regions output: saving records the corrected output (:func:`queries.correct_output`: the step rated
  down, the tool's fault): the regions, and the tool's picture redrawn from its parent image with them
  by the tool's own drawing (:func:`taco_app.drawing.draw_regions`), kept in the store's images. The
  exports, and forks from a later step, read that step's observation with the corrected regions and
  that picture (:mod:`taco_app.store.corrections`). :func:`corrected_regions` reads them back; a later
  save replaces them.

The conversions are pure functions: the annotator works in pixels of the image it shows, TACO in
normalised ``[left, top, right, bottom]`` boxes (0..1, two decimals, as the model writes them).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from gradio_image_annotation import image_annotator

from PIL import Image

from taco_app.drawing import draw_regions, fit_within
from taco_app.runner import InputImage
from taco_app.store import queries
from taco_app.tools.base import image_id as normalise_image_id
from taco_app.tools.imageops import MAX_SIDE

BBOX_ACTIONS = ("Crop", "ZoomIn", "EstimateRegionDepth")  # actions that take a bbox argument
REGION_ACTIONS = ("LocalizeObjects", "DetectFaces")  # tools whose output lists regions
DIGITS = 2  # TACO's boxes: two decimals, as the tools and the model write them


# --- pixels and normalised boxes ----------------------------------------------------------------


def to_pixels(bbox: Any, width: int, height: int) -> dict[str, int]:
    """A normalised ``[left, top, right, bottom]`` box as the annotator's pixel box on a width×height image."""
    left, top, right, bottom = (min(max(float(v), 0.0), 1.0) for v in bbox)
    return {"xmin": round(left * width), "ymin": round(top * height),
            "xmax": round(right * width), "ymax": round(bottom * height)}


def to_normalised(box: Any, width: int, height: int) -> list[float]:
    """The annotator's pixel box as a normalised box: clamped to the image, two decimals, left < right
    and top < bottom; ValueError, in words, for a box that is not one or that is too thin to use."""
    if width <= 0 or height <= 0:
        raise ValueError(f"the image has no size ({width}×{height})")
    if not isinstance(box, dict):
        raise ValueError("a box must give xmin, ymin, xmax and ymax")
    try:
        numbers = [float(box[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
    except (KeyError, TypeError, ValueError):
        raise ValueError("a box must give xmin, ymin, xmax and ymax as numbers") from None
    if not all(v == v and abs(v) != float("inf") for v in numbers):
        raise ValueError("a box's corners must be finite numbers")
    x0, y0, x1, y1 = numbers
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    left, right = (round(min(max(x / width, 0.0), 1.0), DIGITS) for x in (x0, x1))
    top, bottom = (round(min(max(y / height, 0.0), 1.0), DIGITS) for y in (y0, y1))
    if right <= left or bottom <= top:
        where = "lies outside the picture" if (x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height) else "is too thin"
        raise ValueError(f"the box {where}: make it cover at least 1% of the picture's width and height")
    return [left, top, right, bottom]


# --- what a step lets a person edit -------------------------------------------------------------


@dataclass(frozen=True)
class Editable:
    """A step whose box(es) can be dragged: on which image, and what is there now."""

    kind: str  # "bbox": the action's argument; "regions": the tool's output
    step: int
    name: str  # the action's name
    image_id: str
    path: Path  # the image's file
    width: int
    height: int
    regions: list[dict[str, Any]]  # normalised, each {"label", "bbox"} (and "score" when the tool gave one)
    thought: str = ""
    action: dict[str, Any] = field(default_factory=dict)  # the step's action as shown (a correction wins)

    def value(self) -> dict[str, Any]:
        """The annotator's value: the image's file and its boxes in pixels."""
        boxes = [{**to_pixels(r["bbox"], self.width, self.height), "label": str(r.get("label") or "")}
                 for r in self.regions]
        return {"image": str(self.path), "boxes": boxes}


def _shown_step(trace: queries.Trace, step: int) -> tuple[str, dict[str, Any] | None]:
    """The step's thought and action as the Review tab shows it: a person's correction wins."""
    corrected = trace.corrected_steps.get(step)
    if isinstance(corrected, dict):
        actions = corrected.get("actions") or []
        return str(corrected.get("thought") or ""), actions[0] if actions and isinstance(actions[0], dict) else None
    row = next((s for s in trace.steps if s["index"] == step), None)
    if row is None or row.get("parse_error_code"):
        return "", None
    action = row.get("action")
    return row.get("thought") or "", action if isinstance(action, dict) else None


def _clean_regions(regions: Any) -> list[dict[str, Any]]:
    kept = []
    for region in regions if isinstance(regions, list) else []:
        box = region.get("bbox") if isinstance(region, dict) else None
        if isinstance(box, (list, tuple)) and len(box) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            item = {"label": str(region.get("label") or ""), "bbox": [float(v) for v in box]}
            if isinstance(region.get("score"), (int, float)):
                item["score"] = region["score"]
            kept.append(item)
    return kept


def corrected_regions(trace: queries.Trace, step: int) -> list[dict[str, Any]] | None:
    """The regions a person fixed on step ``step`` (the latest corrected output), or None."""
    fixed = trace.corrected_outputs.get(step)
    if not isinstance(fixed, dict) or not isinstance(fixed.get("regions"), list):
        return None
    return _clean_regions(fixed["regions"])


def editable(trace: queries.Trace | None, step: int) -> Editable | None:
    """What step ``step`` lets a person drag, or None (no such step, no box, its image gone)."""
    if trace is None:
        return None
    thought, action = _shown_step(trace, step)
    if action is None:
        return None
    name, arguments = action.get("name"), action.get("arguments")
    if not isinstance(arguments, dict) or "image" not in arguments:
        return None
    if name in BBOX_ACTIONS:
        bbox = arguments.get("bbox")
        regions = _clean_regions([{"label": str(name).lower(), "bbox": bbox}])
        kind = "bbox"
    elif name in REGION_ACTIONS:
        row = next((s for s in trace.steps if s["index"] == step), None)
        output = (row or {}).get("output")
        if not isinstance(output, dict) or not isinstance(output.get("regions"), list):
            return None  # the tool did not run, or failed: no regions to fix
        fixed = corrected_regions(trace, step)
        regions = fixed if fixed is not None else _clean_regions(output["regions"])
        kind = "regions"
    else:
        return None
    try:
        target = normalise_image_id(arguments["image"])
    except (TypeError, ValueError):
        return None
    image = next((i for i in trace.images if i.image_id == target), None)
    if image is None or not image.path.is_file():
        return None
    if kind == "bbox" and not regions:
        # A box the model got wrong (not 4 numbers): start from the whole image, to be dragged in.
        regions = [{"label": str(name).lower(), "bbox": [0.25, 0.25, 0.75, 0.75]}]
    return Editable(kind, step, str(name), target, image.path, image.width, image.height, regions, thought, action)


# --- saving -------------------------------------------------------------------------------------


def edited_regions(value: Any, shown: Editable) -> list[dict[str, Any]]:
    """The annotator's value as normalised regions ``{"label", "bbox"}`` on the shown image; ValueError
    in words when it cannot be saved. A region left where it was keeps the tool's score."""
    if not isinstance(value, dict):
        raise ValueError("there is no box to save: show a step with a box first")
    if value.get("orientation") not in (None, 0):
        raise ValueError("the picture is rotated: rotate it back upright first, so the box is measured on the"
                         " image the tool sees")
    boxes = value.get("boxes") or []
    if shown.kind == "bbox" and len(boxes) != 1:
        raise ValueError(f"{shown.name} takes one box; the picture has {len(boxes)}: "
                         + ("draw one" if not boxes else "remove the others"))
    before = {(r["label"], tuple(r["bbox"])): r.get("score") for r in shown.regions}
    regions = []
    for number, box in enumerate(boxes, 1):
        try:
            bbox = to_normalised(box, shown.width, shown.height)
        except ValueError as err:
            raise ValueError(f"box {number}: {err}" if len(boxes) > 1 else str(err)) from None
        label = " ".join(str(box.get("label") or "").split())
        if shown.kind == "regions" and not label:
            raise ValueError(f"box {number} has no label: give it one (e.g. {shown.regions[0]['label'] if shown.regions else 'face'})")
        region: dict[str, Any] = {"label": label, "bbox": bbox}
        score = before.get((label, tuple(bbox)))
        if score is not None:
            region["score"] = score
        regions.append(region)
    return regions


def redraw(store: Any, trace: queries.Trace, shown: Editable, regions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The picture the tool made at ``shown.step`` (e.g. LocalizeObjects' annotated photo) drawn again, as the
    tool draws it, on its parent image with ``regions``, and kept in the store's images (by content, as the
    step loop keeps a tool's pictures): ``{"image_id", "sha256", "path", "width", "height"}``; None when the
    tool made no picture of the image the regions are on."""
    row = next((r for r in trace.steps if r["index"] == shown.step), None) or {}
    produced = set(row.get("image_ids") or [])
    output = row.get("output") if isinstance(row.get("output"), dict) else {}
    made = [v for v in output.values() if isinstance(v, str) and v in produced]
    image = next((i for i in trace.images if i.image_id in made and i.parent == shown.image_id), None)
    parent = next((i for i in trace.images if i.image_id == shown.image_id), None)
    if image is None or parent is None:
        return None
    # The tool was given the parent as the step loop holds it: an input opened upright as RGB, a tool's picture as stored.
    if parent.role == "input":
        picture = InputImage.open(parent.path).image
    else:
        with Image.open(parent.path) as opened:
            picture = opened.copy()
    # As the step loop keeps a tool's picture: no side over ZoomIn's bound or the largest input's.
    limit = max([MAX_SIDE] + [max(i.width, i.height) for i in trace.images if i.role == "input"])
    drawn = fit_within(draw_regions(picture, regions), limit, reducing_gap=3.0)
    sha256, path = store.images.save(drawn)
    return {"image_id": image.image_id, "sha256": sha256, "path": str(path), "width": drawn.width,
            "height": drawn.height}


def save(store: Any, identifier: str, step: int, value: Any, *, reviewer: str | None = None) -> tuple[str, Any]:
    """Save the dragged box(es) of step ``step``: ``("bbox", corrected step)`` or ``("regions", corrected output)``
    (``{"regions", "image"?}``, see :func:`queries.correct_output`); ``reviewer``: who saved it.

    ValueError, in words, when the step has no box to fix or the box cannot be saved.
    """
    trace = queries.get_trace(store, identifier) if identifier else None
    if trace is None:
        raise ValueError(f"there is no session {identifier!r} in the store")
    shown = editable(trace, step)
    if shown is None:
        raise ValueError(f"step {step} has no box to fix: only {', '.join(BBOX_ACTIONS)} (their bbox) and"
                         f" {', '.join(REGION_ACTIONS)} (the regions they found) have one")
    regions = edited_regions(value, shown)
    if shown.kind == "bbox":
        arguments = {**shown.action["arguments"], "bbox": regions[0]["bbox"]}
        fixed = {"thought": shown.thought, "actions": [{"name": shown.name, "arguments": arguments}]}
        return "bbox", queries.correct_step(store, identifier, step, fixed, reviewer=reviewer)
    image = redraw(store, trace, shown, regions)
    output = {"regions": regions, **({"image": image} if image is not None else {})}
    return "regions", queries.correct_output(store, identifier, step, output, reviewer=reviewer)


# --- the Review tab's part ----------------------------------------------------------------------


@dataclass
class BoxEditor:
    """The box editor's components."""

    annotator: Any  # image_annotator
    save: gr.Button
    info: gr.Markdown


_EDITORS: "weakref.WeakKeyDictionary[Any, BoxEditor]" = weakref.WeakKeyDictionary()
HELP = ("Drag the box, or a corner or edge of it, then save it as the step's correction; "
        "then Fork from this step runs it with the new box.")
HELP_REGIONS = ("Drag, resize, add (Create box, then set its label) or remove the boxes the tool found, then save"
                " them: the step is rated bad, the tool's fault, and the exports, and forks from the next step,"
                " read the corrected regions and the tool's picture redrawn with them.")


def build(picture: Any) -> BoxEditor:
    """The box editor, hidden until a step with a box is shown; call it inside the layout, under
    ``picture`` (the step's overlay), which it belongs to."""
    with gr.Group(visible=True):
        annotator = image_annotator(None, label="Fix the box: drag it", visible=False, interactive=True,
                                    single_box=False, disable_edit_boxes=False, show_clear_button=False,
                                    show_download_button=False, show_share_button=False, sources=None,
                                    image_type="filepath", box_min_size=4, handle_size=10,
                                    enable_keyboard_shortcuts=False, elem_id="review-box-editor")
        info = gr.Markdown(visible=False, elem_id="review-box-info")
        save_button = gr.Button("Save box as correction", visible=False, elem_id="review-box-save", size="sm")
    editor = BoxEditor(annotator, save_button, info)
    _EDITORS[picture] = editor
    return editor


def editor_updates(studio: Any, identifier: str | None, upto: Any) -> tuple[Any, Any, Any]:
    """(annotator, info, save button) updates for the step shown: visible only when it has a box."""
    trace = queries.get_trace(studio.store, identifier) if identifier else None
    try:
        step = int(upto or 0)
    except (TypeError, ValueError):
        step = 0
    shown = editable(trace, step) if step > 0 else None
    if shown is None:
        hidden = gr.update(visible=False)
        return gr.update(value=None, visible=False), hidden, hidden
    single = shown.kind == "bbox"
    words = HELP if single else HELP_REGIONS
    what = f"the box of step {step}'s {shown.name} on {shown.image_id}" if single else \
        f"the regions {shown.name} found in {shown.image_id} at step {step}"
    return (gr.update(value=shown.value(), visible=True, single_box=single, disable_edit_boxes=single,
                      label=f"Fix {what}"),
            gr.update(value=words, visible=True),
            gr.update(value="Save box as correction" if single else "Save regions as correction", visible=True))


def wire(studio: Any, page: Any) -> BoxEditor:
    """Show the editor with each step shown, and save what is dragged; ``page``: the Review tab."""
    editor = _EDITORS[page.picture]
    at = [page.session_id, page.slider]
    outputs = [editor.annotator, editor.info, editor.save]

    def refresh(identifier, upto):
        return editor_updates(studio, identifier, upto)

    # A step is shown whenever the session or the slider changes (opening, stepping, a fork opened).
    for source in (page.session_id, page.slider):
        source.change(refresh, at, outputs, api_name=False, trigger_mode="always_last", show_progress="hidden")

    def save_box(identifier, upto, value, name=None, request: gr.Request = None):
        from taco_app.ui import review  # the tab this editor sits in

        if not identifier:
            raise gr.Error("Open a session first (click a row of the table).")
        step = int(upto or 1)
        reviewer = review._reviewer(name, request, optional=True)  # the login, or the name typed in the tab
        try:
            kind, saved = save(studio.store, identifier, step, value, reviewer=reviewer)
        except ValueError as err:
            raise gr.Error(f"Step {step}'s box was not saved: {err}.")
        trace = queries.get_trace(studio.store, identifier)

        if kind == "bbox":
            box = ", ".join(f"{v:g}" for v in saved["actions"][0]["arguments"]["bbox"])
            said = (f"Corrected step {step} saved: {saved['actions'][0]['name']} on [{box}]. Its observation belongs"
                    f" to the old box, so exports leave this session out until you press Fork from step {step}.")
            step_text = review.step_json(trace, step, trace.corrected_steps.get(step))
        else:
            said = (f"Step {step} saved as bad, the tool's fault, with {len(saved['regions'])} corrected region(s)"
                    + (f" and {saved['image']['image_id']} redrawn with them" if "image" in saved else "")
                    + f": the exports, and forks from step {step + 1}, read them.")
            step_text = gr.update()
        gr.Info(said)
        return review._feedback_text(trace), step_text, gr.update(value=said, visible=True)

    # The reviewer's name last: an API call that leaves it out still saves (unnamed), as the rating buttons do.
    editor.save.click(save_box, [*at, editor.annotator, page.reviewer], [page.feedback, page.step_text, editor.info],
                      api_name="save_box")
    return editor
