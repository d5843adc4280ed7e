"""The store: the only code that touches the database.

Every event of a session is written as it happens, one short transaction per finished step, so a
crash loses at most the step in flight. SQLite (WAL, busy timeout) by default; any SQLAlchemy URL
works. The schema carries a version and is upgraded by numbered migrations when a store opens.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import Engine, create_engine, event, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import selectinload, sessionmaker

from taco_app.cota import events as ev
from taco_app.store import StoreError
from taco_app.store.schema import SCHEMA_VERSION, Base, FeedbackRow, ImageRow, SchemaInfo, SessionRow, StepRow

log = logging.getLogger(__name__)
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


def _sqlite_pragmas(timeout_s: float) -> Callable[[Any, Any], None]:
    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")  # wait for a lock, then fail
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable at checkpoints, fast commits
        cursor.close()
    return pragmas


def _plain_reason(err: BaseException) -> str:
    """What went wrong with the database, in words, without its SQL or parameters."""
    cause = getattr(err, "orig", None) or err  # SQLAlchemy wraps the driver's error; its text holds the SQL
    text_ = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    lowered = text_.lower()
    if "locked" in lowered or ("lock" in lowered and "timeout" in lowered):
        return "the database is locked by another program and stayed locked past TACO_DB_TIMEOUT"
    if ("disk" in lowered and "full" in lowered) or "no space" in lowered or "file too large" in lowered:
        return "the disk is full"
    if "statement timeout" in lowered or "canceling statement" in lowered:
        return "the database did not answer within TACO_DB_TIMEOUT"
    if isinstance(cause, OSError):
        return f"the data folder could not be written ({os.strerror(cause.errno) if cause.errno else type(cause).__name__})"
    if any(word in lowered for word in ("connection", "connect", "server closed", "terminating", "timeout", "timed out")):
        return "the database server cannot be reached"
    return "the database refused the operation"


class _Transactions:
    """``store._sessions()`` and ``store._sessions.begin()``: ORM sessions that check the database first
    and turn its failures into :class:`StoreError` (the SQL goes to the log, not to people)."""

    def __init__(self, store: "Store"):
        self._store = store
        self._make = sessionmaker(store.engine, expire_on_commit=False)

    @contextmanager
    def __call__(self) -> Iterator[DbSession]:
        self._store.check()
        try:
            with self._make() as db:
                yield db
        except (SQLAlchemyError, OSError) as err:
            raise self._store.failure(err) from err

    @contextmanager
    def begin(self) -> Iterator[DbSession]:
        self._store.check()
        try:
            with self._make.begin() as db:
                yield db
        except (SQLAlchemyError, OSError) as err:
            raise self._store.failure(err) from err


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    def __init__(self, url: str, images_root: str | Path, *, timeout_s: float | None = None):
        """Open (and create or upgrade) the database; :class:`StoreError` says why it cannot be.

        ``timeout_s`` bounds every wait on the database: SQLite's wait for a lock, PostgreSQL's
        connection and each statement (default ``TACO_DB_TIMEOUT``, 30 s).
        """
        from taco_app.settings import db_timeout

        self.url = url
        self.images_root = Path(images_root)
        self.timeout_s = timeout_s or db_timeout()
        self.file: Path | None = None  # SQLite's database file
        self._identity: tuple[int, int] | None = None  # (device, inode) of that file when opened
        self._unfinished: dict[str, tuple[str, str]] = {}  # session id -> (status, message) not yet written
        if url.startswith("sqlite:///"):
            self.file = Path(url.removeprefix("sqlite:///")).expanduser()
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(url, connect_args={"timeout": self.timeout_s, "check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_pragmas(self.timeout_s))
        else:
            connect_args = {}
            if url.startswith("postgresql"):
                # A statement may wait up to the timeout for a lock, then take as long again to run.
                milliseconds = int(self.timeout_s * 1000)
                connect_args = {"connect_timeout": max(1, round(self.timeout_s)),
                                "options": f"-c lock_timeout={milliseconds} -c statement_timeout={2 * milliseconds}"}
            self.engine = create_engine(url, pool_pre_ping=True, pool_timeout=self.timeout_s, connect_args=connect_args)
        self._sessions = _Transactions(self)
        try:
            self.migrate()
            self._identity = self._file_identity()
            self.recover()
        except (SQLAlchemyError, OSError) as err:
            self.engine.dispose()
            raise self.failure(err, opening=True) from err

    @property
    def where(self) -> str:
        """The database, for messages: its file, or its URL without the password."""
        return str(self.file) if self.file else make_url(self.url).render_as_string(hide_password=True)

    def failure(self, err: BaseException, *, opening: bool = False) -> StoreError:
        """A :class:`StoreError` for a database failure; the details go to the log."""
        log.error("database failure (%s): %s", self.where, err, exc_info=err)
        if opening:
            return StoreError(f"Cannot open the database {self.where}: {_plain_reason(err)}."
                              " Check TACO_DB_URL (or --db) and that the server runs, then try again.")
        return StoreError(f"The database {self.where} failed: {_plain_reason(err)}. Nothing more was saved;"
                          " fix that and try again.")

    def _file_identity(self) -> tuple[int, int] | None:
        if self.file is None:
            return None
        info = os.stat(self.file)
        return info.st_dev, info.st_ino

    def check(self) -> None:
        """Refuse to go on if SQLite's file was deleted or replaced while the store was open: the open
        connections would keep writing to a file that no one can read any more."""
        if self._identity is None:
            return
        try:
            identity = self._file_identity()
        except OSError:
            identity = None
        if identity != self._identity:
            raise StoreError(f"The database file {self.file} was deleted or replaced while the app was running,"
                             " so nothing can be saved or read any more. Restore it from a backup if you have one,"
                             " then restart the app (a restart without it starts an empty database).")

    def close(self) -> None:
        self.engine.dispose()

    @classmethod
    def open(cls) -> "Store":
        from taco_app.settings import Settings

        settings = Settings.load()
        settings.ensure_home()
        return cls(settings.db_url, settings.images_dir, timeout_s=settings.db_timeout)

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
        """Pass events through, writing each finished step as it happens.

        If a step cannot be stored (the database is locked, full or gone, the disk is full), the
        session stops there: it is marked ``failed`` with the reason (now, or by the next store
        operation that can reach the database), and the consumer gets an :class:`events.Error` and
        a ``failed`` :class:`events.Finished` instead of the rest of the session.
        """
        self.finish_pending()
        recorder = _Recorder(self)
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
                    yield from self._fail(recorder, step, str(err))
                    return
                finished = isinstance(item, ev.Finished)
                yield item
        finally:
            if not finished:
                recorder.abandon()

    def _fail(self, recorder: "_Recorder", step: int, reason: str) -> Iterator[ev.Event]:
        if recorder.session_id is not None:
            self._unfinished[recorder.session_id] = ("failed", f"Not saved past this point: {reason}")
            self.finish_pending()
        yield ev.Error(step=step, code="store", message=reason)
        yield ev.Finished(step=step, session_id=recorder.session_id or "", status="failed", steps=step, message=reason)

    def finish_pending(self) -> None:
        """Write the end of sessions whose end could not be written when they ended (best effort)."""
        for session_id, (status, message) in list(self._unfinished.items()):
            try:
                with self._sessions.begin() as db:
                    db.execute(update(SessionRow).where(SessionRow.id == session_id, SessionRow.status == "running")
                               .values(status=status, message=message, finished_at=time.time()))
            except StoreError:
                return  # still failing: the next operation tries again
            del self._unfinished[session_id]

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
    from taco_app.weights import SLOTS
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
                                               action_name=item.action.name if item.action else None, **_tokens(item.usage))
        elif isinstance(item, ev.ActionEdited):
            step = self._begin_step(item.step)
            name = item.action.name  # a person's edit: not necessarily text
            step.update(action=item.action, action_name=name if isinstance(name, str) else None)
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
        try:
            self.flush()
            self._finish("interrupted", None, "The session stopped before it finished.", None)
        except StoreError:
            self.store._unfinished[self.session_id] = ("interrupted", "The session stopped before it finished.")


def _tokens(usage: dict[str, int] | None) -> dict[str, int | None]:
    """A step's token columns from a backend's usage report (None when it reported none)."""
    usage = usage or {}
    return {"prompt_tokens": usage.get("prompt_tokens"), "output_tokens": usage.get("output_tokens")}
