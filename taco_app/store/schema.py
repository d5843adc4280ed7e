"""The database schema: sessions, their steps, their images, and people's feedback on them.

SQLAlchemy 2.0 typed ORM. Times are UTC epoch seconds (floats), which sort and compare the same on
every engine. JSON columns hold what the events carry as JSON (actions, answers, boxes).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, TypeDecorator, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 5  # 2: steps.action_name, indexed, so "sessions that used tool X" is fast; 3: forks, blame, preferences;
# 4: eval runs, sessions.mode (cota | direct), steps.error_code; 5: feedback.reviewer and corrected_output, review claims
REVIEWER_CHARS = 64  # the longest reviewer name
STATUSES = ("running", "finished", "failed", "cancelled", "interrupted", "max_steps")
BLAMES = ("model", "tool")  # who a bad step is blamed on
MODES = ("cota", "direct")  # how a session was prompted: TACO's chain of thought-and-action, or its direct-answer baseline
# Why an action did not give an observation (steps.error_code): it names no action the app has, its
# arguments are wrong, its tool ran out of time, or its tool failed.
ERROR_CODES = ("unknown_action", "bad_arguments", "timeout", "tool")


# Text a model, a file or a person wrote can hold what a database cannot: PostgreSQL refuses NUL in
# text, and neither engine's driver can encode a lone surrogate ("\ud800") as UTF-8. Such characters
# (and the escape character itself) are stored as ESC + "u" + 4 hex digits, and turned back on reading:
# lossless, and every other text is stored byte for byte as given. ESC is U+FFFF, a noncharacter
# that no real text holds, so stored text stays readable and searchable.
ESCAPE = "\uffff"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff\uffff]")
_ESCAPED = re.compile("\uffffu([0-9a-f]{4})")


def escape_text(text: str) -> str:
    """``text`` with the characters a database cannot hold escaped (see :data:`ESCAPE`)."""
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(lambda m: f"{ESCAPE}u{ord(m.group()):04x}", text)


def unescape_text(text: str) -> str:
    """The inverse of :func:`escape_text` (a sequence cut by a column's length limit stays as is)."""
    if ESCAPE not in text:
        return text
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)


class SafeText(TypeDecorator):
    """A text column that stores any Python string (see :func:`escape_text`).

    With a ``length``, a longer value is cut to fit (a name, not content: the content it names is
    kept whole elsewhere, e.g. an action's name in its JSON), so no insert fails on length.
    """

    impl = Text
    cache_ok = True

    def __init__(self, length: int | None = None):
        super().__init__()
        self.length = length
        if length is not None:
            self.impl = String(length)

    def load_dialect_impl(self, dialect: Any) -> Any:
        return dialect.type_descriptor(String(self.length) if self.length else Text())

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        text = escape_text(value if isinstance(value, str) else str(value))
        return text[: self.length] if self.length else text

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return unescape_text(value) if isinstance(value, str) else value


class Base(DeclarativeBase):
    pass


class SchemaInfo(Base):
    __tablename__ = "schema_info"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class SessionRow(Base):
    __tablename__ = "sessions"
    # The review queue reads sessions oldest first (created_at, then id) and stops at the first it can give.
    __table_args__ = (Index("ix_sessions_created_at_id", "created_at", "id"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    finished_at: Mapped[float | None] = mapped_column(Float)
    question: Mapped[str] = mapped_column(SafeText)
    backend: Mapped[str] = mapped_column(SafeText(64))
    model: Mapped[str | None] = mapped_column(SafeText(512), index=True)
    revision: Mapped[str | None] = mapped_column(SafeText(128))
    quantisation: Mapped[str | None] = mapped_column(String(32))
    family: Mapped[str] = mapped_column(String(32))
    tool_versions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), index=True)
    answer: Mapped[Any] = mapped_column(JSON, nullable=True)
    message: Mapped[str | None] = mapped_column(SafeText)
    total_s: Mapped[float | None] = mapped_column(Float)
    # Which process runs it: a session left `running` by a dead process is `interrupted`.
    owner_host: Mapped[str | None] = mapped_column(String(255))
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    # A fork: the session it was forked from and the step it replaced (its earlier steps are copies).
    # No foreign key: a fork outlives a deleted parent, and a parent may be in another store's export.
    parent_session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    fork_step: Mapped[int | None] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(16), default="cota", server_default="cota")

    steps: Mapped[list[StepRow]] = relationship(back_populates="session", order_by="StepRow.index", cascade="all, delete-orphan")
    images: Mapped[list[ImageRow]] = relationship(back_populates="session", order_by="ImageRow.ordinal", cascade="all, delete-orphan")


class StepRow(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("session_id", "index"), Index("ix_steps_action_name_session", "action_name", "session_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    raw: Mapped[str] = mapped_column(SafeText, default="")
    thought: Mapped[str | None] = mapped_column(SafeText)
    action: Mapped[Any] = mapped_column(JSON, nullable=True)  # {"name", "arguments"}; null: no action
    action_name: Mapped[str | None] = mapped_column(SafeText(64))  # the action's name, for indexed filtering
    parse_error_code: Mapped[str | None] = mapped_column(String(16))
    parse_error: Mapped[str | None] = mapped_column(SafeText)
    observation: Mapped[str | None] = mapped_column(SafeText)  # the exact turn fed back to the model
    output: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(SafeText)
    error_code: Mapped[str | None] = mapped_column(String(16))  # one of ERROR_CODES when ``error`` is set
    image_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    overlays: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    generation_s: Mapped[float | None] = mapped_column(Float)
    tool_s: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)

    session: Mapped[SessionRow] = relationship(back_populates="steps")


class ImageRow(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("session_id", "image_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)  # k of image-k
    image_id: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(Text)  # relative to TACO_HOME/images
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))  # input | tool
    step: Mapped[int | None] = mapped_column(Integer)
    parent: Mapped[str | None] = mapped_column(String(32))
    bbox: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)

    session: Mapped[SessionRow] = relationship(back_populates="images")


class FeedbackRow(Base):
    __tablename__ = "feedback"
    # "Has this session a session-level rating?" answered from the index alone (the review queue asks it per session).
    __table_args__ = (Index("ix_feedback_session_step_rating", "session_id", "step", "rating"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    step: Mapped[int | None] = mapped_column(Integer)  # null: about the whole session
    rating: Mapped[str | None] = mapped_column(String(8))  # up | down
    corrected_answer: Mapped[str | None] = mapped_column(SafeText)
    corrected_step: Mapped[Any] = mapped_column(JSON, nullable=True)
    note: Mapped[str | None] = mapped_column(SafeText)
    created_at: Mapped[float] = mapped_column(Float)
    # A bad step's cause: "model" (it misused a correct observation) or "tool" (the observation was
    # wrong: OCR misread, a wrong box). Only model-blamed steps count against the model in exports.
    blame: Mapped[str | None] = mapped_column(String(8))
    # Who gave it (see :func:`taco_app.store.review_queue.check_reviewer`); null: given before names were kept.
    reviewer: Mapped[str | None] = mapped_column(String(REVIEWER_CHARS))
    # What a tool's output should have been, fixed by a person (see :func:`taco_app.store.queries.correct_output`):
    # {"regions": [...], "image": {...}} (the image: the tool's picture redrawn with them, when it made one).
    corrected_output: Mapped[Any] = mapped_column(JSON, nullable=True)


class ReviewClaimRow(Base):
    """A reviewer's hold on the session "Next to review" gave them: until ``expires_at`` no other reviewer
    is given it (see :mod:`taco_app.store.review_queue`). A reviewer holds one claim; the next replaces it."""

    __tablename__ = "review_claims"
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)
    reviewer: Mapped[str] = mapped_column(String(REVIEWER_CHARS), index=True)
    claimed_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class PreferenceRow(Base):
    """A person's judgment of two sessions on the same question and images: ``chosen`` is better
    than ``rejected``, or the two are as good (``tie``)."""

    __tablename__ = "preferences"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chosen_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    rejected_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    tie: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(SafeText)
    created_at: Mapped[float] = mapped_column(Float)


class EvalRunRow(Base):
    """An eval run: its name and the settings its items were run with (see :mod:`taco_app.store.evals`)."""

    __tablename__ = "eval_runs"
    name: Mapped[str] = mapped_column(SafeText(128), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class EvalItemRow(Base):
    """A finished item of an eval run: the session that answered it, and its score."""

    __tablename__ = "eval_items"
    __table_args__ = (UniqueConstraint("run_name", "item_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_name: Mapped[str] = mapped_column(ForeignKey("eval_runs.name", ondelete="CASCADE"), index=True)
    item_id: Mapped[str] = mapped_column(SafeText(256))
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    category: Mapped[str | None] = mapped_column(SafeText(128))
    answers: Mapped[Any] = mapped_column(JSON, nullable=True)  # the accepted answers
    prediction: Mapped[Any] = mapped_column(JSON, nullable=True)  # the session's final answer
    correct: Mapped[bool] = mapped_column(Boolean)
    how: Mapped[str | None] = mapped_column(SafeText(64))  # the scoring rule that decided
    finished_at: Mapped[float] = mapped_column(Float)
