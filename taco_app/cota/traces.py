"""Read conversations in the reference trace format (``{"model", "messages": [...]}``).

Each message's ``content`` is a list of ``{"type": "text", "text"}`` and ``{"type": "image",
"path"}`` parts. Images are numbered in order of appearance, which is how TACO numbers them:
the inputs first, then each tool output as it is produced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taco_app.cota.prompt import ImagePart, Part, Turn


class TraceFormatError(ValueError):
    pass


@dataclass
class Conversation:
    turns: list[Turn]
    image_paths: dict[str, Path] = field(default_factory=dict)
    model: str | None = None

    def assistant_outputs(self) -> list[str]:
        return [turn.text for turn in self.turns if turn.role == "assistant"]

    def until_last_user_turn(self) -> list[Turn]:
        """The turns a model sees before its next reply: up to and including the last user turn."""
        last = max((i for i, t in enumerate(self.turns) if t.role == "user"), default=-1)
        if last < 0:
            raise TraceFormatError("the conversation has no user turn")
        return self.turns[: last + 1]

    @property
    def input_image_ids(self) -> list[str]:
        first = self.turns[0] if self.turns else None
        return first.image_ids if first is not None else []

    @property
    def question(self) -> str:
        """The question of the first user turn, without TACO's request framing."""
        text = "".join(p for p in self.turns[0].parts if isinstance(p, str)) if self.turns else ""
        body = text.split("# USER REQUEST #:\n", 1)[-1]
        body = body.rsplit("\n\nNow please generate your response:", 1)[0]
        lines = body.split("\n")
        while lines and lines[0].startswith("image-") and lines[0].rstrip().endswith(":"):
            lines.pop(0)
        return "\n".join(lines)


def parse_trace(data: Any, base_dir: Path | None = None) -> Conversation:
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise TraceFormatError("a trace is a JSON object with a 'messages' list")
    turns: list[Turn] = []
    image_paths: dict[str, Path] = {}
    for i, message in enumerate(data["messages"]):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise TraceFormatError(f"message {i}: role must be 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            raise TraceFormatError(f"message {i}: content must be a list of parts")
        parts: list[Part] = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                parts.append(str(part.get("text", "")))
            elif kind == "image":
                image_id = f"image-{len(image_paths)}"
                path = Path(str(part.get("path", "")))
                image_paths[image_id] = (base_dir / path) if base_dir and not path.is_absolute() else path
                parts.append(ImagePart(image_id))
            else:
                raise TraceFormatError(f"message {i}: unknown part type {kind!r}")
        turns.append(Turn(role, parts))
    return Conversation(turns=turns, image_paths=image_paths, model=data.get("model"))


def load_trace(path: str | Path) -> Conversation:
    path = Path(path)
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TraceFormatError(f"cannot read trace {path}: {err}") from err
    return parse_trace(data, base_dir=path.parent)
