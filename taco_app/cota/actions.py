"""One action of a CoTA step: the tool call a model (or a person) asked for.

:class:`Action` is what the parser produces, the step loop runs, the store records, the exports
write and the UI draws. Its JSON form is TACO's ``{"name": …, "arguments": {…}}``; :func:`step_text`
writes a whole step the way the released checkpoints do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FINAL = "Terminate"  # the action that ends a session with the answer


@dataclass(frozen=True)
class Action:
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

    def as_dict(self) -> dict[str, Any]:
        """TACO's JSON form: ``{"name", "arguments"}``."""
        return {"name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, value: Any) -> "Action":
        """An action from its JSON form (a stored step, a person's edit). Its contents are checked when it runs;
        only a value that is not an object at all is refused here (``TypeError``)."""
        if isinstance(value, Action):
            return value
        if not isinstance(value, dict):
            raise TypeError(f'an action is {{"name": "<action name>", "arguments": {{...}}}}, not {type(value).__name__}')
        arguments = value.get("arguments")
        return cls(value.get("name"), {} if arguments is None else arguments)  # type: ignore[arg-type]

    def with_answer(self, answer: Any) -> "Action":
        """This ``Terminate`` with another answer (a person's correction)."""
        return Action(self.name, {**self.arguments, "answer": answer})


def compact_json(value: Any) -> str:
    """JSON as TACO's checkpoints write it: no spaces, non-ASCII kept as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def step_text(thought: str, action: Action | dict[str, Any] | None) -> str:
    """One step as a TACO checkpoint writes it: ``{"thought":"…","actions":[{"name":…,"arguments":{…}}]}``.

    A step written for a model (a person's edit, manual mode, a correction in an export) reads like
    its own output in the reference traces.
    """
    from taco_app.cota.events import json_safe

    actions = [] if action is None else [json_safe(Action.from_dict(action).as_dict())]
    return compact_json({"thought": thought, "actions": actions})
