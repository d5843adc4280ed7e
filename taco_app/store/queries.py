"""Review queries and feedback: list and filter sessions, open one trace, a dashboard, ratings and corrections.

Everything here is plain SQL through SQLAlchemy Core/ORM expressions that render on SQLite and
PostgreSQL alike: filtering, counting and paging happen in the database (COUNT, LIMIT/OFFSET), never
in Python, so a page stays fast however many sessions the store holds.

Feedback is append-only: every call adds one :class:`FeedbackRow` (its own short transaction), so the
history is kept; when reading, the latest row of a kind wins (by ``created_at``, then ``id``).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, cast, exists, func, select
from sqlalchemy.orm import Session as DbSession

from taco_app.cota.parser import ParseFailure, parse
from taco_app.cota.registry import action_names
from taco_app.store.db import Store
from taco_app.store.schema import FeedbackRow, ImageRow, SafeText, SessionRow, StepRow

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
    """

    text: str | None = None
    since: float | dt.date | dt.datetime | None = None
    until: float | dt.date | dt.datetime | None = None
    model: str | None = None
    status: str | None = None
    rating: str | None = None
    tool: str | None = None
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


@dataclass
class LatestFeedback:
    """What a feedback history amounts to: for each kind of feedback, the latest entry wins."""

    rating: str | None = None  # the latest session-level rating
    corrected_answer: str | None = None
    step_ratings: dict[int, str] = field(default_factory=dict)
    corrected_steps: dict[int, Any] = field(default_factory=dict)
    corrected: bool = False  # any correction (answer or step) at all

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
            if item.corrected_answer is not None:
                latest.corrected_answer = item.corrected_answer
            if item.corrected_step is not None and item.step is not None:
                latest.corrected_steps[item.step] = item.corrected_step
            latest.corrected = latest.corrected or item.corrected_answer is not None or item.corrected_step is not None
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


def _epoch(value: float | dt.date | dt.datetime, end_of_day: bool = False) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()  # naive: local time, aware: its own zone
    if isinstance(value, dt.date):
        day = value + dt.timedelta(days=1) if end_of_day else value
        return dt.datetime.combine(day, dt.time()).timestamp()
    return float(value)


def _conditions(flt: SessionFilter) -> list[ColumnElement[bool]]:
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
    return where


# --- reading ------------------------------------------------------------------------------------


def list_sessions(store: Store, flt: SessionFilter | None = None) -> Page:
    """One page of sessions matching the filter, newest first, and how many match in all."""
    flt = flt or SessionFilter()
    page = max(1, int(flt.page))
    if page > MAX_PAGE:
        raise ValueError(f"page {page} is past the last possible page ({MAX_PAGE:,})")
    if flt.text is not None and len(flt.text) > MAX_SEARCH_CHARS:
        raise ValueError(f"the search text is {len(flt.text):,} characters long; the limit is {MAX_SEARCH_CHARS:,}")
    size = min(max(1, int(flt.page_size)), MAX_PAGE_SIZE)
    where = _conditions(flt)
    # Pick the page's ids first, then compute step counts and ratings for those rows only: with the
    # per-row subqueries in the same SELECT, the engine may evaluate them for every skipped row too.
    order = (SessionRow.created_at.desc(), SessionRow.id)
    ids = select(SessionRow.id).where(*where).order_by(*order).limit(size).offset((page - 1) * size).subquery()
    steps = select(func.count(StepRow.id)).where(StepRow.session_id == SessionRow.id).correlate(SessionRow).scalar_subquery()
    query = (
        select(SessionRow.id, SessionRow.created_at, func.substr(SessionRow.question, 1, 200, type_=SafeText), SessionRow.answer,
               SessionRow.status, SessionRow.model, steps, _latest_rating())
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
            feedback=[Feedback(f.step, f.rating, f.corrected_answer, f.corrected_step, f.note, f.created_at)
                      for f in feedback],
        )
    latest = LatestFeedback.fold(trace.feedback)
    trace.rating, trace.corrected_answer = latest.rating, latest.corrected_answer
    trace.step_ratings, trace.corrected_steps = latest.step_ratings, latest.corrected_steps
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


def _check(db: DbSession, session_id: str, step: int | None) -> None:
    if db.get(SessionRow, session_id) is None:
        raise ValueError(f"no session {session_id!r}")
    if step is not None and db.scalar(select(StepRow.id).where(
            and_(StepRow.session_id == session_id, StepRow.index == step))) is None:
        raise ValueError(f"no session {session_id!r} step {step}")


def _add(store: Store, session_id: str, step: int | None, **values: Any) -> None:
    with store.writing() as db:
        _check(db, session_id, step)
        db.add(FeedbackRow(session_id=session_id, step=step, created_at=time.time(), **values))


def rate(store: Store, session_id: str, rating: str, step: int | None = None) -> None:
    """Thumbs up or down on a session (step None) or on one of its steps."""
    if rating not in RATINGS:
        raise ValueError(f"rating must be one of {RATINGS}, not {rating!r}")
    _add(store, session_id, step, rating=rating)


def correct_answer(store: Store, session_id: str, answer: str) -> None:
    """Record what the session's answer should have been."""
    _add(store, session_id, None, corrected_answer=str(answer))


def validate_step(text_or_obj: str | dict[str, Any]) -> dict[str, Any]:
    """A corrected step as ``{"thought", "actions": [action] or []}``, or ValueError saying why not."""
    text = text_or_obj if isinstance(text_or_obj, str) else json.dumps(text_or_obj, ensure_ascii=False)
    parsed = parse(text)
    if isinstance(parsed, ParseFailure):
        raise ValueError(f"{parsed.message} Hint: {STEP_HINT}")
    if parsed.action is not None and parsed.action.name not in action_names():
        raise ValueError(f"unknown action {parsed.action.name!r}; the actions are {', '.join(action_names())}")
    return {"thought": parsed.thought, "actions": [parsed.action.as_dict()] if parsed.action else []}


def correct_step(store: Store, session_id: str, step: int, text_or_obj: str | dict[str, Any]) -> dict[str, Any]:
    """Record what a step should have been; it must be valid CoTA JSON with a known action."""
    corrected = validate_step(text_or_obj)
    _add(store, session_id, step, corrected_step=corrected)
    return corrected


def add_note(store: Store, session_id: str, note: str, step: int | None = None) -> None:
    """A free-text note on a session or one of its steps."""
    _add(store, session_id, step, note=note)
