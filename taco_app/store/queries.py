"""Review queries and feedback: list and filter sessions, open one trace, a dashboard, ratings and corrections,
preferences between two sessions, and a session's forks.

Everything here is plain SQL through SQLAlchemy Core/ORM expressions that render on SQLite and
PostgreSQL alike: filtering, counting and paging happen in the database (COUNT, LIMIT/OFFSET), never
in Python, so a page stays fast however many sessions the store holds.

Feedback is append-only: every call adds one :class:`FeedbackRow` or :class:`PreferenceRow` (its own short
transaction), so the history is kept; when reading, the latest row of a kind wins (by ``created_at``, then ``id``).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, cast, exists, func, or_, select
from sqlalchemy.orm import Session as DbSession

from taco_app.cota.parser import ParseFailure, parse
from taco_app.cota.registry import action_names
from taco_app.store.db import Store
from taco_app.store.schema import (BLAMES, EvalItemRow, FeedbackRow, ImageRow, PreferenceRow, SafeText, SessionRow,
                                   StepRow)

RATINGS = ("up", "down")
MAX_PAGE_SIZE = 500
MAX_PAGE = 1_000_000  # past it the row offset overflows the databases' integers
MAX_SEARCH_CHARS = 1_000  # a search longer than any question is a mistake, and costs a full scan per character
STEP_HINT = 'a step is {"thought": ..., "actions": [{"name": ..., "arguments": {...}}]}'


@dataclass
class SessionFilter:
    """What to show. Every field is optional; set fields are combined with AND.

    ``text``: case-insensitive substring of the question or of the answer's JSON text (so a
    non-ASCII answer is matched in its ``\\uXXXX`` form on SQLite). ``since`` <= created_at <
    ``until``; a date means local midnight, and a date ``until`` includes that whole day.
    ``rating``: the latest session-level rating (step is null) is the one that counts.
    ``tool``: sessions with at least one step whose action name equals it.
    ``eval_run``: the sessions that answered the items of the eval run of that name.
    """

    text: str | None = None
    since: float | dt.date | dt.datetime | None = None
    until: float | dt.date | dt.datetime | None = None
    model: str | None = None
    status: str | None = None
    rating: str | None = None
    tool: str | None = None
    eval_run: str | None = None
    page: int = 1
    page_size: int = 50


@dataclass
class SessionSummary:
    id: str
    created_at: float
    question: str  # the first 200 characters
    answer: Any
    status: str
    model: str | None
    steps: int
    rating: str | None


@dataclass
class Page:
    items: list[SessionSummary]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


@dataclass
class TraceImage:
    image_id: str
    path: Path  # absolute, checked to lie inside the images folder
    width: int
    height: int
    role: str
    step: int | None
    parent: str | None
    bbox: list[float] | None


@dataclass
class Feedback:
    step: int | None
    rating: str | None
    corrected_answer: str | None
    corrected_step: Any
    note: str | None
    created_at: float
    blame: str | None = None  # a step rated down: "model" or "tool" (None: not said, counted as the model's)
    reviewer: str | None = None  # who gave it (None: not said, or given before names were kept)
    corrected_output: Any = None  # what the step's tool output should have been (see :func:`correct_output`)


@dataclass
class LatestFeedback:
    """What a feedback history amounts to: for each kind of feedback, the latest entry wins."""

    rating: str | None = None  # the latest session-level rating
    corrected_answer: str | None = None
    step_ratings: dict[int, str] = field(default_factory=dict)
    corrected_steps: dict[int, Any] = field(default_factory=dict)
    corrected: bool = False  # any correction (answer, step or tool output) at all
    step_blame: dict[int, str] = field(default_factory=dict)  # the blame of each step's latest rating, when it has one
    corrected_outputs: dict[int, dict[str, Any]] = field(default_factory=dict)  # latest per step (:func:`correct_output`)

    @classmethod
    def fold(cls, history: Any) -> "LatestFeedback":
        """``history``: feedback rows (or :class:`Feedback`), oldest first."""
        latest = cls()
        for item in history:  # oldest first, so later rows overwrite
            if item.rating is not None:
                if item.step is None:
                    latest.rating = item.rating
                else:
                    latest.step_ratings[item.step] = item.rating
                    # The blame belongs to the rating it came with: a later rating without one clears it.
                    if item.blame is not None:
                        latest.step_blame[item.step] = item.blame
                    else:
                        latest.step_blame.pop(item.step, None)
            if item.corrected_answer is not None:
                latest.corrected_answer = item.corrected_answer
            if item.corrected_step is not None and item.step is not None:
                latest.corrected_steps[item.step] = item.corrected_step
            fixed_output = getattr(item, "corrected_output", None)
            if isinstance(fixed_output, dict) and item.step is not None:
                latest.corrected_outputs[item.step] = fixed_output
            latest.corrected = (latest.corrected or item.corrected_answer is not None or item.corrected_step is not None
                                or fixed_output is not None)
        return latest


@dataclass
class Trace:
    session: dict[str, Any]  # the session row's columns
    steps: list[dict[str, Any]]  # each step row's columns, in order
    images: list[TraceImage]
    feedback: list[Feedback]  # oldest first: the whole history
    rating: str | None = None  # the latest session-level rating
    corrected_answer: str | None = None  # the latest corrected answer
    step_ratings: dict[int, str] = field(default_factory=dict)  # latest per step
    corrected_steps: dict[int, Any] = field(default_factory=dict)  # latest per step
    step_blame: dict[int, str] = field(default_factory=dict)  # latest per step, from the same row as its rating
    corrected_outputs: dict[int, dict[str, Any]] = field(default_factory=dict)  # latest per step


@dataclass
class Preference:
    """``chosen_id`` was judged better than ``rejected_id`` (with ``tie``: the two as good, in the order given)."""

    chosen_id: str
    rejected_id: str
    tie: bool
    reason: str | None
    created_at: float


@dataclass
class Lineage:
    """Where a session sits among forks: the session it was forked from (None when it is not a fork, or
    when that session is no longer stored: ``parent_id`` still names it) and the step it replaced there,
    and the sessions forked from it, each with the step it replaced (by fork step, then oldest first)."""

    parent: SessionSummary | None
    fork_step: int | None
    children: list[tuple[SessionSummary, int]]
    parent_id: str | None = None


# --- expressions --------------------------------------------------------------------------------


def _latest_rating() -> Any:
    """Correlated subquery: the latest session-level rating of the outer session row."""
    return (
        select(FeedbackRow.rating)
        .where(FeedbackRow.session_id == SessionRow.id, FeedbackRow.step.is_(None), FeedbackRow.rating.is_not(None))
        .order_by(FeedbackRow.created_at.desc(), FeedbackRow.id.desc())
        .limit(1)
        .correlate(SessionRow)
        .scalar_subquery()
    )


def _summary_columns() -> tuple[Any, ...]:
    """The columns of a :class:`SessionSummary`, in its order (the step count and rating per row)."""
    steps = select(func.count(StepRow.id)).where(StepRow.session_id == SessionRow.id).correlate(SessionRow).scalar_subquery()
    return (SessionRow.id, SessionRow.created_at, func.substr(SessionRow.question, 1, 200, type_=SafeText), SessionRow.answer,
            SessionRow.status, SessionRow.model, steps, _latest_rating())


def _epoch(value: float | dt.date | dt.datetime, end_of_day: bool = False) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()  # naive: local time, aware: its own zone
    if isinstance(value, dt.date):
        day = value + dt.timedelta(days=1) if end_of_day else value
        return dt.datetime.combine(day, dt.time()).timestamp()
    return float(value)


def _conditions(flt: SessionFilter) -> list[ColumnElement[bool]]:
    """The filter's conditions on a session row (its page and page size are not conditions)."""
    if flt.text is not None and len(flt.text) > MAX_SEARCH_CHARS:
        raise ValueError(f"the search text is {len(flt.text):,} characters long; the limit is {MAX_SEARCH_CHARS:,}")
    where: list[ColumnElement[bool]] = []
    if flt.text:
        # icontains escapes % and _ and renders lower() LIKE lower() on SQLite, ILIKE on PostgreSQL.
        where.append(SessionRow.question.icontains(flt.text, autoescape=True)
                     | cast(SessionRow.answer, SafeText).icontains(flt.text, autoescape=True))
    if flt.since is not None:
        where.append(SessionRow.created_at >= _epoch(flt.since))
    if flt.until is not None:
        where.append(SessionRow.created_at < _epoch(flt.until, end_of_day=True))
    if flt.model is not None:
        where.append(SessionRow.model == flt.model)
    if flt.status is not None:
        where.append(SessionRow.status == flt.status)
    if flt.rating is not None:
        if flt.rating not in RATINGS:
            raise ValueError(f"rating must be one of {RATINGS}, not {flt.rating!r}")
        where.append(_latest_rating() == flt.rating)
    if flt.tool is not None:
        # steps.action_name is indexed together with session_id: an index-only lookup.
        where.append(SessionRow.id.in_(select(StepRow.session_id).where(StepRow.action_name == flt.tool)))
    if flt.eval_run is not None:
        where.append(SessionRow.id.in_(select(EvalItemRow.session_id).where(EvalItemRow.run_name == flt.eval_run)))
    return where


# --- reading ------------------------------------------------------------------------------------


def list_sessions(store: Store, flt: SessionFilter | None = None) -> Page:
    """One page of sessions matching the filter, newest first, and how many match in all."""
    flt = flt or SessionFilter()
    page = max(1, int(flt.page))
    if page > MAX_PAGE:
        raise ValueError(f"page {page} is past the last possible page ({MAX_PAGE:,})")
    size = min(max(1, int(flt.page_size)), MAX_PAGE_SIZE)
    where = _conditions(flt)
    # Pick the page's ids first, then compute step counts and ratings for those rows only: with the
    # per-row subqueries in the same SELECT, the engine may evaluate them for every skipped row too.
    order = (SessionRow.created_at.desc(), SessionRow.id)
    ids = select(SessionRow.id).where(*where).order_by(*order).limit(size).offset((page - 1) * size).subquery()
    query = (
        select(*_summary_columns())
        .join(ids, ids.c.id == SessionRow.id)
        .order_by(*order)
    )
    with store.reading() as db:
        total = db.scalar(select(func.count()).select_from(SessionRow).where(*where)) or 0
        items = [SessionSummary(*row) for row in db.execute(query)]
    return Page(items, total, page, size)


def _columns(row: Any) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}


def get_trace(store: Store, session_id: str) -> Trace | None:
    """A session with its steps, images (absolute paths) and feedback, or None if there is none."""
    with store.reading() as db:
        row = db.get(SessionRow, session_id)
        if row is None:
            return None
        steps = db.scalars(select(StepRow).where(StepRow.session_id == session_id).order_by(StepRow.index)).all()
        images = db.scalars(select(ImageRow).where(ImageRow.session_id == session_id).order_by(ImageRow.ordinal)).all()
        feedback = db.scalars(select(FeedbackRow).where(FeedbackRow.session_id == session_id)
                              .order_by(FeedbackRow.created_at, FeedbackRow.id)).all()
        trace = Trace(
            session=_columns(row),
            steps=[_columns(step) for step in steps],
            images=[TraceImage(i.image_id, store.image_path(i), i.width, i.height, i.role, i.step, i.parent, i.bbox)
                    for i in images],
            feedback=[Feedback(f.step, f.rating, f.corrected_answer, f.corrected_step, f.note, f.created_at, f.blame,
                               f.reviewer, f.corrected_output)
                      for f in feedback],
        )
    latest = LatestFeedback.fold(trace.feedback)
    trace.rating, trace.corrected_answer = latest.rating, latest.corrected_answer
    trace.step_ratings, trace.corrected_steps = latest.step_ratings, latest.corrected_steps
    trace.step_blame, trace.corrected_outputs = latest.step_blame, latest.corrected_outputs
    return trace


def dashboard(store: Store) -> dict[str, Any]:
    """Totals for the overview page. Thumbs count sessions by their latest session-level rating."""
    with store.reading() as db:
        by_status = dict(db.execute(select(SessionRow.status, func.count()).group_by(SessionRow.status)).all())
        by_model = dict(db.execute(select(SessionRow.model, func.count()).group_by(SessionRow.model)).all())
        steps = db.scalar(select(func.count(StepRow.id))) or 0
        rating = _latest_rating().label("rating")
        ratings = select(rating).select_from(SessionRow).where(
            exists().where(FeedbackRow.session_id == SessionRow.id, FeedbackRow.rating.is_not(None))).subquery()
        thumbs = dict(db.execute(select(ratings.c.rating, func.count()).group_by(ratings.c.rating)).all())
        name = StepRow.action_name.label("name")
        actions = db.execute(select(name, func.count()).where(name.is_not(None)).group_by(name)
                             .order_by(func.count().desc(), name).limit(10)).all()
    return {
        "total_sessions": sum(by_status.values()),
        "total_steps": steps,
        "by_status": by_status,
        "by_model": by_model,
        "thumbs_up": thumbs.get("up", 0),
        "thumbs_down": thumbs.get("down", 0),
        "top_actions": [(n, c) for n, c in actions],
    }


# --- feedback (each call: one short transaction, one new row) ---------------------------------


MAX_STEP = 2**31 - 1  # the databases' integer: a larger step number is looked up nowhere


def _check(db: DbSession, session_id: str, step: int | None) -> None:
    if db.get(SessionRow, session_id) is None:
        raise ValueError(f"no session {session_id!r}")
    if step is not None and (not 1 <= step <= MAX_STEP or db.scalar(select(StepRow.id).where(
            and_(StepRow.session_id == session_id, StepRow.index == step))) is None):
        first, last = db.execute(select(func.min(StepRow.index), func.max(StepRow.index))
                                 .where(StepRow.session_id == session_id)).one()
        steps = "it has no steps" if last is None else f"its only step is {last}" if first == last else f"its steps are {first} to {last}"
        raise ValueError(f"no session {session_id!r} step {step}: {steps}")


def _add(store: Store, session_id: str, step: int | None, reviewer: str | None, **values: Any) -> None:
    if reviewer is not None:
        from taco_app.store.review_queue import check_reviewer  # it reads this module's filters

        reviewer = check_reviewer(reviewer)
    with store.writing() as db:
        _check(db, session_id, step)
        db.add(FeedbackRow(session_id=session_id, step=step, created_at=time.time(), reviewer=reviewer, **values))


def rate(store: Store, session_id: str, rating: str, step: int | None = None, blame: str | None = None,
         note: str | None = None, *, reviewer: str | None = None) -> None:
    """Thumbs up or down on a session (step None) or on one of its steps, with an optional note.

    Every kind of feedback may name its ``reviewer`` (checked by
    :func:`taco_app.store.review_queue.check_reviewer`, stored stripped); None: not said.

    A step rated down may say whom it blames: "model" (it misused a correct observation) or "tool" (the
    observation was wrong). Without a blame it stays None, and exports count the bad step as the model's.
    """
    if rating not in RATINGS:
        raise ValueError(f"rating must be one of {RATINGS}, not {rating!r}")
    if blame is not None:
        if blame not in BLAMES:
            raise ValueError(f"blame must be one of {BLAMES}, not {blame!r}")
        if step is None:
            raise ValueError("only a step can be blamed, not a whole session: say which step was bad")
        if rating != "down":
            raise ValueError(f"only a step rated down can be blamed, not one rated {rating!r}")
    _add(store, session_id, step, reviewer, rating=rating, blame=blame, note=note or None)


def correct_answer(store: Store, session_id: str, answer: str, *, reviewer: str | None = None) -> None:
    """Record what the session's answer should have been."""
    _add(store, session_id, None, reviewer, corrected_answer=str(answer))


def validate_step(text_or_obj: str | dict[str, Any]) -> dict[str, Any]:
    """A corrected step as ``{"thought", "actions": [action] or []}``, or ValueError saying why not."""
    text = text_or_obj if isinstance(text_or_obj, str) else json.dumps(text_or_obj, ensure_ascii=False)
    parsed = parse(text)
    if isinstance(parsed, ParseFailure):
        raise ValueError(f"{parsed.message} Hint: {STEP_HINT}")
    if parsed.action is not None and parsed.action.name not in action_names():
        raise ValueError(f"unknown action {parsed.action.name!r}; the actions are {', '.join(action_names())}")
    return {"thought": parsed.thought, "actions": [parsed.action.as_dict()] if parsed.action else []}


def correct_step(store: Store, session_id: str, step: int, text_or_obj: str | dict[str, Any], *,
                 reviewer: str | None = None) -> dict[str, Any]:
    """Record what a step should have been; it must be valid CoTA JSON with a known action."""
    corrected = validate_step(text_or_obj)
    _add(store, session_id, step, reviewer, corrected_step=corrected)
    return corrected


REGION_KEYS = ("label", "bbox", "score")
IMAGE_KEYS = ("image_id", "sha256", "path", "width", "height")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


def check_regions(regions: Any) -> list[dict[str, Any]]:
    """Regions as a tool writes them, ``[{"label", "bbox" [l, t, r, b] in 0..1, "score"?}]``; ValueError in words."""
    if not isinstance(regions, list):
        raise ValueError("regions must be a list of {label, bbox} (an empty list: the tool should have found nothing)")
    checked = []
    for number, region in enumerate(regions, 1):
        if not isinstance(region, dict) or set(region) - set(REGION_KEYS):
            raise ValueError(f"region {number} must be {{label, bbox}} (and a score), not {region!r}")
        label, box = region.get("label"), region.get("bbox")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"region {number} has no label")
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(_number(v) and 0 <= v <= 1 for v in box)
                and box[0] < box[2] and box[1] < box[3]):
            raise ValueError(f"region {number}'s bbox must be [left, top, right, bottom] in 0..1, left < right and"
                             f" top < bottom, not {box!r}")
        item: dict[str, Any] = {"label": label, "bbox": [float(v) for v in box]}
        if region.get("score") is not None:
            if not _number(region["score"]):
                raise ValueError(f"region {number}'s score must be a number, not {region['score']!r}")
            item["score"] = region["score"]
        checked.append(item)
    return checked


def correct_output(store: Store, session_id: str, step: int, output: dict[str, Any], *,
                   reviewer: str | None = None) -> dict[str, Any]:
    """Record what a step's tool output should have been: the step is rated down, the tool's fault, with
    ``output`` = ``{"regions": [...], "image": {...}}`` (the regions a person fixed; the image, when the tool
    made one, that picture redrawn with them: ``image_id`` (the tool's image it replaces), ``sha256``,
    ``path`` (a file in the images folder), ``width``, ``height``). Only a step whose tool output lists
    regions can be corrected so. Returns what was stored; ValueError in words when it cannot be."""
    if not isinstance(output, dict) or "regions" not in output or set(output) - {"regions", "image"}:
        raise ValueError('a corrected output is {"regions": [...]} with, when the tool made a picture, "image": {...}')
    fixed: dict[str, Any] = {"regions": check_regions(output["regions"])}
    image = output.get("image")
    if image is not None:
        if not isinstance(image, dict) or set(image) != set(IMAGE_KEYS):
            raise ValueError(f"a corrected output's image must give {', '.join(IMAGE_KEYS)}")
        if not all(isinstance(image[k], int) and not isinstance(image[k], bool) and image[k] > 0 for k in ("width", "height")):
            raise ValueError("a corrected output's image must have a width and a height")
        relative = store.relative(image["path"])
        if Path(relative).is_absolute() or ".." in Path(relative).parts or not (store.images_root / relative).is_file():
            raise ValueError(f"a corrected output's image must be a file in the images folder, not {image['path']!r}")
        fixed["image"] = {"image_id": str(image["image_id"]), "sha256": str(image["sha256"]), "path": relative,
                          "width": image["width"], "height": image["height"]}
    if reviewer is not None:
        from taco_app.store.review_queue import check_reviewer

        reviewer = check_reviewer(reviewer)
    with store.writing() as db:
        _check(db, session_id, step)
        row = db.scalars(select(StepRow).where(StepRow.session_id == session_id, StepRow.index == step)).one()
        if not isinstance(row.output, dict) or not isinstance(row.output.get("regions"), list):
            raise ValueError(f"step {step} of session {session_id!r} has no regions a tool found to correct")
        if image is not None and fixed["image"]["image_id"] not in (row.image_ids or []):
            raise ValueError(f"step {step} made no image {fixed['image']['image_id']!r} to replace")
        db.add(FeedbackRow(session_id=session_id, step=step, created_at=time.time(), reviewer=reviewer, rating="down",
                           blame="tool", corrected_output=fixed))
    return fixed


def add_note(store: Store, session_id: str, note: str, step: int | None = None, *, reviewer: str | None = None) -> None:
    """A free-text note on a session or one of its steps."""
    _add(store, session_id, step, reviewer, note=note)


# --- preferences and forks ----------------------------------------------------------------------


def task(session: SessionRow) -> tuple[str, tuple[str, ...]]:
    """What a session was asked: its question and its input images' content (sha256), in order.
    Two sessions with the same task can be compared (a fork's is its parent's)."""
    inputs = sorted((image for image in session.images if image.role == "input"), key=lambda image: image.ordinal)
    return session.question, tuple(image.sha256 for image in inputs)


def _task_difference(db: DbSession, a_id: str, b_id: str) -> str | None:
    """Why two sessions' answers cannot be compared (None: they can); ValueError when one is not stored."""
    tasks = {}
    for session_id in (a_id, b_id):
        row = db.get(SessionRow, session_id)
        if row is None:
            raise ValueError(f"no session {session_id!r}")
        tasks[session_id] = task(row)
    if tasks[a_id][0] != tasks[b_id][0]:
        return (f"sessions {a_id!r} and {b_id!r} answer different questions: "
                "a preference compares two answers to the same question on the same images")
    if tasks[a_id][1] != tasks[b_id][1]:
        return (f"sessions {a_id!r} and {b_id!r} were given different images: "
                "a preference compares two answers to the same question on the same images")
    return None


def same_task(store: Store, a_id: str, b_id: str) -> bool:
    """Whether two sessions ask the same question about the same input images (by content, in order), so
    that their answers can be compared; ValueError when one of them is not stored."""
    with store.reading() as db:
        return _task_difference(db, a_id, b_id) is None


def prefer(store: Store, winner_id: str, loser_id: str, reason: str | None = None, tie: bool = False) -> None:
    """Record that ``winner_id`` answered better than ``loser_id`` (``tie``: as well). The two must be
    different sessions on the same question and the same input images."""
    if winner_id == loser_id:
        raise ValueError(f"session {winner_id!r} was given twice: a preference is between two different sessions")
    with store.writing() as db:
        difference = _task_difference(db, winner_id, loser_id)
        if difference is not None:
            raise ValueError(difference)
        db.add(PreferenceRow(chosen_id=winner_id, rejected_id=loser_id, tie=bool(tie), reason=reason or None,
                             created_at=time.time()))


def preferences(store: Store, session_id: str) -> list[Preference]:
    """Every preference the session is part of (chosen or rejected), oldest first."""
    with store.reading() as db:
        if db.get(SessionRow, session_id) is None:
            raise ValueError(f"no session {session_id!r}")
        rows = db.scalars(select(PreferenceRow)
                          .where(or_(PreferenceRow.chosen_id == session_id, PreferenceRow.rejected_id == session_id))
                          .order_by(PreferenceRow.created_at, PreferenceRow.id)).all()
        return [Preference(r.chosen_id, r.rejected_id, bool(r.tie), r.reason, r.created_at) for r in rows]


def lineage(store: Store, session_id: str) -> Lineage:
    """The session's parent (if it is a fork) and its forks; ValueError when it is not stored."""
    with store.reading() as db:
        row = db.get(SessionRow, session_id)
        if row is None:
            raise ValueError(f"no session {session_id!r}")
        parent_id, fork_step = row.parent_session_id, row.fork_step
        parent = None
        if parent_id is not None:
            found = db.execute(select(*_summary_columns()).where(SessionRow.id == parent_id)).first()
            parent = SessionSummary(*found) if found is not None else None
        forks = db.execute(select(*_summary_columns(), SessionRow.fork_step).where(SessionRow.parent_session_id == session_id)
                           .order_by(SessionRow.fork_step, SessionRow.created_at, SessionRow.id)).all()
        children = [(SessionSummary(*found[:-1]), found[-1]) for found in forks]
    return Lineage(parent, fork_step, children, parent_id)
