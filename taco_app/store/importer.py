"""Import conversations into the store: reference traces (``{"model", "messages"}``) and our exports.

Every conversation becomes one finished session, written in one transaction: its images copied
into the store's content-addressed files, one step per assistant turn (parsed as the agent would),
each step's observation the user turn that follows it.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from taco_app.cota.parser import ParsedStep, parse
from taco_app.cota.prompt import IMAGE_TOKEN, ImagePart, Part, Turn
from taco_app.cota.traces import Conversation, TraceFormatError, load_trace
from taco_app.store.files import ImageFiles
from taco_app.store.schema import ImageRow, SessionRow, StepRow


def import_trace(store: Any, path: str | Path) -> str:
    """Import one reference-trace JSON file; returns the new session id."""
    conversation = load_trace(path)
    return _import(store, conversation, model=conversation.model, backend="import")


def import_jsonl(store: Any, path: str | Path) -> list[str]:
    """Import a ``cota-mantis`` (or ``cota-llava``) export; image paths are relative to its folder."""
    path = Path(path)
    base = path.parent.resolve()
    ids: list[str] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise TraceFormatError(f"{path}:{number}: not JSON: {err}") from None
            conversation = _from_row(row, base, f"{path}:{number}")
            metadata = row.get("metadata") or {}
            ids.append(_import(store, conversation, model=metadata.get("model"), backend="import"))
    return ids


def _from_row(row: Any, base: Path, where: str) -> Conversation:
    if not isinstance(row, dict):
        raise TraceFormatError(f"{where}: a row is a JSON object")
    if "conversation" in row:  # cota-mantis
        messages = [(m.get("role"), m.get("content")) for m in row["conversation"]]
        images = row.get("images") or []
    elif "conversations" in row:  # cota-llava
        messages = [({"human": "user", "gpt": "assistant"}.get(m.get("from")), m.get("value")) for m in row["conversations"]]
        images = row.get("image") or []
    else:
        raise TraceFormatError(f"{where}: neither 'conversation' (cota-mantis) nor 'conversations' (cota-llava)")
    image_paths: dict[str, Path] = {}
    for k, rel in enumerate(images):
        target = (base / str(rel)).resolve()
        if not target.is_relative_to(base):  # a row must not pull files from elsewhere on the disk
            raise TraceFormatError(f"{where}: image path leaves {base}: {rel!r}")
        image_paths[f"image-{k}"] = target
    turns: list[Turn] = []
    next_image = 0
    for role, text in messages:
        if role not in ("user", "assistant") or not isinstance(text, str):
            raise TraceFormatError(f"{where}: each message needs a role and a text")
        parts: list[Part] = []
        pieces = text.split(IMAGE_TOKEN)
        for i, piece in enumerate(pieces):
            if piece:
                parts.append(piece)
            if i < len(pieces) - 1:
                parts.append(ImagePart(f"image-{next_image}"))
                next_image += 1
        turns.append(Turn(role, parts))
    if next_image != len(image_paths):
        raise TraceFormatError(f"{where}: {next_image} <image> placeholders but {len(image_paths)} images")
    return Conversation(turns=turns, image_paths=image_paths)


def _family(model: str | None) -> str:
    return "qwen2" if model and "qwen" in model.lower() else "mantis"


def _import(store: Any, conversation: Conversation, *, model: str | None, backend: str) -> str:
    turns = conversation.turns
    if not turns or turns[0].role != "user":
        raise TraceFormatError("a conversation starts with the user's request")
    files = ImageFiles(store.images_root)
    session_id = uuid.uuid4().hex
    inputs = set(conversation.input_image_ids)
    # Which step produced each tool image: the assistant turn before the user turn that shows it.
    produced_at: dict[str, int] = {}
    steps: list[StepRow] = []
    answer: Any = None
    index = 0
    for position, turn in enumerate(turns):
        if turn.role != "assistant":
            continue
        index += 1
        following = turns[position + 1] if position + 1 < len(turns) and turns[position + 1].role == "user" else None
        parsed = parse(turn.text)
        step = StepRow(session_id=session_id, index=index, raw=turn.text,
                       observation=following.text if following else None,
                       image_ids=following.image_ids if following else [])
        if isinstance(parsed, ParsedStep):
            step.thought, step.action = parsed.thought, parsed.action
            # indexed copy of the action name, filled as the recorder fills it (tool filters use it)
            step.action_name = parsed.action["name"] if parsed.action else None
            if parsed.action and parsed.action["name"] == "Terminate":
                answer = parsed.action["arguments"].get("answer")
        else:
            step.parse_error_code, step.parse_error = parsed.code, parsed.message
        for image_id in step.image_ids:
            produced_at.setdefault(image_id, index)
        steps.append(step)
    last = steps[-1] if steps else None
    finished = bool(last and last.action and last.action["name"] == "Terminate")

    images: list[ImageRow] = []
    for image_id, source in conversation.image_paths.items():
        digest, stored = files.save_file(source)
        with Image.open(stored) as picture:
            width, height = picture.size
        images.append(ImageRow(
            session_id=session_id, ordinal=int(image_id.rsplit("-", 1)[1]), image_id=image_id, sha256=digest,
            path=store._relative(str(stored)), width=width, height=height,
            role="input" if image_id in inputs else "tool",
            step=None if image_id in inputs else produced_at.get(image_id),
        ))
    now = time.time()
    with store._sessions.begin() as db:
        db.add(SessionRow(
            id=session_id, created_at=now, finished_at=now, question=conversation.question, backend=backend,
            model=model, family=_family(model), tool_versions={},
            status="finished" if finished else "max_steps", answer=answer if finished else None,
        ))
        db.flush()  # the session row first: steps and images refer to it
        db.add_all(steps)
        db.add_all(images)
    return session_id


def import_paths(store: Any, paths: list[str | Path]) -> int:
    """Import trace files, folders of them, and ``.jsonl`` exports; returns how many sessions."""
    count = 0
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for item in sorted(path.glob("*.json")):
                import_trace(store, item)
                count += 1
        elif path.suffix == ".jsonl":
            count += len(import_jsonl(store, path))
        elif path.is_file():
            import_trace(store, path)
            count += 1
        else:
            raise TraceFormatError(f"no such file or folder: {path}")
    return count
