"""Eval runs in the store: a run's settings, which of its items are done, and what the report reads.

An eval run is a name, its settings (the data's fingerprint, the mode, the backend and model, the
scorer) and one row per finished item, tying the item's id to the session that answered it. The
sessions themselves are ordinary sessions: Review, fork, feedback and export work on them as on any
other. An item is finished once its session ended with an answer or without one (``finished``,
``max_steps``); a session the backend broke is not, so running the same name again retries it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, func, select

from taco_app.store.schema import EvalItemRow, EvalRunRow, SessionRow, StepRow

if TYPE_CHECKING:
    from taco_app.store.db import Store


@dataclass(frozen=True)
class StepStat:
    index: int
    action: str | None  # the action that ran (None: no action, or the reply did not parse)
    parse_error: bool
    error_code: str | None  # "unknown_action" | "bad_arguments" | "timeout" | "tool" | None
    generation_s: float | None
    tool_s: float | None


@dataclass(frozen=True)
class ItemRecord:
    item_id: str
    category: str | None
    session_id: str
    question: str
    status: str  # the session's: finished | max_steps | …
    answers: list[Any]
    prediction: Any
    correct: bool
    how: str
    steps: tuple[StepStat, ...]
    total_s: float | None  # the session's wall time
    prompt_tokens: int  # summed over its steps (0 when the backend reported none)
    output_tokens: int


@dataclass(frozen=True)
class RunData:
    name: str
    created_at: float
    settings: dict[str, Any]  # {"data", "fingerprint", "mode", "backend", "model", "family", "scorer", "max_replies"}
    items: tuple[ItemRecord, ...]  # the finished items, in the order they finished


@dataclass(frozen=True)
class RunInfo:
    name: str
    created_at: float
    settings: dict[str, Any]
    n: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None


def get_settings(store: "Store", name: str) -> dict[str, Any] | None:
    """The settings a run was created with, or None when there is no run of that name."""
    with store.reading() as db:
        row = db.get(EvalRunRow, name)
        return dict(row.settings) if row is not None else None


def create_run(store: "Store", name: str, settings: dict[str, Any]) -> None:
    """A new run (the caller has checked that the name is free)."""
    with store.writing() as db:
        db.add(EvalRunRow(name=name, created_at=time.time(), settings=settings))


def update_settings(store: "Store", name: str, settings: dict[str, Any]) -> None:
    """A resumed run that goes on with other settings keeps the new ones (the report says which)."""
    with store.writing() as db:
        row = db.get(EvalRunRow, name)
        if row is not None:
            row.settings = settings


def finished(store: "Store", name: str) -> dict[str, bool]:
    """The run's finished items: id -> whether it was answered correctly."""
    with store.reading() as db:
        return {item_id: bool(correct) for item_id, correct in
                db.execute(select(EvalItemRow.item_id, EvalItemRow.correct).where(EvalItemRow.run_name == name))}


def record_item(store: "Store", name: str, *, item_id: str, session_id: str, category: str | None,
                answers: list[Any], prediction: Any, correct: bool, how: str) -> None:
    """A finished item; a second record of the same item (two processes on one run) keeps the first."""
    with store.writing() as db:
        exists = db.scalar(select(EvalItemRow.id).where(EvalItemRow.run_name == name, EvalItemRow.item_id == item_id))
        if exists is None:
            db.add(EvalItemRow(run_name=name, item_id=item_id, session_id=session_id, category=category,
                               answers=answers, prediction=prediction, correct=correct, how=how,
                               finished_at=time.time()))


def list_runs(store: "Store") -> list[RunInfo]:
    """Every run with its counts, newest first."""
    with store.reading() as db:
        counts = {name: (n, int(k or 0)) for name, n, k in db.execute(
            select(EvalItemRow.run_name, func.count(), func.sum(EvalItemRow.correct.cast(Integer)))
            .group_by(EvalItemRow.run_name))}
        rows = db.scalars(select(EvalRunRow).order_by(EvalRunRow.created_at.desc())).all()
        return [RunInfo(row.name, row.created_at, dict(row.settings), *counts.get(row.name, (0, 0))) for row in rows]


def run_data(store: "Store", name: str) -> RunData:
    """Everything the report reads about one run; KeyError when there is no run of that name."""
    with store.reading() as db:
        run = db.get(EvalRunRow, name)
        if run is None:
            raise KeyError(name)
        items = db.execute(
            select(EvalItemRow, SessionRow.question, SessionRow.status, SessionRow.total_s)
            .join(SessionRow, SessionRow.id == EvalItemRow.session_id)
            .where(EvalItemRow.run_name == name).order_by(EvalItemRow.id)).all()
        session_ids = [item.session_id for item, *_ in items]
        steps: dict[str, list[StepRow]] = {sid: [] for sid in session_ids}
        for chunk in range(0, len(session_ids), 500):
            for step in db.scalars(select(StepRow).where(StepRow.session_id.in_(session_ids[chunk:chunk + 500]))
                                   .order_by(StepRow.session_id, StepRow.index)):
                steps[step.session_id].append(step)
        records = tuple(_record(item, question, status, total_s, steps[item.session_id])
                        for item, question, status, total_s in items)
        return RunData(run.name, run.created_at, dict(run.settings), records)


def _record(item: EvalItemRow, question: str, status: str, total_s: float | None, steps: list[StepRow]) -> ItemRecord:
    stats = tuple(StepStat(index=s.index, action=s.action_name if s.parse_error_code is None else None,
                           parse_error=s.parse_error_code is not None, error_code=s.error_code,
                           generation_s=s.generation_s, tool_s=s.tool_s) for s in steps)
    return ItemRecord(
        item_id=item.item_id, category=item.category, session_id=item.session_id, question=question, status=status,
        answers=list(item.answers or []), prediction=item.prediction, correct=bool(item.correct), how=item.how or "",
        steps=stats, total_s=total_s, prompt_tokens=sum(s.prompt_tokens or 0 for s in steps),
        output_tokens=sum(s.output_tokens or 0 for s in steps),
    )

