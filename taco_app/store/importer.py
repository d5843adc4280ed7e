"""Import conversations into the store: reference traces (``{"model", "messages"}``) and our exports.

Every conversation becomes one finished session: its images stored in the content-addressed files,
one step per assistant turn (parsed as the agent would), each step's observation the user turn
that follows it. The conversation is turned into the events a live session would have yielded and
(:func:`taco_app.store.codec.conversation_events`) recorded by the same recorder
(:mod:`taco_app.store.recorder`), so it is stored as a live one is.
Imported files come from anywhere, so the rules are:

- **Only regular files of bounded size are read** (``reading``): a FIFO, a device or a folder named
  as a trace, a row's image or a trace's image is refused without being read; a trace is read up to
  ``MAX_TRACE_BYTES``, an export's rows one at a time up to ``MAX_ROW_BYTES`` each, an image up to
  ``MAX_IMAGE_BYTES``.
- **An image is decoded before it is stored** (``media.identify_image``, the checks an upload gets),
  so a file that is not an image never reaches the images folder. Its original bytes are stored.
- **Every field's type is checked before use.** A file or row that fails any check is skipped with
  where and why (``ImportReport.skipped``, one line each); the others are imported.
- **A conversation is stored once.** Its session id is a hash of its content (model, turns, image
  bytes), so importing it again (a rerun after a failure, our own export of it) finds it stored.
- **A conversation is stored whole or not at all**: its rows are one transaction. Its image files,
  complete and named by their content, may outlive a refused transaction; the next import reuses them.

Bad input to the import as a whole (a path that does not exist, a FIFO given as a path) is refused
by ``check_paths`` before anything is stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from taco_app.cota import events as ev
from taco_app.cota.prompt import IMAGE_TOKEN, Turn, text_turn
from taco_app.cota.training import inference_text, is_training_text
from taco_app.cota.traces import Conversation, TraceFormatError, parse_trace
from taco_app.media import ImageLoadError, identify_image
from taco_app.store.codec import conversation_events
from taco_app.store.export.card import PROVENANCE
from taco_app.store.reading import Unreadable, kind, lines, open_regular, read_regular
from taco_app.store.recorder import Provenance
from taco_app.store.schema import SessionRow

MAX_TRACE_BYTES = 16 * 1024 * 1024  # a trace of 11 replies capped at 32,000 characters is well under 1 MB
MAX_ROW_BYTES = 16 * 1024 * 1024  # the same for one row of an export
MAX_EXPORT_BYTES = 16 * 1024 ** 3  # an export's data.jsonl, read a row at a time
MAX_IMAGE_BYTES = 100 * 1024 * 1024  # as for uploads to the web app
MAX_MODEL_CHARS = 512  # the sessions.model column
_MANTIS_ROLES = {"user": "user", "assistant": "assistant"}  # an export's speaker names → ours
_LLAVA_ROLES = {"human": "user", "gpt": "assistant"}
# A file or row that cannot be imported raises one of these; its message says why.
_SKIP = (TraceFormatError, Unreadable, ImageLoadError)
# Pillow's format → the extension a stored image gets when its own name does not say the format.
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)  # ids of the sessions this import stored
    existing: list[str] = field(default_factory=list)  # ids of conversations found already stored
    skipped: list[str] = field(default_factory=list)  # "FILE[:LINE]: why", one per file or row left out

    def skip(self, where: str, why: object) -> None:
        self.skipped.append(" ".join(f"{where}: {why}".splitlines()))  # one line each, whatever the text

    def extend(self, other: ImportReport) -> None:
        self.imported += other.imported
        self.existing += other.existing
        self.skipped += other.skipped

    def summary(self) -> str:
        text = f"imported {len(self.imported)} session(s)"
        text += f"; {len(self.existing)} already stored" if self.existing else ""
        return text + (f"; {len(self.skipped)} skipped" if self.skipped else "")


@dataclass
class _Source:
    """One conversation read from a file or row, its types checked, its images not yet read."""

    conversation: Conversation
    model: str | None
    shown: dict[str, str]  # image id → its path as the file wrote it, for messages


@dataclass(frozen=True)
class _Image:
    data: bytes
    sha256: str
    ext: str
    width: int
    height: int


# --- the entry points -------------------------------------------------------------------------


def check_paths(paths: list[str | Path]) -> list[Path]:
    """The paths of an import, each an existing regular file or folder; raises before anything is read."""
    checked = []
    for raw in paths:
        path = Path(raw)
        try:
            mode = os.stat(path).st_mode  # stat never opens: a FIFO cannot block here
        except (OSError, ValueError):
            raise TraceFormatError(f"no such file or folder: {path}") from None
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise TraceFormatError(f"cannot import {path}: it is neither a regular file nor a folder ({kind(mode)})")
        checked.append(path)
    return checked


def import_paths(store: Any, paths: list[str | Path]) -> ImportReport:
    """Import reference traces (``*.json``), exports (``*.jsonl``) and folders of them (their top level)."""
    report = ImportReport()
    for path in check_paths(paths):
        items = sorted([*path.glob("*.json"), *path.glob("*.jsonl")]) if path.is_dir() else [path]
        items = [item for item in items if item.name != PROVENANCE]  # an export's sidecar: read with its rows
        for item in items:
            if item.suffix == ".jsonl":
                report.extend(import_jsonl(store, item))
            else:
                _import_one(store, report, str(item), lambda item=item: _trace_source(item))
    return report


def import_trace(store: Any, path: str | Path) -> str:
    """Import one reference-trace JSON file; returns its session id (new, or stored before).

    Raises ``ValueError`` (``TraceFormatError``, ``ImageLoadError``…) saying why it cannot be imported.
    """
    try:
        session_id, _new = _store_source(store, _trace_source(Path(path)))
    except _SKIP as err:
        raise TraceFormatError(f"{path}: {err}") from None
    except RecursionError:
        raise TraceFormatError(f"{path}: nested too deeply") from None
    return session_id


def import_jsonl(store: Any, path: str | Path) -> ImportReport:
    """Import a ``cota-mantis`` (or ``cota-llava``) export, row by row; image paths are relative to its folder."""
    path = Path(path)
    report = ImportReport()
    try:
        file = open_regular(path, MAX_EXPORT_BYTES)
    except Unreadable as err:
        report.skip(str(path), err)
        return report
    base = path.parent.resolve()
    models = _provenance_models(base / PROVENANCE)
    with file:
        for number, line in lines(file, MAX_ROW_BYTES):
            where = f"{path}:{number}"
            if line is None:
                report.skip(where, f"the row is longer than the limit of {MAX_ROW_BYTES:,} bytes")
            elif line.strip():
                _import_one(store, report, where, lambda line=line: _row_source(line, base, models))
    return report


def _provenance_models(path: Path) -> dict[str, str]:
    """Row id → model, from an export's provenance sidecar; what cannot be read is left out."""
    try:
        file = open_regular(path, MAX_EXPORT_BYTES)
    except Unreadable:
        return {}
    models = {}
    with file:
        for _, line in lines(file, MAX_ROW_BYTES):
            try:
                entry = json.loads(line) if line else None
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("id"), str) and isinstance(entry.get("model"), str):
                models[entry["id"]] = entry["model"]
    return models


def _import_one(store: Any, report: ImportReport, where: str, read: Callable[[], _Source]) -> None:
    """Read and store one conversation; anything wrong with it goes to the report, not up."""
    try:
        session_id, new = _store_source(store, read())
    except _SKIP as err:
        report.skip(where, err)
    except RecursionError:  # JSON nested deeper than Python can follow, anywhere in the file or row
        report.skip(where, "nested too deeply")
    else:
        (report.imported if new else report.existing).append(session_id)


# --- reading and checking ---------------------------------------------------------------------


def _load_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise TraceFormatError("not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise TraceFormatError(f"not JSON: {err}") from None
    except RecursionError:  # e.g. 200,000 nested lists: the decoder gives up before memory does
        raise TraceFormatError("nested too deeply") from None


def _trace_source(path: Path) -> _Source:
    data = _load_json(read_regular(path, MAX_TRACE_BYTES))
    if isinstance(data, list):
        raise TraceFormatError("a JSON array, not a trace: to import an export, import its cota-mantis data.jsonl")
    conversation = parse_trace(data, base_dir=path.parent)  # checks the messages and their parts
    return _Source(conversation, _model(data.get("model"), "'model'"),
                   {image_id: str(target) for image_id, target in conversation.image_paths.items()})


def _model(value: Any, name: str) -> str | None:
    if value is None or (isinstance(value, str) and len(value) <= MAX_MODEL_CHARS):
        return value
    raise TraceFormatError(f"{name} must be a text (at most {MAX_MODEL_CHARS} characters) or null")


def _row_source(line: bytes, base: Path, models: dict[str, str]) -> _Source:
    row = _load_json(line)
    if not isinstance(row, dict):
        raise TraceFormatError("a row is a JSON object")
    if "conversation" in row:  # cota-mantis
        messages = _messages(row["conversation"], "conversation", "role", "content", _MANTIS_ROLES)
        images_key = "images"
    elif "conversations" in row:  # cota-llava
        messages = _messages(row["conversations"], "conversations", "from", "value", _LLAVA_ROLES)
        images_key = "image"
    else:
        raise TraceFormatError("neither 'conversation' (cota-mantis) nor 'conversations' (cota-llava)")
    images = row.get(images_key)
    images = [] if images is None else images
    if not isinstance(images, list) or not all(isinstance(rel, str) for rel in images):
        raise TraceFormatError(f"'{images_key}' must be a list of paths")
    metadata = row.get("metadata")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TraceFormatError("'metadata' must be an object")
    row_id = row.get("id", row.get("sample_id"))
    model = metadata.get("model", models.get(row_id) if isinstance(row_id, str) else None)
    model = _model(model, "'metadata.model'")

    turns = _turns(_as_inference(messages))
    placeholders = sum(len(turn.image_ids) for turn in turns)
    if placeholders != len(images):
        raise TraceFormatError(f"{placeholders} <image> placeholders but {len(images)} images")
    image_paths = {f"image-{k}": _inside(base, rel) for k, rel in enumerate(images)}
    return _Source(Conversation(turns=turns, image_paths=image_paths, model=model), model,
                   {f"image-{k}": rel for k, rel in enumerate(images)})


def _messages(value: Any, key: str, role_key: str, text_key: str, roles: dict[str, str]) -> list[tuple[str, str]]:
    """A row's messages as (user|assistant, text), every one checked."""
    if not isinstance(value, list):
        raise TraceFormatError(f"'{key}' must be a list of messages")
    messages = []
    for number, message in enumerate(value, 1):
        role = message.get(role_key) if isinstance(message, dict) else None
        text = message.get(text_key) if isinstance(message, dict) else None
        if not isinstance(role, str) or role not in roles or not isinstance(text, str):
            raise TraceFormatError(f"message {number} of '{key}' needs a '{role_key}' ({' or '.join(roles)}) "
                                   f"and a text '{text_key}'")
        messages.append((roles[role], text))
    return messages


def _as_inference(messages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A training row's messages (the goal first, written part by part) as the model read them.

    Rows written the way TACO's pipeline writes them (ours, Salesforce/cota-*) start with the goal;
    older rows of ours are already in the model's text.
    """
    if not messages or messages[0][0] != "user" or not is_training_text(messages[0][1]):
        return messages
    try:
        return [(role, inference_text(text, first=i == 0) if role == "user" else text)
                for i, (role, text) in enumerate(messages)]
    except ValueError as err:
        raise TraceFormatError(f"a user turn is not written as training rows write them: {err}") from None


def _turns(messages: list[tuple[str, str]]) -> list[Turn]:
    """An export's turns: every ``<image>`` is the next image, numbered in order over the whole row."""
    turns = []
    next_image = 0
    for role, text in messages:
        count = text.count(IMAGE_TOKEN)
        turns.append(text_turn(role, text, [f"image-{next_image + k}" for k in range(count)]))
        next_image += count
    return turns


def _inside(base: Path, rel: str) -> Path:
    try:
        target = (base / rel).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL in the path, a symlink loop
        raise TraceFormatError(f"image path cannot be used: {rel!r}") from None
    if not target.is_relative_to(base):  # a row must not pull files from elsewhere on the disk
        raise TraceFormatError(f"image path leaves {base}: {rel!r}")
    return target


def _read_image(image_id: str, path: Path, shown: str) -> _Image:
    """An image file read within its limit and decoded whole; raises saying which image and why."""
    try:
        data = read_regular(path, MAX_IMAGE_BYTES)
        fmt, (width, height) = identify_image(data, path.name)
    except (Unreadable, ImageLoadError) as err:
        raise TraceFormatError(f"{image_id} ({shown}): {err}") from None
    return _Image(data, hashlib.sha256(data).hexdigest(), _extension(path, fmt), width, height)


def _extension(path: Path, fmt: str) -> str:
    """The file's own extension when it names its format (photo.jpeg stays .jpeg), else the format's."""
    ext = path.suffix.lower()
    named = Image.registered_extensions().get(ext)
    if ext[1:].isalnum() and len(ext) <= 9 and (named == fmt or (fmt == "MPO" and named == "JPEG")):
        return ext[1:]
    return _EXTENSIONS.get(fmt, "bin")


# --- storing ----------------------------------------------------------------------------------


def _session_id(source: _Source, images: dict[str, _Image]) -> str:
    """The same conversation (model, turn texts, image bytes) always gets the same id."""
    content = [source.model, [[turn.role, turn.text] for turn in source.conversation.turns],
               [images[image_id].sha256 for image_id in sorted(images, key=_ordinal)]]
    return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _ordinal(image_id: str) -> int:
    return int(image_id.rsplit("-", 1)[1])


def _exists(store: Any, session_id: str) -> bool:
    with store.reading() as db:
        return db.get(SessionRow, session_id) is not None


def _store_source(store: Any, source: _Source) -> tuple[str, bool]:
    """Store one conversation in one transaction; returns its session id and whether it is new."""
    conversation = source.conversation
    if not conversation.turns or conversation.turns[0].role != "user":
        raise TraceFormatError("a conversation starts with the user's request")
    # Every image read and decoded before anything is written: a bad one leaves nothing behind.
    images = {image_id: _read_image(image_id, path, source.shown.get(image_id, str(path)))
              for image_id, path in conversation.image_paths.items()}
    session_id = _session_id(source, images)
    if _exists(store, session_id):
        return session_id, False
    kept = {image_id: ev.ImageInfo(image_id=image_id, sha256=image.sha256, width=image.width, height=image.height,
                                   path=str(store.images.save_bytes(image.data, image.ext)[1]))
            for image_id, image in images.items()}
    now = time.time()
    events = list(conversation_events(session_id, conversation, kept, backend="import", model=source.model,
                                      family=_family(source.model), started_at=now))
    try:
        store.record_whole(events, Provenance.imported(now))
    except Exception as err:
        refusal = _refusal(err)
        if refusal is None:
            raise  # the database itself failed (gone, locked, full): not this conversation's fault
        if _exists(store, session_id):  # another import stored the same conversation meanwhile
            return session_id, False
        raise TraceFormatError(f"the database refused it ({refusal})") from err
    return session_id, True


def _family(model: str | None) -> str:
    return "qwen2" if model and "qwen" in model.lower() else "mantis"


def _refusal(err: BaseException) -> str | None:
    """Why the database refused these rows (a constraint, a value it cannot hold), or None if it failed."""
    from sqlalchemy.exc import DataError, IntegrityError

    cause: BaseException | None = err
    while cause is not None:  # the store may wrap the driver's error in its own
        if isinstance(cause, (IntegrityError, DataError)):
            text = str(cause.orig).strip()
            return text.splitlines()[0] if text else type(cause.orig).__name__  # the first line: no SQL
        cause = cause.__cause__
    return None
