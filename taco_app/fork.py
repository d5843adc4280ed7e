"""Fork a stored session at step k: keep its first k-1 steps exactly as they were, replace step k.

The fork starts with the parent's images, turns and observations up to step k (so the prompt's
prefix is byte-identical to the parent's and a backend's prefix cache reuses it), then step k is the
edited thought and/or action a person wrote (its action runs with the real tools), or, with no edit,
the backend's (``run again`` is a fork at step 1). The backend writes the steps after it.

An earlier step whose tool output a person corrected (the regions it found, dragged in Review:
:func:`taco_app.store.queries.correct_output`) is kept as corrected: the model reads the observation
with the corrected regions and the tool's picture redrawn with them, and the fork stores that step so.

:func:`plan_fork` checks everything and loads the parent before anything is stored, raising
:class:`ForkError` (one line for a person); :func:`fork` yields the new session's events, the same
stream as :func:`taco_app.runner.run`, for the caller to record.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from taco_app.cota import events as ev
from taco_app.cota.actions import Action, step_text
from taco_app.cota.backend import Backend
from taco_app.cota.prompt import IMAGE_TOKEN, MAX_REPLIES, Turn, assistant_turn, observation_image_ids, text_turn
from taco_app.media import ImageLoadError
from taco_app.runner import History, InputImage, Review, run
from taco_app.store import codec, queries
from taco_app.store.corrections import Observed, image_file, observed
from taco_app.tools import Toolbox
from taco_app.tools.execution import DEFAULT_TOOL_TIMEOUT


class ForkError(ValueError):
    """The fork cannot be made; the message says why in one line and what to do."""


@dataclass(frozen=True)
class ForkPlan:
    """A checked fork, its parent loaded: what :func:`fork` runs."""

    parent_session_id: str
    step: int  # the step it replaces (1: run again)
    question: str
    inputs: list[InputImage]
    history: History


def plan_fork(store: Any, session_id: str, step: int, *, thought: str | None = None,
              action: Action | dict[str, Any] | str | None = None) -> ForkPlan:
    """Check a fork of ``session_id`` at ``step`` (with an edited thought and/or action) and load it."""
    trace = queries.get_trace(store, session_id) if isinstance(session_id, str) else None
    if trace is None:
        raise ForkError(f"no session {session_id!r} in the store")
    if trace.session.get("mode") == "direct":
        raise ForkError(f"session {session_id} is a direct answer (an eval run's baseline), with no steps to fork;"
                        " run the question again in CoTA mode instead")
    steps = {row["index"]: row for row in trace.steps}
    last = max(len(trace.steps), 1)  # a session that stopped before its first step can still run again
    if not isinstance(step, int) or isinstance(step, bool) or not 1 <= step <= last:
        raise ForkError(f"step {step} is out of range: session {session_id} has steps 1 to {last}")
    reply = _edited_step(steps.get(step), step, thought, action)
    earlier = [steps[k] for k in range(1, step)]
    fixed = _corrected(store, trace, step)
    images = _images(trace, step, fixed)
    inputs = [InputImage(picture, path) for (info, picture), path in images if info.role == "input"]
    tools = [(info, picture) for (info, picture), _ in images if info.role != "input"]
    events = [e for e in codec.trace_events(trace)[1:] if 0 < e.step < step and not isinstance(e, ev.Finished)]
    history = History(parent_session_id=trace.session["id"], events=_with_outputs(_with_edits(events, trace), fixed),
                      turns=_turns(earlier, trace, fixed), images=tools, reply=reply)
    return ForkPlan(trace.session["id"], step, trace.session["question"], inputs, history)


def fork(plan: ForkPlan, backend: Backend, *, tools: Toolbox, sink: Any, cancel: threading.Event | None = None,
         review: Review | None = None, tool_timeout_s: float = DEFAULT_TOOL_TIMEOUT,
         max_replies: int = MAX_REPLIES, session_id: str | None = None) -> Iterator[ev.Event]:
    """The forked session's events (not recorded: ``store.record(fork(…))`` stores it like a run)."""
    return run(plan.question, plan.inputs, backend, tools=tools, sink=sink, cancel=cancel, review=review,
               tool_timeout_s=tool_timeout_s, max_replies=max_replies, session_id=session_id, history=plan.history)


# --- the parts of a plan ------------------------------------------------------------------------


def _edited_step(row: dict[str, Any] | None, step: int, thought: str | None,
                 action: Action | dict[str, Any] | str | None) -> str | None:
    """Step ``step`` as the person edited it, in TACO's compact JSON; None when it is not edited."""
    if thought is None and action is None:
        return None
    if thought is not None and not isinstance(thought, str):
        raise ForkError("the thought must be text")
    if action is None:
        if row is None or row.get("parse_error_code") or not isinstance(row.get("action"), dict):
            raise ForkError(f"step {step} has no action to keep: give the action too")
        action = row["action"]
    if isinstance(action, str):
        try:
            action = json.loads(action)
        except ValueError as err:
            raise ForkError(f"the action is not JSON ({err}); write it as "
                            '{"name": "Calculate", "arguments": {"expression": "2+3"}}') from None
    if isinstance(action, dict) and "actions" in action:
        raise ForkError('give the action alone, {"name": …, "arguments": {…}}, not a whole step')
    try:
        action = Action.from_dict(action)
        kept = thought if thought is not None else (row or {}).get("thought") or ""
        checked = queries.validate_step({"thought": kept, "actions": [action.as_dict()]})
    except (TypeError, ValueError) as err:
        raise ForkError(f"step {step} is not a valid CoTA step: {' '.join(str(err).split())}") from None
    return step_text(checked["thought"], Action.from_dict(checked["actions"][0]))


@dataclass(frozen=True)
class _Fixed:
    """A step before the fork whose tool output a person corrected."""

    observed: Observed
    files: dict[str, Path]  # image id → the redrawn picture's file


def _corrected(store: Any, trace: queries.Trace, step: int) -> dict[int, _Fixed]:
    """The steps before ``step`` with a corrected tool output, by step."""
    rows = {row["index"]: row for row in trace.steps}
    out = {}
    for index, fixed in trace.corrected_outputs.items():
        row = rows.get(index)
        if index >= step or row is None or row.get("observation") is None:
            continue
        seen = observed(row.get("output"), list(row.get("image_ids") or []), fixed)
        if seen is None:
            continue
        files = {}
        for image_id, image in seen.replaced.items():
            try:
                files[image_id] = image_file(store.images_root, image["path"])
            except ValueError as err:
                raise ForkError(f"step {index}'s corrected picture cannot be read ({err})") from None
        out[index] = _Fixed(seen, files)
    return out


def _images(trace: queries.Trace, step: int,
            fixed: dict[int, _Fixed] | None = None) -> list[tuple[tuple[ev.ImageInfo, Image.Image], Path]]:
    """The inputs and the images steps before ``step`` made, loaded from disk, in id order; a tool's picture
    redrawn with corrected regions (``fixed``) in place of the tool's."""
    redrawn = {image_id: path for item in (fixed or {}).values() for image_id, path in item.files.items()}
    loaded = []
    for image in sorted(trace.images, key=lambda i: int(i.image_id.rsplit("-", 1)[1])):
        if image.role != "input" and (image.step is None or image.step >= step):
            continue
        if image.image_id in redrawn:
            image = replace(image, path=redrawn[image.image_id])
        if not image.path.is_file():
            raise ForkError(f"{image.image_id} of session {trace.session['id']} is missing from disk "
                            f"({image.path}): it cannot be forked")
        try:
            picture = InputImage.open(image.path).image if image.role == "input" else _open(image.path)
        except (ImageLoadError, OSError) as err:
            raise ForkError(f"{image.image_id} of session {trace.session['id']} cannot be read ({err})") from None
        width, height = (picture.width, picture.height) if image.image_id in redrawn else (image.width, image.height)
        info = ev.ImageInfo(image_id=image.image_id, sha256=image.path.stem, path=str(image.path), width=width,
                            height=height, role=image.role, parent=image.parent, bbox=image.bbox, step=image.step,
                            action=_action_name(trace, image.step))
        loaded.append(((info, picture), image.path))
    return loaded


def _open(path: Path) -> Image.Image:
    with Image.open(path) as picture:
        picture.load()
        return picture.copy()


def _action_name(trace: queries.Trace, step: int | None) -> str | None:
    return next((row.get("action_name") for row in trace.steps if row["index"] == step), None)


def _edited_at_review(trace: queries.Trace) -> dict[int, Any]:
    """The steps a person edited before they ran, and the edit (what the model then read)."""
    return {f.step: f.corrected_step for f in trace.feedback if f.note == codec.EDIT_NOTE and f.step is not None}


def _with_edits(events: list[ev.Event], trace: queries.Trace) -> list[ev.Event]:
    """The parent's step events, with each edit made at review as the event the live run yielded."""
    edits = _edited_at_review(trace)
    out: list[ev.Event] = []
    for event in events:
        out.append(event)
        if isinstance(event, ev.ActionParsed) and event.step in edits and event.action is not None:
            parsed = json.loads(event.raw) if _is_json(event.raw) else {}
            original = parsed.get("actions", [None])[0] if isinstance(parsed, dict) else None
            text = step_text(event.thought, event.action)
            out.append(ev.ActionEdited(step=event.step, original=Action.from_dict(original) if isinstance(original, dict)
                                       else event.action, action=event.action, text=text))
    return out


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _with_outputs(events: list[ev.Event], fixed: dict[int, _Fixed]) -> list[ev.Event]:
    """The parent's step events, each corrected tool output as the observation (and the redrawn picture as the
    image) of its step, so the fork stores what its model read."""
    out: list[ev.Event] = []
    for event in events:
        item = fixed.get(event.step)
        if item is not None and isinstance(event, ev.Observation):
            overlays = dict(event.overlays or {})
            if "regions" in overlays:  # what Review draws on the step's picture
                overlays["regions"] = item.observed.output["regions"]
            event = replace(event, observation=item.observed.text, output=item.observed.output, overlays=overlays)
        elif item is not None and isinstance(event, ev.ImageProduced) and event.image is not None \
                and event.image.image_id in item.files:
            image = item.observed.replaced[event.image.image_id]
            path = item.files[event.image.image_id]
            event = replace(event, image=replace(event.image, sha256=path.stem, path=str(path), width=image["width"],
                                                 height=image["height"]))
        out.append(event)
    return out


def _turns(earlier: list[dict[str, Any]], trace: queries.Trace, fixed: dict[int, _Fixed] | None = None) -> list[Turn]:
    """The turns of the steps before the fork, exactly as the parent's model read them, but for the tool outputs
    a person corrected (``fixed``): their observations with the corrected regions."""
    edits = _edited_at_review(trace)
    turns: list[Turn] = []
    for row in earlier:
        text = row.get("raw") or ""
        if row["index"] in edits and isinstance(row.get("action"), dict):
            text = step_text(row.get("thought") or "", Action.from_dict(row["action"]))
        observation = row.get("observation")
        if observation is None:
            raise ForkError(f"step {row['index']} of session {trace.session['id']} has no observation: "
                            "fork at it or before it")
        item = (fixed or {}).get(row["index"])
        if item is not None:
            turns += [assistant_turn(text), text_turn("user", item.observed.text, item.observed.image_ids)]
            continue
        turns += [assistant_turn(text), text_turn("user", observation, _observation_images(observation, row))]
    return turns


def _observation_images(text: str, row: dict[str, Any]) -> list[str]:
    ids = observation_image_ids(text, list(row.get("image_ids") or []))
    if ids is None:
        raise ForkError(f"step {row['index']}'s observation shows {text.count(IMAGE_TOKEN)} image(s) "
                        "that the store does not list")
    return ids
