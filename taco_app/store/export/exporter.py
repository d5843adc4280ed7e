"""The exporter: which sessions, their conversations rebuilt, their images copied, the files written.

The filters choose sessions; the chosen format (:data:`~taco_app.store.export.formats.FORMATS`)
turns them into rows (:meth:`~taco_app.store.export.base.ExportFormat.rows`): most formats rebuild
each session in TACO's turn format, people's corrections applied, or leave it out with a reason
(:mod:`.rebuild`: clean targets only); a format whose rows pair two sessions reads the others from
the same :class:`~taco_app.store.export.base.Batch`. The images the rows name are copied by content
into ``DIR/images/<sha256>.<ext>``; the rows go to the format's data file, where each came from to
``DIR/provenance.jsonl``, and the dataset card to ``DIR/README.md`` (:mod:`.card`). The output
carries no timestamps and sessions are read in (created_at, id) order, so the same database always
gives the same bytes. Every file is written to a temp name beside it and renamed into place, so each
one is whole: the new one, or the one it replaces.
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
from typing import Any, BinaryIO, Mapping

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from taco_app.store.corrections import image_file
from taco_app.store.export.base import DATASET, Batch, ExportFormat, Left
from taco_app.store.export.card import PROVENANCE, Counts, card
from taco_app.store.export.formats import FORMATS
from taco_app.store.export.rebuild import REASONS, Skip
from taco_app.store.files import atomic_writer, write_atomic
from taco_app.store.queries import RATINGS
from taco_app.store.schema import FeedbackRow, PreferenceRow, SessionRow

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_EXT = re.compile(r"^[a-z0-9]{1,8}$")


@dataclass(frozen=True)
class ExportResult:
    count: int
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "session id: why", for each session (or pair) left out
    reasons: dict[str, int] = field(default_factory=dict)  # why (a key of REASONS) → sessions (or pairs) left out
    unit: str = "session"  # what a row is made from: "session", or "pair" (trl-dpo)

    def summary(self, fmt: str) -> str:
        """One line: what was exported and how many sessions (or pairs) were left out, by reason."""
        text = f"exported {self.count} {self.unit}(s) as {fmt}"
        if self.reasons:
            why = ", ".join(f"{n} {REASONS[reason]}" for reason, n in sorted(self.reasons.items()))
            text += f"; left out {sum(self.reasons.values())}: {why}"
        return text


@dataclass
class _Plan:
    """Everything to write, decided before anything is written."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    copies: dict[str, Path] = field(default_factory=dict)  # relative target → source file, for the rows written
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


def check_options(fmt: str, **given: str | None) -> dict[str, str]:
    """The format's options (:attr:`ExportFormat.options`), each as given or its default; ``ValueError``
    for an option the format does not take or a value it does not know. ``given``: e.g. ``pair="step"``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    takes = FORMATS[fmt].options
    for name, value in given.items():
        if value is None:
            continue
        if name not in takes:
            having = [other for other, f in FORMATS.items() if name in f.options]
            raise ValueError(f"--{name} is an option of {' and '.join(having) or 'no format'}, not of {fmt}")
        if value not in takes[name]:
            raise ValueError(f"--{name} must be one of {', '.join(takes[name])}, not {value!r}")
    return {name: given.get(name) or values[0] for name, values in takes.items()}


def export(store: Any, out_dir: str | Path | None, fmt: str, *, rating: str | None = None,
           corrected_only: bool = False, since: str | None = None, force: bool = False, dry_run: bool = False,
           dataset: str = DATASET, pair: str | None = None) -> ExportResult:
    """Write the chosen sessions to ``out_dir``; ``dry_run`` only counts them (``out_dir`` unused).

    ``pair`` (trl-dpo): "step" pairs the two different steps, "trajectory" the two rests of the traces
    from there. For a format whose rows pair sessions, the filters choose the chosen session of a pair.
    """
    options = check_options(fmt, pair=pair)
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
    plan = _plan(store, root, format_, dataset, since_ts, rating, corrected_only, options)
    result = ExportResult(count=len(plan.rows), skipped=plan.skipped, reasons=dict(sorted(plan.reasons.items())),
                          unit=format_.unit)
    if dry_run:
        return result
    filters = [f"rating = {rating}"] if rating else []
    filters += ["corrected sessions only"] if corrected_only else []
    filters += [f"created on or after {since}"] if since else []
    filters += [f"{name} = {value}" for name, value in options.items()]
    counts = Counts(len(plan.rows), len(plan.copies), result.reasons, dict(plan.models))
    texts = {**format_.files(dataset), "README.md": card(format_, dataset, counts, filters)}
    return replace(result, files=_write(root, format_, plan, texts))


# --- choosing and rebuilding --------------------------------------------------------------------


def _plan(store: Any, root: Path, fmt: ExportFormat, dataset: str, since_ts: float | None, rating: str | None,
          corrected_only: bool, options: Mapping[str, str]) -> _Plan:
    sessions, feedback = _load(store, since_ts)
    sources: dict[str, Path] = {}  # every image a row may name: export path → stored file

    def everything() -> list[SessionRow]:
        return sessions if since_ts is None else _load(store, None)[0]

    def preferences() -> list[PreferenceRow]:
        with store.reading() as db:
            return list(db.scalars(select(PreferenceRow).order_by(PreferenceRow.created_at, PreferenceRow.id)).all())

    batch = Batch(dataset, [], feedback, options=options, stored=everything, preferences=preferences,
                  images=lambda session, image_ids, redrawn: _images(store, root, session, image_ids, sources, redrawn))
    for session in sessions:
        notes = batch.notes(session)
        if corrected_only and not notes.corrected:
            continue
        if rating is not None and notes.rating != rating:
            continue
        batch.selected.append(session)
    plan = _Plan()
    for made in fmt.rows(batch):
        if isinstance(made, Left):
            plan.skipped.append(f"{made.what}: {made.skip}")
            plan.reasons[made.skip.reason] += 1
            continue
        plan.rows.append(made.row)
        plan.provenance.append(made.provenance)
        plan.copies.update((rel, sources[rel]) for rel in made.images)
        plan.models.update(model or "unknown" for model in made.models)
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


def _images(store: Any, root: Path, session: SessionRow, image_ids: list[str], copies: dict[str, Path],
            redrawn: dict[str, str] | None = None) -> list[str]:
    """The export paths of the images, in order, each planned as a copy; :class:`Skip` if one is missing.
    ``redrawn``: image id → the stored picture that stands for it (a tool's picture redrawn with corrected regions)."""
    by_id = {row.image_id: row for row in session.images}
    if any(image_id not in by_id for image_id in image_ids):
        raise Skip("missing-image")
    paths = []
    for image_id in image_ids:
        if image_id in (redrawn or {}):
            source = image_file(store.images_root, redrawn[image_id])  # ValueError for a path outside the folder
            if not source.is_file():
                raise Skip("missing-image", f"{image_id} redrawn with corrected regions")
            rel, source = _image_target(store, root, source)
        else:
            rel, source = _image_target(store, root, store.image_path(by_id[image_id]))  # ValueError: path outside
        copies[rel] = source
        paths.append(rel)
    return paths


def _image_target(store: Any, root: Path, source: Path) -> tuple[str, Path]:
    """``images/<sha256>.<ext>`` of the file's content; refuses a path outside the export folder."""
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
