"""The store: the only code that touches the database.

Every event of a session is written as it happens, one short transaction per finished step, so a
crash loses at most the step in flight. SQLite (WAL, busy timeout) by default; any SQLAlchemy URL
works. The schema carries a version and is upgraded by numbered migrations when a store opens.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import Engine, create_engine, event, select, text, update
from sqlalchemy.orm import selectinload, sessionmaker

from taco_app.cota import events as ev
from taco_app.store.schema import SCHEMA_VERSION, Base, FeedbackRow, ImageRow, SchemaInfo, SessionRow, StepRow

HOST = socket.gethostname()
# A step a person edited before it ran: the row keeps the model's raw text and the action that ran;
# the edit is also a step correction, so review and export see the step that produced the observation.
EDIT_NOTE = "edited at review, before it ran"
JSON_COLUMNS = ("action", "output", "overlays", "image_ids")


def _m001_create(engine: Engine) -> None:
    # A new database gets today's tables at once; the later migrations then find nothing to do.
    Base.metadata.create_all(engine)


def _m002_action_name(engine: Engine) -> None:
    """steps.action_name (+ index), filled from the action JSON of the steps already stored."""
    from sqlalchemy import inspect

    columns = {c["name"] for c in inspect(engine).get_columns("steps")}
    with engine.begin() as connection:
        if "action_name" not in columns:
            connection.execute(text("ALTER TABLE steps ADD COLUMN action_name VARCHAR(64)"))
        rows = connection.execute(select(StepRow.id, StepRow.action).where(StepRow.action.is_not(None),
                                                                          StepRow.action_name.is_(None))).all()
        for step_id, action in rows:
            name = action.get("name") if isinstance(action, dict) else None
            connection.execute(update(StepRow).where(StepRow.id == step_id).values(action_name=name))
        indexes = {i["name"] for i in inspect(connection).get_indexes("steps")}
        if "ix_steps_action_name_session" not in indexes:
            connection.execute(text("CREATE INDEX ix_steps_action_name_session ON steps (action_name, session_id)"))


# Migration k upgrades a database from version k to k+1 (simonw/llm style: numbered, append-only).
MIGRATIONS: list[Callable[[Engine], None]] = [_m001_create, _m002_action_name]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA busy_timeout=30000")  # wait for a lock instead of failing
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable at checkpoints, fast commits
    cursor.close()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    def __init__(self, url: str, images_root: str | Path):
        self.url = url
        self.images_root = Path(images_root)
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.migrate()
        self.recover()

    def close(self) -> None:
        self.engine.dispose()

    @classmethod
    def open(cls) -> "Store":
        from taco_app.config import Settings

        settings = Settings.load()
        settings.ensure_home()
        return cls(settings.db_url, settings.images_dir)

    # --- schema -------------------------------------------------------------------------------

    def version(self) -> int:
        from sqlalchemy import inspect

        if not inspect(self.engine).has_table(SchemaInfo.__tablename__):
            return 0
        with self._sessions() as db:
            row = db.get(SchemaInfo, 1)
            return row.version if row else 0

    def migrate(self) -> None:
        if len(MIGRATIONS) != SCHEMA_VERSION:
            raise RuntimeError(f"{len(MIGRATIONS)} migrations for schema version {SCHEMA_VERSION}")
        current = self.version()
        for number in range(current, SCHEMA_VERSION):
            MIGRATIONS[number](self.engine)
            with self._sessions.begin() as db:
                info = db.get(SchemaInfo, 1)
                if info is None:
                    db.add(SchemaInfo(id=1, version=number + 1))
                else:
                    info.version = number + 1

    def recover(self) -> int:
        """Mark sessions left `running` by a process that no longer exists as `interrupted`."""
        with self._sessions.begin() as db:
            running = db.scalars(select(SessionRow).where(SessionRow.status == "running")).all()
            # Another machine's sessions (a shared PostgreSQL) cannot be checked from here: left alone.
            dead = [row for row in running if row.owner_host in (HOST, None)
                    and (row.owner_pid is None or not _process_alive(row.owner_pid))]
            for row in dead:
                row.status, row.message = "interrupted", "The app stopped while this session was running."
            return len(dead)

    # --- the write path -----------------------------------------------------------------------

    def record(self, events: Iterator[ev.Event]) -> Iterator[ev.Event]:
        """Pass events through, writing each finished step as it happens."""
        recorder = _Recorder(self)
        finished = False
        try:
            for item in events:
                recorder.handle(item)
                finished = finished or isinstance(item, ev.Finished)
                yield item
        finally:
            if not finished:
                recorder.abandon()

    def _relative(self, path: str) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.images_root.resolve()))
        except ValueError:
            return path

    # --- reading ------------------------------------------------------------------------------

    def get_session(self, session_id: str) -> SessionRow | None:
        with self._sessions() as db:
            return db.scalars(
                select(SessionRow).where(SessionRow.id == session_id)
                .options(selectinload(SessionRow.steps), selectinload(SessionRow.images))
            ).first()

    def image_path(self, row: ImageRow) -> Path:
        """The file of an image row, refusing paths that leave the images folder."""
        path = (self.images_root / row.path).resolve()
        if not path.is_relative_to(self.images_root.resolve()):
            raise ValueError(f"image path outside {self.images_root}: {row.path!r}")
        return path


def tool_versions() -> dict[str, str]:
    """The models the tools would use in this session (ids or local folders), for later review."""
    from taco_app.tools.models import SLOTS
    from taco_app.tools.ocr import OCR

    versions = {slot.key: slot.model_id for slot in SLOTS}
    versions["ocr"] = OCR.model_id
    return versions


class _Recorder:
    """Turns a session's events into rows: one transaction per finished step."""

    def __init__(self, store: Store):
        self.store = store
        self.session_id: str | None = None
        self.step: dict[str, Any] | None = None
        self.images: list[ImageRow] = []
        self.feedback: list[FeedbackRow] = []

    def _begin_step(self, index: int) -> dict[str, Any]:
        if self.step is None or self.step["index"] != index:
            self.flush()
            self.step = {"index": index}
        return self.step

    def handle(self, item: ev.Event) -> None:
        if isinstance(item, ev.SessionStarted):
            self.session_id = item.session_id
            with self.store._sessions.begin() as db:
                db.add(SessionRow(
                    id=item.session_id, created_at=item.started_at or time.time(), question=item.question,
                    backend=item.backend, model=item.model, family=item.family, status="running",
                    revision=item.revision, quantisation=item.quantisation,
                    tool_versions=tool_versions(), owner_host=HOST, owner_pid=os.getpid(),
                ))
                db.add_all(self._image_row(info) for info in item.images)
        elif isinstance(item, ev.ThoughtDelta):
            return
        elif isinstance(item, ev.ActionParsed):
            self._begin_step(item.step).update(raw=item.raw, thought=item.thought, action=item.action, generation_s=item.generation_s,
                                               action_name=item.action["name"] if item.action else None, **_tokens(item.usage))
        elif isinstance(item, ev.ActionEdited):
            step = self._begin_step(item.step)
            name = item.action.get("name")
            step.update(action=item.action, action_name=name[:64] if isinstance(name, str) else None)
            self.feedback.append(FeedbackRow(
                session_id=self.session_id, step=item.step, created_at=time.time(), note=EDIT_NOTE,
                corrected_step=ev.json_safe({"thought": step.get("thought") or "", "actions": [item.action]})))
        elif isinstance(item, ev.ParseError):
            self._begin_step(item.step).update(raw=item.raw, parse_error_code=item.code, parse_error=item.message,
                                               observation=item.observation, generation_s=item.generation_s, **_tokens(item.usage))
            self.flush()
        elif isinstance(item, ev.ImageProduced) and item.image is not None:
            self.images.append(self._image_row(item.image))
        elif isinstance(item, ev.Observation):
            self._begin_step(item.step).update(observation=item.observation, output=item.output, error=item.error,
                                               image_ids=item.image_ids, overlays=item.overlays, tool_s=item.tool_s)
            self.flush()
        elif isinstance(item, ev.Finished):
            self.flush()
            self._finish(item.status, item.answer, item.message, item.total_s)

    def _image_row(self, info: ev.ImageInfo) -> ImageRow:
        return ImageRow(
            session_id=self.session_id, ordinal=int(info.image_id.rsplit("-", 1)[1]), image_id=info.image_id,
            sha256=info.sha256, path=self.store._relative(info.path), width=info.width, height=info.height,
            role=info.role, step=info.step, parent=info.parent, bbox=info.bbox,
        )

    def flush(self) -> None:
        if self.session_id is None or (self.step is None and not self.images and not self.feedback):
            return
        with self.store._sessions.begin() as db:
            if self.step is not None:
                # A model can write 1e309 (infinity) into its arguments: PostgreSQL's JSON refuses it.
                values = {k: ev.json_safe(v) if k in JSON_COLUMNS else v for k, v in self.step.items()}
                db.add(StepRow(session_id=self.session_id, **values))
            db.add_all(self.images)
            db.add_all(self.feedback)
        self.step, self.images, self.feedback = None, [], []

    def _finish(self, status: str, answer: Any, message: str, total_s: float | None) -> None:
        with self.store._sessions.begin() as db:
            db.execute(update(SessionRow).where(SessionRow.id == self.session_id).values(
                status=status, answer=answer, message=message or None, total_s=total_s, finished_at=time.time()))

    def abandon(self) -> None:
        """The consumer stopped listening before the end: keep what was done, say so."""
        if self.session_id is None:
            return
        self.flush()
        self._finish("interrupted", None, "The session stopped before it finished.", None)


def _tokens(usage: dict[str, int] | None) -> dict[str, int | None]:
    """A step's token columns from a backend's usage report (None when it reported none)."""
    usage = usage or {}
    return {"prompt_tokens": usage.get("prompt_tokens"), "output_tokens": usage.get("output_tokens")}
