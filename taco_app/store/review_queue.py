"""The review queue: "Next to review" gives each reviewer the oldest session nobody has rated yet, and
keeps it away from the other reviewers for a while, so that two people never review the same session.

A reviewer's hold on a session is a :class:`~taco_app.store.schema.ReviewClaimRow` that expires after
``claim_s`` seconds; a reviewer holds one claim at a time (the next replaces it). A claim is taken by one
statement that the database makes atomic (an upsert whose update happens only when the claim there has
expired or is the reviewer's own), so two reviewers in different threads, processes or machines never
get the same session while a claim holds, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass
from typing import Collection

from sqlalchemy import ColumnElement, Float, String, case, delete, exists, func, literal, not_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession

from taco_app.store.db import Store
from taco_app.store.queries import SessionFilter, SessionSummary, _conditions, _summary_columns
from taco_app.store.schema import REVIEWER_CHARS, FeedbackRow, ReviewClaimRow, SessionRow

CLAIM_S = 300.0  # how long "Next to review" keeps a session away from other reviewers
_BATCH = 8  # candidates read at once; more are read only when others took all of them first
_UPSERT = ("sqlite", "postgresql")  # engines with INSERT … ON CONFLICT DO UPDATE … WHERE
_COUNTED = {"preserve_rowcount": True}  # SQLAlchemy keeps an INSERT's row count only when asked


@dataclass(frozen=True)
class Progress:
    reviewed: int  # sessions matching the filter that have a session-level rating
    total: int  # sessions matching the filter


def _now() -> float:
    return time.time()


def check_reviewer(name: str | None) -> str:
    """A reviewer's name as it is kept: stripped, 1 to 64 characters, none of them a control character;
    ValueError saying what is wrong otherwise."""
    if name is None or not isinstance(name, str) or not name.strip():
        raise ValueError("a reviewer name is needed: type your name, so feedback says who gave it")
    name = name.strip()
    if len(name) > REVIEWER_CHARS:
        raise ValueError(f"the reviewer name is {len(name):,} characters long; the limit is {REVIEWER_CHARS}")
    for char in name:
        # Control characters (NUL, line breaks, tabs, escapes), lone surrogate halves, line and paragraph
        # separators and noncharacters cannot be shown or stored as a name.
        if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in "\ufffe\uffff":
            raise ValueError(f"the reviewer name holds a character that cannot be part of a name (U+{ord(char):04X});"
                             " use letters, digits, spaces and punctuation")
    return name


def _rated() -> ColumnElement[bool]:
    """Whether the outer session row has a session-level rating (any, up or down)."""
    return exists().where(FeedbackRow.session_id == SessionRow.id, FeedbackRow.step.is_(None),
                          FeedbackRow.rating.is_not(None))


def _held_by_another(reviewer: str, now: float) -> ColumnElement[bool]:
    return exists().where(ReviewClaimRow.session_id == SessionRow.id, ReviewClaimRow.reviewer != reviewer,
                          ReviewClaimRow.expires_at > now)


def _open(flt: SessionFilter | None) -> list[ColumnElement[bool]]:
    """What a session must be to be given: matching the filter, and rated by nobody."""
    return [*_conditions(flt or SessionFilter()), not_(_rated())]


def _claim(db: DbSession, session_id: str, reviewer: str, now: float, expires: float,
           where: list[ColumnElement[bool]]) -> bool:
    """Claim one session for ``reviewer`` if it still matches ``where`` and no one else holds it."""
    table = ReviewClaimRow.__table__
    columns = [table.c.session_id, table.c.reviewer, table.c.claimed_at, table.c.expires_at]
    # The session, if it still is one to give (so a session rated or deleted meanwhile is not claimed).
    source = (select(literal(session_id, String), literal(reviewer, String), literal(now, Float), literal(expires, Float))
              .select_from(SessionRow).where(SessionRow.id == session_id, *where))
    takeable = or_(table.c.expires_at <= now, table.c.reviewer == reviewer)
    dialect = db.get_bind().dialect.name
    if dialect in _UPSERT:
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        upsert = insert(table).from_select(columns, source)
        upsert = upsert.on_conflict_do_update(
            index_elements=[table.c.session_id], where=takeable,
            set_={"reviewer": upsert.excluded.reviewer, "claimed_at": upsert.excluded.claimed_at,
                  "expires_at": upsert.excluded.expires_at})
        return db.execute(upsert, execution_options=_COUNTED).rowcount == 1
    # Other engines: insert, and if a claim is there already, take it over only where it may be taken.
    try:
        with db.begin_nested():  # a failed insert must not end the transaction (PostgreSQL would)
            if db.execute(table.insert().from_select(columns, source), execution_options=_COUNTED).rowcount == 1:
                return True
    except IntegrityError:
        pass
    still_open = exists(select(SessionRow.id).where(SessionRow.id == session_id, *where))
    taken = db.execute(update(table).where(table.c.session_id == session_id, takeable, still_open)
                       .values(reviewer=reviewer, claimed_at=now, expires_at=expires))
    return taken.rowcount == 1


class _Lost(Exception):
    """Someone else took the session first, or rated it: the claim being taken is rolled back."""


def _take(store: Store, session_id: str, reviewer: str, claim_s: float, where: list[ColumnElement[bool]]) -> bool:
    """Claim the session for ``reviewer`` in place of their other claims, in one transaction; False if it was lost."""
    now = _now()
    try:
        with store.writing() as db:
            if not _claim(db, session_id, reviewer, now, now + claim_s, where):
                raise _Lost
            # Read again now that the claim is in place: on PostgreSQL the claim's own statement judged the
            # session by what was committed when it began, and a rating given since would be missed.
            if not db.scalar(select(exists().where(SessionRow.id == session_id, *where))):
                raise _Lost
            db.execute(delete(ReviewClaimRow).where(ReviewClaimRow.reviewer == reviewer,
                                                    ReviewClaimRow.session_id != session_id))
    except _Lost:
        return False
    return True


def next_to_review(store: Store, flt: SessionFilter | None, reviewer: str, *, skip: Collection[str] = (),
                   claim_s: float = CLAIM_S) -> SessionSummary | None:
    """The oldest session (by ``created_at``, then id) that matches ``flt`` (its page and page size are
    ignored), has no session-level rating, is not in ``skip`` and is not held by another reviewer's
    unexpired claim, claimed for ``reviewer`` for ``claim_s`` seconds in place of their other claims.

    None when no session is left to give (the reviewer then holds no claim). The session the reviewer
    holds already is given again unless it is in ``skip``.
    """
    reviewer = check_reviewer(reviewer)
    if not claim_s >= 0:
        raise ValueError(f"a claim lasts 0 seconds or more, not {claim_s!r}")
    where = _open(flt)
    passed = set(skip)  # skipped, or taken by someone else while this call ran
    while True:
        now = _now()
        free = [*where, not_(_held_by_another(reviewer, now))]
        if passed:
            free.append(SessionRow.id.not_in(passed))
        ids = select(SessionRow.id).where(*free).order_by(SessionRow.created_at, SessionRow.id).limit(_BATCH)
        with store.reading() as db:
            candidates = list(db.scalars(ids))
        if not candidates:
            release(store, reviewer)
            return None
        for session_id in candidates:
            if _take(store, session_id, reviewer, claim_s, where):
                with store.reading() as db:
                    row = db.execute(select(*_summary_columns()).where(SessionRow.id == session_id)).first()
                if row is not None:  # (deleted in the meantime: look further)
                    return SessionSummary(*row)
            passed.add(session_id)


def release(store: Store, reviewer: str) -> None:
    """Drop the reviewer's claims, so other reviewers may be given those sessions at once."""
    reviewer = check_reviewer(reviewer)
    with store.writing() as db:
        db.execute(delete(ReviewClaimRow).where(ReviewClaimRow.reviewer == reviewer))


def progress(store: Store, flt: SessionFilter | None) -> Progress:
    """How many sessions matching ``flt`` (page and page size ignored) have a session-level rating, of how many."""
    where = _conditions(flt or SessionFilter())
    query = select(func.count(), func.count(case((_rated(), 1)))).select_from(SessionRow).where(*where)
    with store.reading() as db:
        total, reviewed = db.execute(query).one()
    return Progress(int(reviewed or 0), int(total or 0))

