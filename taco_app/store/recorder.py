"""The write path: a session's events become rows as they happen (:mod:`taco_app.store.codec` maps them).

A live session is written one short transaction per finished step (:func:`record`), so a crash
loses at most the step in flight; an imported one is written in one transaction, whole or not at
all (:func:`record_whole`). Both go through the same :class:`Recorder`, so an imported session is
stored exactly as a live one would be. What the events do not say (which process runs the session,
which models its tools use, whether its durations were measured) is its :class:`Provenance`.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from sqlalchemy import update
from sqlalchemy.orm import Session as DbSession

from taco_app.cota import events as ev
from taco_app.store import StoreError, codec
from taco_app.store.schema import FeedbackRow, ImageRow, SessionRow

if TYPE_CHECKING:
    from taco_app.store.db import Store

HOST = socket.gethostname()
STOPPED = "The session stopped before it finished."


def tool_versions() -> dict[str, str]:
    """The models the tools would use in this session (ids or local folders), for later review."""
    from taco_app.weights import OCR_MODEL_ID, SLOTS

    versions = {slot.key: slot.model_id for slot in SLOTS}
    versions["ocr"] = OCR_MODEL_ID
    return versions


@dataclass(frozen=True)
class Provenance:
    """Where a session comes from, for the columns its events do not fill."""

    tool_versions: dict[str, Any] = field(default_factory=dict)  # the models its tools use
    # (host, pid) of the process running it: a session left `running` by a dead process is `interrupted`.
    owner: tuple[str, int] | None = None
    # An import: created and finished at this one moment; its durations were never measured (NULL, not 0).
    at: float | None = None

    @classmethod
    def live(cls) -> "Provenance":
        """A session run by this process, now."""
        return cls(tool_versions(), (HOST, os.getpid()))

    @classmethod
    def imported(cls, at: float) -> "Provenance":
        """A conversation read from a file at ``at``: no process, no tools of ours, no timings."""
        return cls(at=at)


class Recorder:
    """Turns a session's events into rows: one transaction per finished step, or all of them in ``db``."""

    def __init__(self, store: "Store", provenance: Provenance, db: DbSession | None = None):
        self.store, self.provenance, self.db = store, provenance, db
        self.session_id: str | None = None
        self.step: dict[str, Any] | None = None
        self.images: list[ImageRow] = []
        self.feedback: list[FeedbackRow] = []

    @contextmanager
    def _write(self) -> Iterator[DbSession]:
        if self.db is None:
            with self.store.writing() as db:
                yield db
        else:
            yield self.db
            self.db.flush()  # in order: the session row before the rows that refer to it

    def _step(self, index: int) -> dict[str, Any]:
        if self.step is None or self.step["index"] != index:
            self.flush()
            self.step = {"index": index}
        return self.step

    def handle(self, item: ev.Event) -> None:
        if isinstance(item, ev.SessionStarted):
            self.session_id = item.session_id
            with self._write() as db:
                db.add(codec.session_row(item, tool_versions=self.provenance.tool_versions, owner=self.provenance.owner))
                db.add_all(self._image_row(info) for info in item.images)
        elif isinstance(item, ev.ImageProduced) and item.image is not None:
            self.images.append(self._image_row(item.image))
            # The step's images, until its observation lists them (a reply that failed to parse has none).
            self._step(item.step).setdefault("image_ids", []).append(item.image.image_id)
        elif isinstance(item, ev.ActionEdited):
            step = self._step(item.step)
            step.update(codec.step_columns(item))
            self.feedback.append(codec.edit_feedback(self.session_id, item, step.get("thought")))
        elif isinstance(item, ev.Finished):
            self.flush()
            self._finish(item)
        else:
            columns = codec.step_columns(item)
            if columns is None:
                return  # nothing stored: streamed chunks, a step starting, a tool starting, …
            if self.provenance.at is not None:
                columns = {k: v for k, v in columns.items() if k not in codec.TIMINGS}
            self._step(item.step).update(columns)
            if isinstance(item, (ev.ParseError, ev.Observation)):
                self.flush()  # the step is complete: commit it now

    def _image_row(self, info: ev.ImageInfo) -> ImageRow:
        return codec.image_row(self.session_id, info, self.store.relative(info.path))

    def flush(self) -> None:
        if self.session_id is None or (self.step is None and not self.images and not self.feedback):
            return
        with self._write() as db:
            if self.step is not None:
                db.add(codec.step_row(self.session_id, self.step))
            db.add_all(self.images)
            db.add_all(self.feedback)
        self.step, self.images, self.feedback = None, [], []

    def _finish(self, item: ev.Finished) -> None:
        columns = codec.end_columns(item)
        if self.provenance.at is not None:
            columns["total_s"] = None
        self._end(finished_at=self.provenance.at or time.time(), **columns)

    def _end(self, **columns: Any) -> None:
        with self._write() as db:
            db.execute(update(SessionRow).where(SessionRow.id == self.session_id).values(**columns))

    def abandon(self) -> None:
        """The consumer stopped listening before the end: keep what was done, say so."""
        if self.session_id is None:
            return
        try:
            self.flush()
            self._end(status="interrupted", answer=None, message=STOPPED, total_s=None, finished_at=time.time())
        except StoreError:
            self.store.finish_later(self.session_id, "interrupted", STOPPED)


def record(store: "Store", events: Iterable[ev.Event]) -> Iterator[ev.Event]:
    """Pass a live session's events through, writing each finished step as it happens.

    If a step cannot be stored (the database is locked, full or gone, the disk is full), the
    session stops there: it is marked ``failed`` with the reason (now, or by the next store
    operation that can reach the database), and the consumer gets an :class:`events.Error` and
    a ``failed`` :class:`events.Finished` instead of the rest of the session.
    """
    store.finish_pending()
    recorder = Recorder(store, Provenance.live())
    finished, step = False, 0
    source = iter(events)
    try:
        while not finished:
            try:
                item = next(source)
                step = item.step
                recorder.handle(item)
            except StopIteration:
                return
            except StoreError as err:  # from the recorder, or from the loop writing an image file
                getattr(source, "close", lambda: None)()  # stops the step loop (and its model) here
                finished = True
                yield from _fail(store, recorder, step, str(err))
                return
            finished = isinstance(item, ev.Finished)
            yield item
    finally:
        if not finished:
            recorder.abandon()


def _fail(store: "Store", recorder: Recorder, step: int, reason: str) -> Iterator[ev.Event]:
    if recorder.session_id is not None:
        store.finish_later(recorder.session_id, "failed", f"Not saved past this point: {reason}")
        store.finish_pending()
    yield ev.Error(step=step, code="store", message=reason)
    yield ev.Finished(step=step, session_id=recorder.session_id or "", status="failed", steps=step, message=reason)


def record_whole(store: "Store", events: Iterable[ev.Event], provenance: Provenance) -> None:
    """Write a whole session's events in one transaction: all its rows, or (on any error) none."""
    with store.writing() as db:
        recorder = Recorder(store, provenance, db=db)
        for item in events:
            recorder.handle(item)
        recorder.flush()
