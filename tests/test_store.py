"""Every session in the database as it happens; crashes and concurrent writers lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select, text

from taco_app.backends import ReplayBackend
from taco_app.cota import events as ev
from taco_app.store.db import Store
from taco_app.store.schema import SCHEMA_VERSION, ImageRow, SessionRow

from .conftest import ROOT, run_loop, sqlite_only

pytestmark = pytest.mark.store

CROP = '{"thought":"crop","actions":[{"name":"Crop","arguments":{"image":"image-0","bbox":[0.2,0.2,0.6,0.6]}}]}'
CALC = '{"thought":"add","actions":[{"name":"Calculate","arguments":{"expression":"2+2"}}]}'
DONE = '{"thought":"done","actions":[{"name":"Terminate","arguments":{"answer":"4"}}]}'


def session(store: Store, outputs, question="q") -> list[ev.Event]:
    photo = Image.new("RGB", (120, 80), "teal")
    return list(store.record(run_loop(question, [photo], ReplayBackend(outputs))))


def test_a_session_and_all_its_steps_are_stored(store):
    events = session(store, [CROP, "not json", '{"thought":"","actions":[]}', CALC, DONE], question="What is 2+2?")
    row = store.get_session(events[-1].session_id)
    assert row.status == "finished" and row.answer == "4" and row.question == "What is 2+2?"
    assert row.tool_versions["depth"] == "depth-anything/Depth-Anything-V2-Small-hf" and "easyocr" in row.tool_versions["ocr"]
    assert [s.index for s in row.steps] == [1, 2, 3, 4, 5]
    observations = {e.step: e.observation for e in events if isinstance(e, (ev.Observation, ev.ParseError))}
    for step in row.steps[:4]:
        assert step.observation == observations[step.index]  # exactly as fed back
    assert row.steps[1].parse_error_code == "json" and row.steps[2].action is None
    assert row.steps[4].action == {"name": "Terminate", "arguments": {"answer": "4"}}
    assert [(i.image_id, i.role, i.parent) for i in row.images] == [("image-0", "input", None), ("image-1", "tool", "image-0")]
    assert all(store.image_path(i).is_file() for i in row.images)
    assert row.steps[0].image_ids == ["image-1"]


def test_upgrading_a_first_schema_database_keeps_its_data(taco_home):
    """A database as version 1 made it (no steps.action_name): opening it migrates and keeps all."""
    from sqlalchemy import create_engine, inspect

    from taco_app.settings import current
    from taco_app.store.schema import Base

    url = current().db_url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    with engine.begin() as connection:  # back to the first schema
        connection.execute(text("DROP INDEX ix_steps_action_name_session"))
        connection.execute(text("ALTER TABLE steps DROP COLUMN action_name"))
        connection.execute(text("DROP TABLE preferences"))
        connection.execute(text("DROP TABLE eval_items"))
        connection.execute(text("DROP TABLE eval_runs"))
        connection.execute(text("DROP TABLE review_claims"))
        connection.execute(text("DROP INDEX ix_sessions_created_at_id"))
        connection.execute(text("DROP INDEX ix_feedback_session_step_rating"))
        connection.execute(text("DROP INDEX ix_sessions_parent_session_id"))
        for table, column in (("sessions", "parent_session_id"), ("sessions", "fork_step"), ("feedback", "blame"),
                              ("sessions", "mode"), ("steps", "error_code"), ("feedback", "reviewer"),
                              ("feedback", "corrected_output")):
            connection.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        connection.execute(text("INSERT INTO schema_info (id, version) VALUES (1, 1)"))
        connection.execute(text(
            "INSERT INTO sessions (id, created_at, question, backend, family, tool_versions, status) "
            "VALUES ('old', 1.0, 'an old question', 'replay', 'mantis', '{}', 'finished')"))
        connection.execute(text(
            "INSERT INTO steps (session_id, \"index\", raw, action, image_ids, overlays) VALUES "
            "('old', 1, 'raw', '{\"name\": \"OCR\", \"arguments\": {}}', '[]', '{}')"))
    engine.dispose()
    store = Store.open()
    assert store.version() == SCHEMA_VERSION == 5
    row = store.get_session("old")
    assert row.mode == "cota" and row.steps[0].error_code is None
    assert row.question == "an old question" and row.steps[0].action_name == "OCR"
    assert row.parent_session_id is None and row.fork_step is None
    assert "ix_steps_action_name_session" in {i["name"] for i in inspect(store.engine).get_indexes("steps")}
    assert "ix_sessions_parent_session_id" in {i["name"] for i in inspect(store.engine).get_indexes("sessions")}
    assert "preferences" in inspect(store.engine).get_table_names()
    assert "blame" in {c["name"] for c in inspect(store.engine).get_columns("feedback")}
    assert {"eval_runs", "eval_items"} <= set(inspect(store.engine).get_table_names())
    assert {"reviewer", "corrected_output"} <= {c["name"] for c in inspect(store.engine).get_columns("feedback")}
    assert {"session_id", "reviewer", "claimed_at", "expires_at"} <= {c["name"] for c in inspect(store.engine).get_columns("review_claims")}
    assert inspect(store.engine).get_pk_constraint("review_claims")["constrained_columns"] == ["session_id"]
    assert "ix_sessions_created_at_id" in {i["name"] for i in inspect(store.engine).get_indexes("sessions")}
    assert "ix_feedback_session_step_rating" in {i["name"] for i in inspect(store.engine).get_indexes("feedback")}
    store.close()


def test_schema_version_recorded(store):
    assert store.version() == SCHEMA_VERSION
    assert Store.open().version() == SCHEMA_VERSION  # opening again migrates nothing


def test_sqlite_uses_wal(store):
    sqlite_only(store)
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_unchecked_paths_are_refused(store):
    with pytest.raises(ValueError, match="outside"):
        store.image_path(ImageRow(path="../../etc/passwd"))


def test_abandoned_session_keeps_its_steps(store):
    stream = store.record(run_loop("q", [Image.new("RGB", (8, 8))], ReplayBackend([CALC, CALC, CALC, DONE])))
    for item in stream:
        if isinstance(item, ev.Observation) and item.step == 2:
            break
    stream.close()
    with store.reading() as db:
        row = db.scalars(select(SessionRow)).one()
    full = store.get_session(row.id)
    assert full.status == "interrupted" and len(full.steps) == 2


CRASHING_SESSION = """
import time, sys
from PIL import Image
from taco_app.backends import ReplayBackend
from taco_app.runner import run
from taco_app.store.db import Store
from taco_app.tools import default_tools

class Slow(ReplayBackend):
    def stream(self, prompt, images):
        time.sleep(0.3)
        return super().stream(prompt, images)

calc = '{"thought":"add","actions":[{"name":"Calculate","arguments":{"expression":"2+2"}}]}'
store = Store.open()
session = run("q", [Image.new("RGB", (8, 8))], Slow([calc] * 11), tools=default_tools(), sink=store.images)
for event in store.record(session):
    if event.kind == "observation":
        print(event.step, flush=True)
"""


def test_sigkill_mid_session_then_restart(taco_home):
    child = subprocess.Popen([sys.executable, "-c", CRASHING_SESSION], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=os.environ)
    for _ in range(3):  # three steps are committed and reported
        child.stdout.readline()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    store = Store.open()  # the restart: recovery runs on open
    with store.reading() as db:
        row = db.scalars(select(SessionRow)).one()
    full = store.get_session(row.id)
    assert full.status == "interrupted"
    assert len(full.steps) >= 3 and all(s.observation.startswith("OBSERVATION:\n{'result': 4}") for s in full.steps)
    if store.url.startswith("sqlite"):
        with store.engine.connect() as connection:
            assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"


def test_running_session_of_a_live_process_is_left_alone(store):
    stream = store.record(run_loop("q", [Image.new("RGB", (8, 8))], ReplayBackend([CALC, DONE])))
    first = next(stream)
    assert Store.open().get_session(first.session_id).status == "running"  # this process is alive
    list(stream)
    assert store.get_session(first.session_id).status == "finished"


def test_eight_threads_writing_at_once(store):
    errors, ids = [], []

    def worker():
        try:
            for _ in range(3):
                ids.append(session(store, [CALC, CALC, DONE])[-1].session_id)
        except Exception as err:  # collected: the test fails below with the message
            errors.append(repr(err))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(ids) == 24
    for session_id in ids:
        row = store.get_session(session_id)
        assert row.status == "finished" and len(row.steps) == 3
    print(f"\n24 sessions from 8 threads in {time.perf_counter() - started:.2f}s")


def test_cli_run_is_logged(tmp_path, taco_home):
    image, script = tmp_path / "x.png", tmp_path / "s.json"
    Image.new("RGB", (8, 8)).save(image)
    script.write_text(json.dumps([CALC, DONE]))
    out = subprocess.run([sys.executable, "app.py", "run", "--image", str(image), "--question", "q", "--backend", f"replay:{script}", "--json"],
                         cwd=ROOT, capture_output=True, text=True, check=True, env=os.environ).stdout
    final = json.loads(out.splitlines()[-1])
    row = Store.open().get_session(final["session_id"])
    assert row.status == "finished" and len(row.steps) == 2


def test_a_new_data_folder_is_private_to_its_owner(taco_home):
    import stat

    assert not taco_home.exists()
    Store.open()
    assert stat.S_IMODE(taco_home.stat().st_mode) == 0o700
