"""Typed events of a CoTA session.

The step loop yields these; the CLI, the UI and the store consume them. Each is a dataclass with a
fixed ``kind``; :func:`to_dict` / :func:`from_dict` are the one place that turns them to and from
JSON (the discriminator is written as ``"type"``). Actions are :class:`~taco_app.cota.actions.Action`
objects, written as TACO's ``{"name", "arguments"}``. Images travel by id and content hash, never
as bytes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from taco_app.cota.actions import Action, json_safe  # noqa: F401  (json_safe: also read as ``ev.json_safe``)


@dataclass
class Event:
    kind: ClassVar[str] = ""
    step: int = 0


@dataclass(frozen=True)
class Usage:
    """Token counts a backend reports for one reply, as the last item of its stream.

    ``prompt_tokens`` is the whole prompt (image tokens included); ``cached_tokens`` of them came
    from a kept KV cache, so only ``prompt_tokens - cached_tokens`` were prefilled.
    """

    prompt_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    prefill_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class ImageInfo:
    """An image of the session: an input (``parent`` None) or a tool output."""

    image_id: str
    sha256: str
    path: str
    width: int
    height: int
    role: str = "input"  # "input" | "tool"
    parent: str | None = None  # the image it was derived from
    bbox: list[float] | None = None  # the normalised region of the parent it came from
    step: int | None = None  # the step whose tool made it
    action: str | None = None


@dataclass
class SessionStarted(Event):
    kind: ClassVar[str] = "session_started"
    session_id: str = ""
    question: str = ""
    images: list[ImageInfo] = field(default_factory=list)
    backend: str = ""
    model: str | None = None
    family: str = ""
    max_replies: int = 10
    started_at: float = 0.0
    revision: str | None = None  # the checkpoint revision, when the backend knows it
    quantisation: str | None = None  # "4bit", "8bit", "none"; None when not a local checkpoint
    parent_session_id: str | None = None  # a fork: the session whose first fork_step - 1 steps it starts with
    fork_step: int | None = None
    mode: str = "cota"  # "cota": TACO's chain of thought-and-action; "direct": its direct-answer baseline, one reply


@dataclass
class StepStarted(Event):
    kind: ClassVar[str] = "step_started"
    prompt_chars: int = 0
    image_ids: list[str] = field(default_factory=list)  # the images given to the model this step


@dataclass
class ThoughtDelta(Event):
    """A chunk of raw model output as it is generated."""

    kind: ClassVar[str] = "thought_delta"
    text: str = ""


@dataclass
class ActionParsed(Event):
    kind: ClassVar[str] = "action_parsed"
    raw: str = ""
    thought: str = ""
    action: Action | None = None  # None: the model gave an empty actions list
    generation_s: float = 0.0
    usage: dict[str, int] | None = None  # Usage.as_dict() when the backend reports tokens


@dataclass
class ActionReview(Event):
    """The loop waits for a person to approve, edit or stop ``action`` before it runs (``run(review=…)``)."""

    kind: ClassVar[str] = "action_review"
    action: Action = field(default_factory=lambda: Action(""))


@dataclass
class ActionEdited(Event):
    """A person changed the step's action at review: ``action`` runs instead of ``original``.

    ``text`` is the step as the model reads it in its history from now on (compact TACO JSON with
    the model's thought); the model's own output stays in the step's :class:`ActionParsed` ``raw``.
    """

    kind: ClassVar[str] = "action_edited"
    original: Action = field(default_factory=lambda: Action(""))
    action: Action = field(default_factory=lambda: Action(""))
    text: str = ""


@dataclass
class ParseError(Event):
    kind: ClassVar[str] = "parse_error"
    raw: str = ""
    code: str = "json"
    message: str = ""
    observation: str = ""  # the repair turn fed back to the model
    generation_s: float = 0.0
    usage: dict[str, int] | None = None


@dataclass
class ToolStarted(Event):
    kind: ClassVar[str] = "tool_started"
    action: Action = field(default_factory=lambda: Action(""))


@dataclass
class Observation(Event):
    """The result of an executed action, and the exact turn text fed back to the model."""

    kind: ClassVar[str] = "observation"
    action: Action | None = None  # None: the model gave an empty actions list
    observation: str = ""
    output: dict[str, Any] | None = None  # the tool's output, JSON-safe; None when it failed
    error: str | None = None  # "<class 'ValueError'>: message" when the tool failed
    # Why it failed: "unknown_action", "bad_arguments", "timeout" or "tool" (its own error).
    error_code: str | None = None
    image_ids: list[str] = field(default_factory=list)  # images this step produced
    overlays: dict[str, Any] = field(default_factory=dict)  # what the UI draws (regions, …)
    tool_s: float = 0.0


@dataclass
class ImageProduced(Event):
    kind: ClassVar[str] = "image_produced"
    image: ImageInfo | None = None


@dataclass
class FinalAnswer(Event):
    kind: ClassVar[str] = "answer"
    answer: Any = None


@dataclass
class Error(Event):
    """A failure of the session itself (the backend broke, the step limit was reached, …)."""

    kind: ClassVar[str] = "error"
    message: str = ""
    code: str = "error"  # "backend" | "max_steps" | "cancelled" | "error"


@dataclass
class Finished(Event):
    kind: ClassVar[str] = "final"
    session_id: str = ""
    status: str = "finished"  # finished | failed | cancelled | max_steps
    answer: Any = None
    steps: int = 0
    total_s: float = 0.0
    message: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        SessionStarted, StepStarted, ThoughtDelta, ActionParsed, ActionReview, ActionEdited, ParseError, ToolStarted,
        Observation, ImageProduced, FinalAnswer, Error, Finished,
    )
}


# The fields that hold an :class:`Action` (written as its ``{"name", "arguments"}``), by event class.
_ACTION_FIELDS: dict[type[Event], tuple[str, ...]] = {
    ActionParsed: ("action",), ActionReview: ("action",), ActionEdited: ("original", "action"),
    ToolStarted: ("action",), Observation: ("action",),
}
_SURROGATE = re.compile("[\ud800-\udfff]")


def to_dict(event: Event) -> dict[str, Any]:
    return {"type": event.kind, **json_safe(event)}  # not dataclasses.asdict: it recurses


def from_dict(data: dict[str, Any]) -> Event:
    cls = EVENT_TYPES[data["type"]]
    kwargs = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
    if cls is SessionStarted:
        kwargs["images"] = [ImageInfo(**i) for i in kwargs.get("images", [])]
    if cls is ImageProduced and kwargs.get("image") is not None:
        kwargs["image"] = ImageInfo(**kwargs["image"])
    for name in _ACTION_FIELDS.get(cls, ()):
        if kwargs.get(name) is not None:
            kwargs[name] = Action.from_dict(kwargs[name])
    return cls(**kwargs)


def to_json(event: Event) -> str:
    """One line of JSON, non-ASCII kept as is; encodable as UTF-8 whatever the event holds.

    A lone surrogate (a model can emit ``"\\ud800"``) cannot be written as UTF-8, so it is written
    as its JSON escape, which reads back as the same string.
    """
    text = json.dumps(to_dict(event), ensure_ascii=False, allow_nan=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
