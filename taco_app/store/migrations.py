"""Numbered schema migrations: migration k upgrades a database from version k to k+1 (append-only).

:meth:`taco_app.store.db.Store.migrate` runs the ones a database has not had yet, each followed by
its new version number, when a store opens.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import Engine, inspect, select, text, update

from taco_app.store.schema import Base, EvalItemRow, EvalRunRow, PreferenceRow, ReviewClaimRow, StepRow


def _m001_create(engine: Engine) -> None:
    # A new database gets today's tables at once; the later migrations then find nothing to do.
    Base.metadata.create_all(engine)


def _m002_action_name(engine: Engine) -> None:
    """steps.action_name (+ index), filled from the action JSON of the steps already stored."""
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


def _m003_forks_blame_preferences(engine: Engine) -> None:
    """sessions.parent_session_id (+ index) and fork_step, feedback.blame, and the preferences table."""
    inspector = inspect(engine)
    sessions = {c["name"] for c in inspector.get_columns("sessions")}
    feedback = {c["name"] for c in inspector.get_columns("feedback")}
    with engine.begin() as connection:
        if "parent_session_id" not in sessions:
            connection.execute(text("ALTER TABLE sessions ADD COLUMN parent_session_id VARCHAR(64)"))
        if "fork_step" not in sessions:
            connection.execute(text("ALTER TABLE sessions ADD COLUMN fork_step INTEGER"))
        if "blame" not in feedback:
            connection.execute(text("ALTER TABLE feedback ADD COLUMN blame VARCHAR(8)"))
        indexes = {i["name"] for i in inspect(connection).get_indexes("sessions")}
        if "ix_sessions_parent_session_id" not in indexes:
            connection.execute(text("CREATE INDEX ix_sessions_parent_session_id ON sessions (parent_session_id)"))
    PreferenceRow.__table__.create(engine, checkfirst=True)


def _m004_evals(engine: Engine) -> None:
    """sessions.mode, steps.error_code, and the eval_runs and eval_items tables."""
    inspector = inspect(engine)
    sessions = {c["name"] for c in inspector.get_columns("sessions")}
    steps = {c["name"] for c in inspector.get_columns("steps")}
    with engine.begin() as connection:
        if "mode" not in sessions:
            connection.execute(text("ALTER TABLE sessions ADD COLUMN mode VARCHAR(16) NOT NULL DEFAULT 'cota'"))
        if "error_code" not in steps:
            connection.execute(text("ALTER TABLE steps ADD COLUMN error_code VARCHAR(16)"))
    EvalRunRow.__table__.create(engine, checkfirst=True)
    EvalItemRow.__table__.create(engine, checkfirst=True)


def _m005_review_queue(engine: Engine) -> None:
    """feedback.reviewer (null for feedback given before names were kept), feedback.corrected_output (the
    regions a person fixed on a tool's output), the review_claims table, and the indexes the review queue reads by."""
    feedback = {c["name"] for c in inspect(engine).get_columns("feedback")}
    with engine.begin() as connection:
        if "reviewer" not in feedback:
            connection.execute(text("ALTER TABLE feedback ADD COLUMN reviewer VARCHAR(64)"))
        if "corrected_output" not in feedback:
            connection.execute(text("ALTER TABLE feedback ADD COLUMN corrected_output JSON"))
        for table, name, columns in (("sessions", "ix_sessions_created_at_id", "created_at, id"),
                                     ("feedback", "ix_feedback_session_step_rating", "session_id, step, rating")):
            if name not in {i["name"] for i in inspect(connection).get_indexes(table)}:
                connection.execute(text(f"CREATE INDEX {name} ON {table} ({columns})"))
    ReviewClaimRow.__table__.create(engine, checkfirst=True)


# simonw/llm style: numbered, append-only; len(MIGRATIONS) is the schema version they lead to.
MIGRATIONS: list[Callable[[Engine], None]] = [_m001_create, _m002_action_name, _m003_forks_blame_preferences, _m004_evals,
                                             _m005_review_queue]
