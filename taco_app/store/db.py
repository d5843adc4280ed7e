"""The store: the only code that touches the database.

:class:`Store` opens the database and the images folder, and is what the rest of the store goes
through: :meth:`Store.reading` and :meth:`Store.writing` for transactions, :meth:`Store.relative`
and :meth:`Store.image_path` for image files, :attr:`Store.images` where sessions keep their
images. Every event of a session is written as it happens (:meth:`Store.record`, see
:mod:`taco_app.store.recorder`). SQLite (WAL, busy timeout) by default; any SQLAlchemy URL works.
The schema carries a version and is upgraded by numbered migrations
(:mod:`taco_app.store.migrations`) when a store opens.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import create_engine, event, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import selectinload, sessionmaker

from taco_app.cota import events as ev
from taco_app.store import StoreError
from taco_app.store.files import ImageFiles
from taco_app.store.migrations import MIGRATIONS
from taco_app.store.recorder import HOST, Provenance, record, record_whole
from taco_app.store.schema import SCHEMA_VERSION, ImageRow, SchemaInfo, SessionRow

log = logging.getLogger(__name__)


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
        from taco_app.settings import current

        self.url = url
        self.images_root = Path(images_root)
        self.images = ImageFiles(self.images_root)  # the ImageSink sessions keep their images in
        self.timeout_s = timeout_s or current().db_timeout
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
        self._make = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self.migrate()
            self._identity = self._file_identity()
            self.recover()
        except (SQLAlchemyError, OSError) as err:
            self.engine.dispose()
            raise self.failure(err, opening=True) from err

    @classmethod
    def open(cls) -> "Store":
        from taco_app.settings import current

        settings = current()
        settings.ensure_home()
        return cls(settings.db_url, settings.images_dir, timeout_s=settings.db_timeout)

    def close(self) -> None:
        self.engine.dispose()

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

    # --- transactions ---------------------------------------------------------------------------

    def reading(self) -> AbstractContextManager[DbSession]:
        """``with store.reading() as db:`` an ORM session to read with (nothing it changes is kept).

        Like :meth:`writing`, it checks the database first and turns its failures into
        :class:`StoreError` (the SQL goes to the log, not to people).
        """
        return self._transaction(write=False)

    def writing(self) -> AbstractContextManager[DbSession]:
        """``with store.writing() as db:`` one transaction: committed when the block ends, rolled back if it raises."""
        return self._transaction(write=True)

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[DbSession]:
        self.check()
        try:
            with self._make.begin() if write else self._make() as db:
                yield db
        except (SQLAlchemyError, OSError) as err:
            raise self.failure(err) from err

    # --- schema -------------------------------------------------------------------------------

    def version(self) -> int:
        if not inspect(self.engine).has_table(SchemaInfo.__tablename__):
            return 0
        with self.reading() as db:
            row = db.get(SchemaInfo, 1)
            return row.version if row else 0

    def migrate(self) -> None:
        if len(MIGRATIONS) != SCHEMA_VERSION:
            raise RuntimeError(f"{len(MIGRATIONS)} migrations for schema version {SCHEMA_VERSION}")
        current = self.version()
        for number in range(current, SCHEMA_VERSION):
            MIGRATIONS[number](self.engine)
            with self.writing() as db:
                info = db.get(SchemaInfo, 1)
                if info is None:
                    db.add(SchemaInfo(id=1, version=number + 1))
                else:
                    info.version = number + 1

    def recover(self) -> int:
        """Mark sessions left `running` by a process that no longer exists as `interrupted`."""
        with self.writing() as db:
            running = db.scalars(select(SessionRow).where(SessionRow.status == "running")).all()
            # Another machine's sessions (a shared PostgreSQL) cannot be checked from here: left alone.
            dead = [row for row in running if row.owner_host in (HOST, None)
                    and (row.owner_pid is None or not _process_alive(row.owner_pid))]
            for row in dead:
                row.status, row.message = "interrupted", "The app stopped while this session was running."
            return len(dead)

    # --- the write path -----------------------------------------------------------------------

    def record(self, events: Iterable[ev.Event]) -> Iterator[ev.Event]:
        """A live session's events passed through, each finished step written as it happens
        (:func:`taco_app.store.recorder.record`: a step that cannot be stored ends the session ``failed``)."""
        return record(self, events)

    def record_whole(self, events: Iterable[ev.Event], provenance: Provenance) -> None:
        """A whole session's events (an import) written in one transaction, through the same recorder."""
        record_whole(self, events, provenance)

    def finish_later(self, session_id: str, status: str, message: str) -> None:
        """The end of a session that could not be written now: :meth:`finish_pending` writes it."""
        self._unfinished[session_id] = (status, message)

    def finish_pending(self) -> None:
        """Write the end of sessions whose end could not be written when they ended (best effort)."""
        for session_id, (status, message) in list(self._unfinished.items()):
            try:
                with self.writing() as db:
                    db.execute(update(SessionRow).where(SessionRow.id == session_id, SessionRow.status == "running")
                               .values(status=status, message=message, finished_at=time.time()))
            except StoreError:
                return  # still failing: the next operation tries again
            del self._unfinished[session_id]

    # --- image files --------------------------------------------------------------------------

    def relative(self, path: str | Path) -> str:
        """A file's path as an image row keeps it: relative to the images folder when it lies inside."""
        try:
            return str(Path(path).resolve().relative_to(self.images_root.resolve()))
        except ValueError:
            return str(path)

    def image_path(self, row: ImageRow) -> Path:
        """The file of an image row, refusing paths that leave the images folder."""
        path = (self.images_root / row.path).resolve()
        if not path.is_relative_to(self.images_root.resolve()):
            raise ValueError(f"image path outside {self.images_root}: {row.path!r}")
        return path

    # --- reading ------------------------------------------------------------------------------

    def get_session(self, session_id: str) -> SessionRow | None:
        with self.reading() as db:
            return db.scalars(
                select(SessionRow).where(SessionRow.id == session_id)
                .options(selectinload(SessionRow.steps), selectinload(SessionRow.images))
            ).first()
