"""The exporter: which sessions, their conversations rebuilt, their images copied, the files written.

Each session the filters choose is rebuilt in TACO's turn format from its rows, people's
corrections applied, or left out with a reason (:mod:`.rebuild`: clean targets only). Its images
are copied by content into ``DIR/images/<sha256>.<ext>``; its row, in the chosen format
(:data:`~taco_app.store.export.formats.FORMATS`), goes to the format's data file, where the row came
from to ``DIR/provenance.jsonl``, and the dataset card to ``DIR/README.md`` (:mod:`.card`). The output
carries no timestamps and sessions are ordered by (created_at, id), so the same database always gives
the same bytes. Every file is written to a temp name beside it and renamed into place, so each one
is whole: the new one, or the one it replaces.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from taco_app.store.export.base import DATASET, ExportFormat, Sample
from taco_app.store.export.card import PROVENANCE, Counts, card, provenance
from taco_app.store.export.formats import FORMATS
from taco_app.store.export.rebuild import REASONS, Skip, rebuild
from taco_app.store.files import atomic_writer, write_atomic
from taco_app.store.queries import RATINGS, LatestFeedback
from taco_app.store.schema import FeedbackRow, ImageRow, SessionRow

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_EXT = re.compile(r"^[a-z0-9]{1,8}$")


@dataclass(frozen=True)
class ExportResult:
    count: int
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "session id: why", for each session left out
    reasons: dict[str, int] = field(default_factory=dict)  # why (a key of REASONS) → sessions left out

    def summary(self, fmt: str) -> str:
        """One line: what was exported and how many sessions were left out, by reason."""
        text = f"exported {self.count} session(s) as {fmt}"
        if self.reasons:
            why = ", ".join(f"{n} {REASONS[reason]}" for reason, n in sorted(self.reasons.items()))
            text += f"; left out {sum(self.reasons.values())}: {why}"
        return text


@dataclass
class _Plan:
    """Everything to write, decided before anything is written."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    copies: dict[str, Path] = field(default_factory=dict)  # relative target → source file
    skipped: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)


def parse_since(since: str | None) -> float | None:
    """``YYYY-MM-DD`` → UTC epoch seconds of that midnight (created_at is UTC epoch seconds)."""
    if since is None:
        return None
    try:
        day = datetime.strptime(since, "%Y-%m-%d")
    except ValueError:
        raise ValueError(f"--since must be a date YYYY-MM-DD, not {since!r}") from None
    return day.replace(tzinfo=timezone.utc).timestamp()


def check_dataset_name(name: str) -> str:
    """A dataset name is also the rows' id prefix and a Hub repo's name: letters, digits, ``-_.``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"--dataset-name must be 1-96 letters, digits, '-', '_' or '.', starting with a letter "
                         f"or digit, not {name!r}")
    return name


def export(store: Any, out_dir: str | Path | None, fmt: str, *, rating: str | None = None,
           corrected_only: bool = False, since: str | None = None, force: bool = False, dry_run: bool = False,
           dataset: str = DATASET) -> ExportResult:
    """Write the chosen sessions to ``out_dir``; ``dry_run`` only counts them (``out_dir`` unused)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if rating is not None and rating not in RATINGS:
        raise ValueError(f"rating must be one of {', '.join(RATINGS)}, not {rating!r}")
    check_dataset_name(dataset)
    since_ts = parse_since(since)
    root = Path(out_dir if out_dir is not None else ".").resolve()
    if not dry_run:
        if root.exists() and not root.is_dir():
            raise ValueError(f"{root} exists and is not a folder")
        if root.is_dir() and any(root.iterdir()) and not force:
            raise ValueError(f"{root} is not empty; choose an empty folder or pass --force to overwrite")

    # Plan everything before writing anything: a refused image path leaves DIR untouched.
    format_ = FORMATS[fmt]
    plan = _plan(store, root, format_, dataset, since_ts, rating, corrected_only)
    result = ExportResult(count=len(plan.rows), skipped=plan.skipped, reasons=dict(sorted(plan.reasons.items())))
    if dry_run:
        return result
    filters = [f"rating = {rating}"] if rating else []
    filters += ["corrected sessions only"] if corrected_only else []
    filters += [f"created on or after {since}"] if since else []
    counts = Counts(len(plan.rows), len(plan.copies), result.reasons, dict(plan.models))
    texts = {**format_.files(dataset), "README.md": card(format_, dataset, counts, filters)}
    return replace(result, files=_write(root, format_, plan, texts))


# --- choosing and rebuilding --------------------------------------------------------------------


def _plan(store: Any, root: Path, fmt: ExportFormat, dataset: str, since_ts: float | None, rating: str | None,
          corrected_only: bool) -> _Plan:
    sessions, feedback = _load(store, since_ts)
    plan = _Plan()
    for session in sessions:
        notes = LatestFeedback.fold(feedback.get(session.id, []))
        if corrected_only and not notes.corrected:
            continue
        if rating is not None and notes.rating != rating:
            continue
        try:
            rebuilt = rebuild(session, notes)
            paths = _images(store, root, session, rebuilt.image_ids, plan.copies)
        except Skip as skip:
            plan.skipped.append(f"{session.id}: {skip}")
            plan.reasons[skip.reason] += 1
            continue
        sample = Sample(f"{dataset}-{session.id}", dataset, session, rebuilt.turns, paths, notes)
        plan.rows.append(fmt.row(sample))
        plan.provenance.append(provenance(sample))
        plan.models[session.model or "unknown"] += 1
    return plan


def _load(store: Any, since_ts: float | None) -> tuple[list[SessionRow], dict[str, list[FeedbackRow]]]:
    query = (select(SessionRow)
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


def _images(store: Any, root: Path, session: SessionRow, image_ids: list[str], copies: dict[str, Path]) -> list[str]:
    """The export paths of the images, in order, each planned as a copy; :class:`Skip` if one is missing."""
    by_id = {row.image_id: row for row in session.images}
    if any(image_id not in by_id for image_id in image_ids):
        raise Skip("missing-image")
    paths = []
    for image_id in image_ids:
        rel, source = _image_target(store, root, by_id[image_id])
        copies[rel] = source
        paths.append(rel)
    return paths


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


def _write(root: Path, fmt: ExportFormat, plan: _Plan, texts: dict[str, str]) -> list[Path]:
    """The images, the data file, the provenance sidecar and the other files, each whole."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, source in sorted(plan.copies.items()):
        target = _inside(root, rel)
        if not target.exists():
            write_atomic(target, source.read_bytes())
    data, sidecar = _inside(root, fmt.data_file), _inside(root, PROVENANCE)
    others = {_inside(root, name): text for name, text in texts.items()}
    # Each file is written under a temp name and renamed into place, so a crash or a full disk
    # leaves an earlier export's files whole (a --force export into it). All are written before
    # any is renamed: the window where they disagree is a few renames long.
    writing = data
    try:
        with ExitStack() as stack:
            data_file = stack.enter_context(atomic_writer(data, durable=True))
            _rows(data_file, plan.rows, array=fmt.data_file.endswith(".json"))
            writing = sidecar
            _rows(stack.enter_context(atomic_writer(sidecar, durable=True)), plan.provenance, array=False)
            for path, text in others.items():
                writing = path
                stack.enter_context(atomic_writer(path, durable=True)).write(text.encode("utf-8"))
    except OSError as err:
        if err.filename is None:  # a failed write() names no file: say which one, for the message
            err.filename = str(writing)
        raise
    return [data, sidecar, *others]


def _rows(file: BinaryIO, rows: list[dict[str, Any]], *, array: bool) -> None:
    """One row a line (JSON Lines), or one JSON array with a row a line (what ``json.load`` reads).

    Streamed: an export of many sessions is never one string in memory.
    """
    if array:
        file.write(b"[\n" if rows else b"[")
    for i, row in enumerate(rows):
        end = (",\n" if i < len(rows) - 1 else "\n") if array else "\n"
        file.write((json.dumps(row, ensure_ascii=False) + end).encode("utf-8"))
    if array:
        file.write(b"]\n")
