"""TACO's training rows, as its data pipeline writes them (SalesforceAIResearch/CoTA ``cota/data_utils.py``).

TACO was fine-tuned on rows that differ from the inference prompt (:mod:`taco_app.cota.prompt`):

- the first user turn starts with a short goal, :data:`GOAL` + ``"\\n"``, instead of the system prompt;
- every message is written part by part: a text part as its text + ``"\\n"``, an image as
  ``"<image>\\n"`` (``convert_openai_data_to_mantis_format``). The harness records a message's
  parts by splitting its text at each image, so a turn ``image-0: <image>\\nQ`` is written
  ``image-0: \\n<image>\\n\\nQ\\n``;
- an assistant turn is the model's step; the pipeline removes a ``# STEP #:`` header, code fences and
  newlines, and drops the whole conversation when the result fails ``json.loads``.

The pipeline also deletes every ``"json"`` substring from assistant turns, which corrupts a thought
that mentions JSON; :func:`clean_target` keeps it. Everything else here is byte for byte the rule.
:func:`training_text` and :func:`inference_text` are inverses, so an exported row reads back.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from taco_app.cota.prompt import IMAGE_TOKEN, Turn
from taco_app.cota.registry import action_names

_STEP_HEADER = re.compile(r"#\s*STEP\s*\d?\s*#\:?")  # the pipeline's reformat_text: "# STEP 1 #:", "#STEP#", …
_IMAGE_PART = IMAGE_TOKEN + "\n"


@cache
def goal() -> str:
    """The pipeline's ``simple_task_goal``: the goal and the action names in prompt order."""
    return ("[BEGIN OF GOAL] You are a helpful assistant, and your goal is to solve the # USER REQUEST #. "
            "You can either rely on your own capabilities or perform actions with external tools to help you. "
            f"You can use these actions: {', '.join(action_names())}. [END OF GOAL]")


def training_text(turn: Turn, first: bool = False) -> str:
    """A user turn as a training row writes it: the goal first (``first``), then part by part."""
    segments = turn.text.split(IMAGE_TOKEN)  # the recorded text parts, empty ones included
    body = _IMAGE_PART.join(segment + "\n" for segment in segments)
    return goal() + "\n" + body if first else body


def inference_text(text: str, first: bool = False) -> str:
    """The inverse of :func:`training_text`; ``ValueError`` for text it cannot have written."""
    if first and text.startswith("[BEGIN OF GOAL]"):
        end = text.find("[END OF GOAL]\n")
        if end < 0:
            raise ValueError("the goal has no '[END OF GOAL]' line")
        text = text[end + len("[END OF GOAL]\n"):]
    segments = text.split(_IMAGE_PART)
    if not all(segment.endswith("\n") for segment in segments):
        raise ValueError("a text part does not end with a newline, as training rows write them")
    return IMAGE_TOKEN.join(segment[:-1] for segment in segments)


def is_training_text(text: str) -> bool:
    """Whether a first user turn was written by :func:`training_text` (it starts with the goal)."""
    return text.startswith("[BEGIN OF GOAL]")


def clean_target(raw: str) -> str | None:
    """A reply as an assistant training target, or None when it is not a CoTA step in JSON.

    The pipeline's cleaning (a ``# STEP #:`` header, code fences and newlines removed) without its
    deletion of ``"json"``. Newlines can only be whitespace between tokens in JSON that loads, so
    removing them changes no value. The result must load as ``{"thought": text, "actions": [...]}``.
    """
    match = _STEP_HEADER.search(raw)
    text = raw[match.end():] if match else raw
    text = text.replace("```", "")
    text = text.strip()
    if text.startswith("json"):  # the language tag of a fence: the one "json" that is not content
        text = text[len("json"):]
    text = text.replace("\n", "")
    try:
        step = json.loads(text)
    except ValueError:
        return None
    return text if is_step(step) else None


def is_step(value: Any) -> bool:
    """``{"thought": text, "actions": [{"name": text, "arguments": {...}}, ...]}``, as TACO writes a step."""
    if not isinstance(value, dict) or not isinstance(value.get("thought"), str):
        return False
    actions = value.get("actions")
    return isinstance(actions, list) and all(
        isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("arguments"), dict) for a in actions)
