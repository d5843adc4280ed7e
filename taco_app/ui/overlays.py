"""Pictures of what one step's tool saw: boxes, faces, crop regions and depth maps, for the UI.

Pure PIL, no gradio. It reads a session's events — live, or rebuilt from the store by
:func:`taco_app.store.codec.trace_events` — so the Run and Review tabs draw a step the same way, and
draws with :mod:`taco_app.drawing`, as the tools do, so a box looks the same on both.
:func:`render_step` returns a picture and a plain-text caption that lists what is drawn. It never
raises: a missing file, an unknown action or a malformed stored overlay become a caption, because a
picture that cannot be drawn must not break the page around it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from taco_app.cota import events as ev
from taco_app.cota.actions import Action
from taco_app.drawing import LEGEND_MIN_SIDE, depth_legend, draw_regions, fit_within
from taco_app.media import ImageLoadError, load_image
from taco_app.tools.base import image_id as normalise_image_id

MAX_SIDE = 1600  # pictures are downscaled to this many pixels per side for display
_SHA256 = re.compile(r"[0-9a-f]{64}")


# --- finding files ------------------------------------------------------------------------------


def images_root() -> Path:
    from taco_app.settings import current

    return current().images_dir


def resolve_path(path: str | Path | None, sha256: str | None = None, root: Path | None = None) -> Path | None:
    """The file of a session image or artifact, or None when it is gone.

    Live events carry absolute paths; the store keeps paths relative to ``TACO_HOME/images``. When
    the recorded path fails (the folder moved), the content-addressed name ``<sha[:2]>/<sha>.*``
    under the images folder still finds the file.
    """
    root = Path(root) if root is not None else images_root()
    candidates: list[Path] = []
    if path:
        recorded = Path(path)
        candidates.append(recorded if recorded.is_absolute() else root / recorded)
        candidates.append(root / recorded.name[:2] / recorded.name)
    if sha256 and _SHA256.fullmatch(sha256):
        candidates.extend(sorted((root / sha256[:2]).glob(f"{sha256}.*")))
    return next((c for c in candidates if c.is_file()), None)


# --- what the events say about one step ---------------------------------------------------------


@dataclass
class StepFacts:
    """Everything the events say about one step."""

    seen: bool = False
    parse_error: ev.ParseError | None = None
    action: Action | None = None
    observation: ev.Observation | None = None
    produced: list[str] = field(default_factory=list)


def session_images(events: Iterable[ev.Event]) -> dict[str, ev.ImageInfo]:
    """Every image of the session by id: the inputs, then what the tools produced."""
    images: dict[str, ev.ImageInfo] = {}
    for event in events:
        if isinstance(event, ev.SessionStarted):
            images.update((info.image_id, info) for info in event.images)
        elif isinstance(event, ev.ImageProduced) and event.image is not None:
            images[event.image.image_id] = event.image
    return images


def step_facts(events: Iterable[ev.Event], step: int) -> StepFacts:
    facts = StepFacts()
    for event in events:
        if event.step != step or isinstance(event, (ev.SessionStarted, ev.Finished, ev.Error)):
            continue
        if isinstance(event, ev.ParseError):
            facts.seen, facts.parse_error = True, event
        elif isinstance(event, (ev.ActionParsed, ev.ToolStarted)):
            facts.seen, facts.action = True, event.action
        elif isinstance(event, ev.Observation):
            facts.seen, facts.observation = True, event
            facts.action = event.action if event.action is not None else facts.action
        elif isinstance(event, ev.ImageProduced) and event.image is not None:
            facts.produced.append(event.image.image_id)
    return facts


def _as_image_id(value: Any) -> str | None:
    try:
        return normalise_image_id(value)
    except (TypeError, ValueError):
        return None


def target_image(action: Action, overlays: dict[str, Any]) -> str | None:
    """The image a step's picture is drawn on: the one its action refers to."""
    arguments = action.arguments if isinstance(action.arguments, dict) else {}
    for value in (overlays.get("on"), arguments.get("image"), overlays.get("reference"), overlays.get("best")):
        found = _as_image_id(value) if value is not None else None
        if found:
            return found
    images = arguments.get("images")
    if isinstance(images, list) and images:  # GetTextToImagesSimilarity: the first candidate
        return _as_image_id(images[0])
    return None


# --- what is drawn -----------------------------------------------------------------------------


def _regions(overlays: dict[str, Any]) -> list[dict[str, Any]]:
    """The well-formed regions of an overlay; a stored overlay is data, so check it before drawing."""
    kept = []
    for region in overlays.get("regions") or []:
        if not isinstance(region, dict):
            continue
        box = region.get("bbox")
        if isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
            score = region.get("score")
            kept.append({"label": str(region.get("label") or ""), "bbox": [float(v) for v in box],
                         "score": float(score) if isinstance(score, (int, float)) else None})
    return kept


def _box_text(box: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


def _score_lines(overlays: dict[str, Any]) -> list[str]:
    lines = []
    tags = [t for t in overlays.get("tags") or [] if isinstance(t, dict)]
    if tags:
        lines.append("Tags: " + ", ".join(f"{t.get('tag')} {t.get('score', 0):.2f}" for t in tags))
    scores = [s for s in overlays.get("scores") or [] if isinstance(s, dict)]
    if scores:
        best = overlays.get("best")
        lines.append(f"Similarity to {overlays.get('reference')}:")
        for item in scores:
            name = item.get("image", item.get("text"))
            mark = " (best)" if name == best else ""
            score = item.get("score")
            lines.append(f"- {name}: {score:.3f}{mark}" if isinstance(score, (int, float)) else f"- {name}: {score}")
    return lines


# --- one step -----------------------------------------------------------------------------------


def render_step(events: Iterable[ev.Event], step: int, *, root: Path | None = None,
                max_side: int = MAX_SIDE) -> tuple[Image.Image | None, str]:
    """The picture of one step's overlay (or None) and a plain-text caption listing what it shows.

    ``events``: the session's events, live or from :func:`taco_app.store.codec.trace_events`.
    ``root``: the images folder (default ``TACO_HOME/images``), for paths stored relative to it.
    """
    try:
        return _render(list(events), step, root, max_side)
    except Exception as err:  # a malformed stored overlay must not break the page: say so instead
        return None, f"Step {step}: this step could not be drawn ({type(err).__name__}: {err})."


def _render(events: list[ev.Event], step: int, root: Path | None, max_side: int) -> tuple[Image.Image | None, str]:
    facts = step_facts(events, step)
    why_not = _nothing_to_draw(facts, step)
    if why_not is not None:
        return None, why_not
    action, obs = facts.action, facts.observation
    name = str(action.name)
    overlays = obs.overlays if obs is not None and isinstance(obs.overlays, dict) else {}
    target = target_image(action, overlays)
    lines = [f"Step {step} · {name}" + (f" on {target}" if target else "")]
    if obs is None:
        lines.append("The tool did not run (the session ended first).")
    elif obs.error:
        lines.append(f"The tool failed: {obs.error}")
    lines += _score_lines(overlays)
    if target is None:
        lines.append(f"{name} refers to no image; nothing to draw.")
        return None, "\n".join(lines)
    base, legend_needed = _base_picture(events, target, overlays, root, lines)
    if base is None:
        return None, "\n".join(lines)

    picture = fit_within(base.convert("RGB"), max_side)  # an RGB copy: base itself is never drawn on
    shown = picture.size
    picture = _draw_overlay(picture, overlays, legend_needed, lines)
    if obs is not None and isinstance(obs.output, dict) and isinstance(obs.output.get("depth"), (int, float)):
        lines.append(f"Depth of the region: {obs.output['depth']:g}")
    if "zoom_factor_applied" in overlays:
        lines.append(f"Zoom factor applied: {overlays['zoom_factor_applied']}")
    if len(lines) == 1:
        lines.append(f"{name} has nothing to draw; showing {target} as the model saw it.")
    if facts.produced:
        lines.append("Produced " + ", ".join(facts.produced) + ".")
    if shown != base.size:
        lines.append(f"Shown at {shown[0]}×{shown[1]} (the image is {base.width}×{base.height}).")
    return picture, "\n".join(lines)


def _nothing_to_draw(facts: StepFacts, step: int) -> str | None:
    """Why a step has no picture at all (not there, unparsed, no action, the final answer), or None."""
    if not facts.seen:
        return f"There is no step {step} in this session (yet)."
    if facts.parse_error is not None:
        return f"Step {step}: the model's reply could not be parsed, so no tool ran; nothing to draw."
    if facts.action is None:
        return f"Step {step}: the model chose no action; nothing to draw."
    if str(facts.action.name) == "Terminate":
        return f"Step {step} · Terminate: the final answer; nothing to draw."
    return None


def _base_picture(events: list[ev.Event], target: str, overlays: dict[str, Any], root: Path | None,
                  caption: list[str]) -> tuple[Image.Image | None, bool]:
    """What the overlay is drawn on: the target image, or its depth map when the step made one.

    Returns (the picture or None, whether it needs a depth legend below it); adds to ``caption``
    what it shows, or why there is nothing to show.
    """
    info = session_images(events).get(target)
    path = resolve_path(info.path, info.sha256, root) if info is not None else None
    if info is None:
        caption.append(f"{target} is not an image of this session; nothing to draw.")
        return None, False
    if path is None:
        caption.append(f"The file of {target} is missing ({info.path}); nothing to draw.")
        return None, False
    try:
        base = load_image(path)
    except ImageLoadError as err:
        caption.append(f"{target} could not be opened: {err}")
        return None, False

    artifacts = overlays.get("artifacts") if isinstance(overlays.get("artifacts"), dict) else {}
    depth_map = artifacts.get("depth_map") if isinstance(artifacts.get("depth_map"), dict) else None
    if depth_map is None:
        return base, False
    map_path = resolve_path(depth_map.get("path"), depth_map.get("sha256"), root)
    if map_path is None:
        caption.append(f"The depth map file is missing; showing {target} itself.")
        return base, False
    depth_picture = load_image(map_path)  # the map has the image's size, so the regions line up
    caption.append(f"Depth map of {target}: bright = near, dark = far.")
    return depth_picture, min(depth_picture.size) < LEGEND_MIN_SIDE  # too small for a scale bar of its own


def _draw_overlay(picture: Image.Image, overlays: dict[str, Any], legend_needed: bool,
                  caption: list[str]) -> Image.Image:
    """The picture with the step's regions (and a depth legend if needed); adds what it drew to ``caption``."""
    regions = _regions(overlays)
    if regions:
        # The tools' own drawing: the same colours and labels as the annotated images they make.
        picture = draw_regions(picture, [{k: v for k, v in r.items() if v is not None} for r in regions])
        for region in regions:
            score = f" {region['score']:.2f}" if region["score"] is not None else ""
            caption.append(f"- {region['label'] or 'region'}{score} at {_box_text(region['bbox'])}")
    elif "regions" in overlays:
        caption.append("Nothing found.")
    depth_range = overlays.get("depth_range")
    numbers = isinstance(depth_range, (list, tuple)) and all(isinstance(v, (int, float)) for v in depth_range)
    if numbers and len(depth_range) == 2:
        low, high = depth_range
        if legend_needed:
            picture = depth_legend(picture, low, high)
        caption.append(f"Depth from {low:g} (nearest) to {high:g} (farthest); TACO reports smaller = nearer.")
    return picture
