"""The 16 TACO actions, in the order of TACO's prompt.

The text lives in ``data/actions.json`` (TACO's own wording, with its attribution): the released
checkpoints were trained on it, so it is data, not code, and it is never edited by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class ActionSpec:
    name: str
    description: str
    arguments: dict[str, str]
    returns: dict[str, str]
    examples: tuple[dict[str, Any], ...]


def _load(filename: str) -> dict[str, Any]:
    return json.loads(resources.files("taco_app.cota").joinpath("data", filename).read_text("utf-8"))


@cache
def actions_data() -> dict[str, Any]:
    return _load("actions.json")


@cache
def prompt_data() -> dict[str, Any]:
    return _load("prompt.json")


@cache
def action_specs() -> tuple[ActionSpec, ...]:
    return tuple(
        ActionSpec(
            name=a["name"],
            description=a["description"],
            arguments=dict(a["arguments"]),
            returns=dict(a["returns"]),
            examples=tuple(a["examples"]),
        )
        for a in actions_data()["actions"]
    )


def action_names() -> list[str]:
    return [spec.name for spec in action_specs()]


ATTRIBUTION: str = actions_data()["attribution"]
