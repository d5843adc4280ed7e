"""A tool's output as a person corrected it: the observation the model should have read after that step.

Review lets a person fix the regions a tool found (LocalizeObjects, DetectFaces) by dragging them;
:func:`taco_app.store.queries.correct_output` keeps them with the tool's picture redrawn with them
(``{"regions": [...], "image": {"image_id", "sha256", "path", "width", "height"}}``). The exports and
forks read such a step through :func:`observed`: the observation turn TACO's loop writes for the tool's
output (:func:`taco_app.cota.prompt.observation_turn`, as the step loop does) with the corrected
regions in it, and, in place of the tool's picture, the redrawn one (:func:`image_file`), so the text
and the picture agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taco_app.cota.prompt import ImagePart, observation_turn


@dataclass(frozen=True)
class Observed:
    """A step's observation with a person's corrected output."""

    text: str  # the observation turn's text, ``<image>`` where an image is shown
    output: dict[str, Any]  # the tool's output as stored (images by id), the corrected regions in it
    image_ids: list[str]  # the images the text shows, in order
    replaced: dict[str, dict[str, Any]]  # image id → the redrawn picture that stands for the tool's


def observed(output: Any, produced: list[str] | None, fixed: Any) -> Observed | None:
    """The observation of a step whose tool output was ``output`` (as stored: the images it made by id,
    ``produced``) with the corrected output ``fixed``; None when there is nothing to correct (no
    correction, or a tool output without regions)."""
    if not isinstance(fixed, dict) or not isinstance(fixed.get("regions"), list):
        return None
    if not isinstance(output, dict) or not isinstance(output.get("regions"), list):
        return None
    produced = list(produced or [])
    corrected = {**output, "regions": fixed["regions"]}
    # The step loop writes each image a tool made as an ImagePart; the stored output names it by id.
    turn = observation_turn({key: ImagePart(value) if isinstance(value, str) and value in produced else value
                             for key, value in corrected.items()})
    image = fixed.get("image")
    replaced = {image["image_id"]: image} if isinstance(image, dict) and image.get("image_id") in produced else {}
    return Observed(turn.text, corrected, turn.image_ids, replaced)


def replacements(corrected_outputs: dict[int, Any]) -> dict[str, str]:
    """Image id → the redrawn picture's path (relative to the images folder), over a session's corrected outputs."""
    out = {}
    for fixed in corrected_outputs.values():
        image = fixed.get("image") if isinstance(fixed, dict) else None
        if isinstance(image, dict) and isinstance(image.get("image_id"), str) and isinstance(image.get("path"), str):
            out[image["image_id"]] = image["path"]
    return out


def image_file(images_root: str | Path, path: str) -> Path:
    """The file of a redrawn picture kept at ``path`` (relative to the images folder); ValueError for a
    path that leaves it."""
    root = Path(images_root).resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise ValueError(f"image path outside {root}: {path!r}")
    return target
