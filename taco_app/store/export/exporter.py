"""The exporter: which sessions, their conversations rebuilt, their images copied, the files written.

Each finished session is rebuilt in TACO's turn format from its rows (people's corrections
applied), its images are copied by content into ``DIR/images/<sha256>.<ext>``, and the rows (one
per session, in the chosen format: :data:`~taco_app.store.export.formats.FORMATS`) go to
``DIR/data.jsonl`` with a short dataset card in ``DIR/README.md``. The output carries no timestamps
and sessions are ordered by (created_at, id), so the same database always gives the same bytes.
Every file is written to a temp name beside it and renamed into place, so each one is whole: the
new one, or the one it replaces.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from taco_app.cota.actions import compact_json, step_text
from taco_app.cota.parser import ParsedStep, parse
from taco_app.cota.prompt import IMAGE_TOKEN, assistant_turn, user_request
from taco_app.store.export.base import ExportFormat, Sample
from taco_app.store.export.formats import FORMATS
from taco_app.store.files import atomic_writer, write_atomic
from taco_app.store.queries import RATINGS, LatestFeedback
from taco_app.store.schema import FeedbackRow, ImageRow, SessionRow

LICENCE = (
    "TACO's prompt format and checkpoints: CC-BY-NC-4.0 (SalesforceAIResearch/TACO); "
    "images: as provided by the people who uploaded them"
)
_TOOL_IMAGE = re.compile(r"(image-\d+): " + re.escape(IMAGE_TOKEN))
_EXT = re.compile(r"^[a-z0-9]{1,8}$")


@dataclass(frozen=True)
class ExportResult:
    count: int
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "session id: why", for sessions that could not be exported


@dataclass
class _Plan:
    """Everything to write, decided before anything is written."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    copies: dict[str, Path] = field(default_factory=dict)  # relative target → source file
    skipped: list[str] = field(default_factory=list)


def parse_since(since: str | None) -> float | None:
    """``YYYY-MM-DD`` → UTC epoch seconds of that midnight (created_at is UTC epoch seconds)."""
    if since is None:
        return None
    try:
        day = datetime.strptime(since, "%Y-%m-%d")
    except ValueError:
        raise ValueError(f"--since must be a date YYYY-MM-DD, not {since!r}") from None
    return day.replace(tzinfo=timezone.utc).timestamp()


def export(store: Any, out_dir: str | Path | None, fmt: str, *, rating: str | None = None,
           corrected_only: bool = False, since: str | None = None, force: bool = False, dry_run: bool = False) -> ExportResult:
    """Write the chosen sessions to ``out_dir``; ``dry_run`` only counts them (``out_dir`` unused)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if rating is not None and rating not in RATINGS:
        raise ValueError(f"rating must be one of {', '.join(RATINGS)}, not {rating!r}")
    since_ts = parse_since(since)
    root = Path(out_dir if out_dir is not None else ".").resolve()
    if not dry_run:
        if root.exists() and not root.is_dir():
            raise ValueError(f"{root} exists and is not a folder")
        if root.is_dir() and any(root.iterdir()) and not force:
            raise ValueError(f"{root} is not empty; choose an empty folder or pass --force to overwrite")

    # Plan everything before writing anything: a refused image path leaves DIR untouched.
    plan = _plan(store, root, FORMATS[fmt], since_ts, rating, corrected_only)
    if dry_run:
        return ExportResult(count=len(plan.rows), skipped=plan.skipped)
    card = _card(FORMATS[fmt], len(plan.rows), len(plan.copies), rating, corrected_only, since)
    return ExportResult(count=len(plan.rows), files=_write(root, plan, card), skipped=plan.skipped)


# --- choosing and rebuilding --------------------------------------------------------------------


def _plan(store: Any, root: Path, fmt: ExportFormat, since_ts: float | None, rating: str | None,
          corrected_only: bool) -> _Plan:
    sessions, feedback = _load(store, since_ts)
    plan = _Plan()
    for session in sessions:
        notes = LatestFeedback.fold(feedback.get(session.id, []))
        if corrected_only and not notes.corrected:
            continue
        if rating is not None and notes.rating != rating:
            continue
        built = _conversation(session, notes)
        if built is None:
            plan.skipped.append(f"{session.id}: its conversation could not be rebuilt (no Terminate answer or step text)")
            continue
        turns, image_ids = built
        by_id = {row.image_id: row for row in session.images}
        paths = []
        for image_id in image_ids:
            if image_id not in by_id:
                break
            rel, source = _image_target(store, root, by_id[image_id])
            plan.copies[rel] = source
            paths.append(rel)
        if len(paths) != len(image_ids):  # an image the text refers to is missing: not trainable
            plan.skipped.append(f"{session.id}: an image its text refers to is not in the store")
            continue
        plan.rows.append(fmt.row(Sample(session, turns, paths, notes)))
    return plan


def _load(store: Any, since_ts: float | None) -> tuple[list[SessionRow], dict[str, list[FeedbackRow]]]:
    query = (select(SessionRow).where(SessionRow.status == "finished")
             .options(selectinload(SessionRow.steps), selectinload(SessionRow.images))
             .order_by(SessionRow.created_at, SessionRow.id))
    if since_ts is not None:
        query = query.where(SessionRow.created_at >= since_ts)
    with store.reading() as db:
        sessions = list(db.scalars(query).all())
        notes = db.scalars(select(FeedbackRow).order_by(FeedbackRow.created_at, FeedbackRow.id)).all()
    feedback: dict[str, list[FeedbackRow]] = {}
    for note in notes:
        feedback.setdefault(note.session_id, []).append(note)
    return sessions, feedback


def _conversation(session: SessionRow, notes: LatestFeedback) -> tuple[list[Any], list[str]] | None:
    """The session's turns (corrections applied) and the image ids in placeholder order, or None."""
    inputs = [row.image_id for row in session.images if row.role == "input"]
    turns = [user_request(session.question, inputs)]
    image_ids = list(inputs)
    steps = list(session.steps)
    if not steps:
        return None
    for position, step in enumerate(steps):
        fix = notes.corrected_steps.get(step.index)
        raw = step.raw if fix is None else (fix if isinstance(fix, str) else compact_json(fix))
        last = position == len(steps) - 1
        if last:
            parsed = parse(raw)
            if not (isinstance(parsed, ParsedStep) and parsed.action and parsed.action.is_final):
                return None  # not an answered session: nothing to learn an ending from
            if notes.corrected_answer is not None:
                raw = step_text(parsed.thought, parsed.action.with_answer(notes.corrected_answer))
        turns.append(assistant_turn(raw))
        if last or step.observation is None:
            continue
        turns.append(_Text("user", step.observation))
        image_ids += _observation_images(step.observation, step.image_ids or [])
    return turns, image_ids


@dataclass
class _Text:
    """A turn already in text form (observations are stored with their ``<image>`` placeholders)."""

    role: str
    text: str


def _observation_images(text: str, produced: list[str]) -> list[str]:
    count = text.count(IMAGE_TOKEN)
    if len(produced) == count:
        return list(produced)
    named = _TOOL_IMAGE.findall(text)
    return named if len(named) == count else named + ["?"] * (count - len(named))


def _image_target(store: Any, root: Path, row: ImageRow) -> tuple[str, Path]:
    """``images/<sha256>.<ext>`` of the row's file content; refuses paths outside either folder."""
    source = store.image_path(row)  # raises ValueError for a path that leaves the images folder
    ext = source.suffix.lstrip(".").lower()
    ext = ext if _EXT.match(ext) else "bin"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    rel = f"images/{digest}.{ext}"
    _inside(root, rel)
    return rel, source


def _inside(root: Path, rel: str) -> Path:
    target = (root / rel).resolve()
    if not target.is_relative_to(root):
        raise ValueError(f"refusing to write outside {root}: {rel!r}")
    return target


# --- writing ------------------------------------------------------------------------------------


def _write(root: Path, plan: _Plan, card_text: str) -> list[Path]:
    """The images, ``data.jsonl`` and the card, each whole; returns the two files written."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, source in sorted(plan.copies.items()):
        target = _inside(root, rel)
        if not target.exists():
            write_atomic(target, source.read_bytes())
    data, card = _inside(root, "data.jsonl"), _inside(root, "README.md")
    # Each file is written under a temp name and renamed into place, so a crash or a full disk
    # leaves an earlier export's files whole (a --force export into it). Both are written before
    # either is renamed: the window where the card and the data disagree is two renames long.
    writing = data
    try:
        with atomic_writer(card, durable=True) as card_file, atomic_writer(data, durable=True) as data_file:
            for r in plan.rows:  # streamed: an export of many sessions is never one string in memory
                data_file.write((json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
            writing = card
            card_file.write(card_text.encode("utf-8"))
    except OSError as err:
        if err.filename is None:  # a failed write() names no file: say which one, for the message
            err.filename = str(writing)
        raise
    return [data, card]


def _card(fmt: ExportFormat, count: int, images: int, rating: str | None, corrected_only: bool, since: str | None) -> str:
    filters = [f"rating = {rating}"] if rating else []
    filters += ["corrected sessions only"] if corrected_only else []
    filters += [f"created on or after {since}"] if since else []
    return (
        "# TACO Studio export\n\n"
        f"- Format: `{fmt.name}` (rows like `{fmt.like}`), one row per line in `data.jsonl`\n"
        f"- Rows: {count} finished sessions with a Terminate answer; {images} distinct images in `images/`\n"
        f"- Filters: {', '.join(filters) if filters else 'none'}\n"
        "- Corrections from feedback are applied (corrected steps and final answers)\n\n"
        "## Licences\n\n"
        f"{LICENCE}.\n"
    )
