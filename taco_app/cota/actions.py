"""One action of a CoTA step: the tool call a model (or a person) asked for, and its JSON.

:class:`Action` is what the parser produces, the step loop runs, the store records, the exports
write and the UI draws. Its JSON form is TACO's ``{"name": …, "arguments": {…}}``; :func:`step_text`
writes a whole step the way the released checkpoints do. :func:`json_safe` is the one place that
makes model-made values (non-finite floats, arbitrary nesting) writable as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

FINAL = "Terminate"  # the action that ends a session with the answer
SHAPE = '{"name": "<action name>", "arguments": {...}}'


@dataclass(frozen=True)
class Action:
    """``name`` and ``arguments`` as given. The parser only makes well-formed ones; a person's edit
    (review) is kept as typed, so it can be recorded and shown, and :meth:`check` refuses it when it runs."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        """A ``Terminate`` that carries an answer: the session ends with it."""
        return self.name == FINAL and isinstance(self.arguments, dict) and "answer" in self.arguments

    @property
    def answer(self) -> Any:
        """The final answer (None unless :attr:`is_final`)."""
        return self.arguments["answer"] if self.is_final else None

    def check(self) -> None:
        """``TypeError`` unless the name is text and the arguments an object (what a tool can run)."""
        if not isinstance(self.name, str) or not isinstance(self.arguments, dict):
            raise TypeError(f"an action is {SHAPE}")

    def as_dict(self) -> dict[str, Any]:
        """TACO's JSON form: ``{"name", "arguments"}``."""
        return {"name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, value: Any) -> "Action":
        """An action from its JSON form (a stored step, a person's edit), missing arguments read as ``{}``.

        Only a value that is not an object at all is refused here (``TypeError``); the contents are
        checked when it runs (:meth:`check`).
        """
        if isinstance(value, Action):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"an action is {SHAPE}, not {type(value).__name__}")
        arguments = value.get("arguments")
        return cls(value.get("name"), {} if arguments is None else arguments)  # type: ignore[arg-type]

    def with_answer(self, answer: Any) -> "Action":
        """This ``Terminate`` with another answer (a person's correction)."""
        return Action(self.name, {**self.arguments, "answer": answer})


def json_safe(value: Any) -> Any:
    """A JSON-encodable copy: non-finite floats and unknown objects become strings, dataclasses dicts.

    Iterative, so a model's arguments nested however deep never reach Python's recursion limit.
    """
    root: list[Any] = [None]
    pending: list[tuple[Any, Any, Any]] = [(value, root, 0)]  # (value, where its copy goes, key there)
    while pending:
        item, parent, key = pending.pop()
        if isinstance(item, float):
            copy: Any = item if math.isfinite(item) else repr(item)
        elif item is None or isinstance(item, (str, int, bool)):
            copy = item
        elif isinstance(item, dict) or (dataclasses.is_dataclass(item) and not isinstance(item, type)):
            pairs = item.items() if isinstance(item, dict) else ((f.name, getattr(item, f.name)) for f in dataclasses.fields(item))
            children = {str(k): v for k, v in pairs}  # keys that collide as strings: the last wins
            copy = dict.fromkeys(children)
            pending.extend((v, copy, k) for k, v in children.items())
        elif isinstance(item, (list, tuple)):
            copy = [None] * len(item)
            pending.extend((v, copy, i) for i, v in enumerate(item))
        else:
            copy = str(item)
        parent[key] = copy
    return root[0]


def compact_json(value: Any) -> str:
    """JSON as TACO's checkpoints write it: no spaces, non-ASCII kept as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def step_text(thought: str, action: Action | None) -> str:
    """One step as a TACO checkpoint writes it: ``{"thought":"…","actions":[{"name":…,"arguments":{…}}]}``.

    A step written for a model (a person's edit, manual mode, a correction in an export) reads like
    its own output in the reference traces.
    """
    actions = [] if action is None else [json_safe(action)]
    return compact_json({"thought": thought, "actions": actions})
