"""The write path under hostile text and a failing database: nothing is lost silently, nothing hangs.

Text a model writes is stored whole (NUL, lone surrogates, names longer than their column, deep
nesting) and shown as text. A database that is locked, deleted, full or unreachable ends the
session ``failed`` with a plain reason (never SQL), and the next session works once it is back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from taco_app.backends import ReplayBackend
from taco_app.cota import events as ev
from taco_app.store import StoreError
from taco_app.store import codec, queries
from taco_app.store.db import Store
from taco_app.store.queries import get_trace
from taco_app.ui import render

from .conftest import ROOT, run_loop
from .test_agent import step, terminate


def nested(depth: int) -> str:
    return '{"thought":"deep","actions":[{"name":"Calculate","arguments":' + '{"a":' * depth + "1" + "}" * depth + "}]}"


# name: (the raw reply, the thought it must be stored with, or None for a reply that does not parse)
HOSTILE_TEXT = {
    "action name of 100 characters": (step("A" * 100, image="image-0"), "t"),
    "NUL in the reply": ('\x00{"thought":"a\\u0000b","actions":[{"name":"Calculate","arguments":{"expression":"1+1\\u0000"}}]}',
                         "a\x00b"),
    "lone surrogate in the reply": ('\ud800{"thought":"x\\udfffy","actions":[{"name":"OCR","arguments":{"image":"image-\\ud800"}}]}',
                                    "x\udfffy"),
    "our escape character in the reply": (step("Calculate", thought="\uffffu0000 \uffff", expression="2*3"), "\uffffu0000 \uffff"),
    "arguments nested 500 deep": (nested(500), None),
    "arguments nested 970 deep": (nested(970), None),
}


def photo() -> Image.Image:
    return Image.new("RGB", (64, 48), "white")


@pytest.mark.store
@pytest.mark.parametrize("name", list(HOSTILE_TEXT))
def test_hostile_text_is_stored_whole_and_shown_as_text(store, name):
    raw, thought = HOSTILE_TEXT[name]
    events = list(store.record(run_loop("q", [photo()], ReplayBackend([raw, terminate("still here")]))))
    assert events[-1].status == "finished", events[-1]
    trace = get_trace(store, events[0].session_id)
    assert trace.session["status"] == "finished" and trace.session["answer"] == "still here"
    first = trace.steps[0]
    assert first["raw"] == raw, "the reply is stored exactly as the model wrote it"
    if thought is None:
        assert first["parse_error_code"] in ("json", "unknown"), "refused by the parser, before anything recurses on it"
    else:
        assert first["thought"] == thought
        assert first["action"] == json.loads(raw.lstrip("\x00\ud800"))["actions"][0]
        assert first["action_name"] == first["action"]["name"][:64]
    # Shown as text: the page gets JSON-encodable UTF-8 with nothing of the reply as markup.
    shown = render.chat_messages(codec.trace_events(trace))
    json.dumps(shown, ensure_ascii=False).encode("utf-8")
    after = list(store.record(run_loop("q", [photo()], ReplayBackend([terminate("fine")]))))
    assert after[-1].status == "finished" and after[-1].answer == "fine"


@pytest.mark.store
def test_questions_notes_and_searches_with_unstorable_characters(store):
    question = "what is \ud800 and \x00 and \uffff?"
    events = list(store.record(run_loop(question, [photo()], ReplayBackend([terminate("\udfff")]))))
    session_id = events[0].session_id
    assert events[-1].status == "finished"
    queries.add_note(store, session_id, "note \ud83d with \x00")
    queries.correct_answer(store, session_id, "fixed \ud800")
    trace = get_trace(store, session_id)
    assert trace.session["question"] == question and trace.session["answer"] == "\udfff"
    assert trace.corrected_answer == "fixed \ud800"
    assert any(f.note == "note \ud83d with \x00" for f in trace.feedback)
    found = queries.list_sessions(store, queries.SessionFilter(text="\ud800 and \x00"))
    assert [s.id for s in found.items] == [session_id]
    assert found.items[0].question == question
    assert queries.list_sessions(store, queries.SessionFilter(text="\udbff")).total == 0


def test_run_json_writes_every_event_whatever_the_reply_holds(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps(['{"thought":"\\ud800 \\u0000","actions":[]}', terminate("a \ud800 b")]))
    image = tmp_path / "p.png"
    photo().save(image)
    for mode in (["--json"], []):
        done = subprocess.run([sys.executable, "app.py", "run", "--image", str(image), "--question", "q", "--backend", f"replay:{script}", *mode],
            cwd=ROOT, capture_output=True, timeout=300, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
        assert done.returncode == 0, done.stderr.decode()
        lines = done.stdout.decode("utf-8").splitlines()  # valid UTF-8 throughout
        if mode:
            events = [json.loads(line) for line in lines]
            assert events[-1]["type"] == "final" and events[-1]["answer"] == "a \ud800 b"
            assert next(e for e in events if e["type"] == "action_parsed")["thought"] == "\ud800 \x00"
        else:
            assert any("\\ud800" in line for line in lines)


# --- a database that fails ----------------------------------------------------------------------


def _consume_until_the_first_observation(store: Store, backend) -> tuple[list[ev.Event], object]:
    stream = store.record(run_loop("q", [photo()], backend))
    events = []
    for event in stream:
        events.append(event)
        if isinstance(event, ev.Observation):
            return events, stream
    raise AssertionError("no observation")


class HeldLock:
    """Another program holding the database's write lock (SQLite) or the steps table (PostgreSQL)."""

    def __init__(self, store: Store):
        self.store = store

    def __enter__(self):
        if self.store.file is not None:
            self.connection = sqlite3.connect(self.store.file, timeout=1, isolation_level=None)
            self.connection.execute("BEGIN EXCLUSIVE")
        else:
            from sqlalchemy import create_engine, text

            self.engine = create_engine(self.store.url)
            self.connection = self.engine.connect()
            self.transaction = self.connection.begin()
            self.connection.execute(text("LOCK TABLE steps IN ACCESS EXCLUSIVE MODE"))
        return self

    def __exit__(self, *exc):
        if self.store.file is not None:
            self.connection.execute("ROLLBACK")
            self.connection.close()
        else:
            self.transaction.rollback()
            self.connection.close()
            self.engine.dispose()


@pytest.mark.store
def test_a_step_that_cannot_be_stored_ends_the_session_failed_and_the_next_run_works(taco_home, monkeypatch):
    monkeypatch.setenv("TACO_DB_TIMEOUT", "0.5")
    store = Store.open()
    replies = [step("Calculate", expression="1+1"), step("Calculate", expression="2+2"), terminate("4")]
    events, stream = _consume_until_the_first_observation(store, ReplayBackend(replies))
    session_id = events[0].session_id
    with HeldLock(store):
        started = time.perf_counter()
        rest = list(stream)
        assert time.perf_counter() - started < 20, "the wait for the lock is bounded"
        error, finished = rest[-2], rest[-1]
        assert isinstance(error, ev.Error) and error.code == "store"
        assert finished.status == "failed" and finished.session_id == session_id
        for text in (error.message, finished.message):
            assert "locked" in text and "INSERT" not in text.upper() and "SELECT" not in text.upper()
    # The lock is gone: the next run writes the end of the earlier session, then runs as usual.
    after = list(store.record(run_loop("q", [photo()], ReplayBackend([terminate("fine")]))))
    assert after[-1].status == "finished"
    trace = get_trace(store, session_id)
    assert trace.session["status"] == "failed" and "locked" in trace.session["message"]
    assert [s["index"] for s in trace.steps] == [1], "the step stored before the fault is kept"
    assert not list(store.images_root.rglob("*.tmp"))


def test_a_deleted_database_file_is_detected_not_written_to(store):
    first = list(store.record(run_loop("q", [photo()], ReplayBackend([terminate("kept")]))))
    assert first[-1].status == "finished"
    for path in store.file.parent.glob(store.file.name + "*"):
        path.unlink()
    events = list(store.record(run_loop("q", [photo()], ReplayBackend([terminate("lost")]))))
    assert events[-1].status == "failed" and "deleted" in events[-1].message
    assert [e.kind for e in events] == ["error", "final"], "nothing is reported as saved"
    with pytest.raises(StoreError, match="deleted or replaced"):
        queries.list_sessions(store)


def test_an_unreachable_database_fails_in_bounded_time_with_one_line(tmp_path):
    """A server that accepts connections and never answers (a firewall, a hung host)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(listener.accept()) for _ in range(8)], daemon=True).start()
    image = tmp_path / "p.png"
    photo().save(image)
    script = tmp_path / "s.json"
    script.write_text(json.dumps([terminate("x")]))
    url = f"postgresql+psycopg://taco:secret@127.0.0.1:{listener.getsockname()[1]}/taco"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "app.py", "--db", url, "run", "--image", str(image), "--question", "q",
                           "--backend", f"replay:{script}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TACO_DB_TIMEOUT": "2", "TACO_HOME": str(tmp_path / "home")})
    assert time.perf_counter() - started < 60
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Cannot open the database"), done.stderr
    assert "secret" not in done.stderr and "Traceback" not in done.stderr
    listener.close()


def test_a_bad_db_timeout_stops_the_command_with_its_name(tmp_path):
    done = subprocess.run([sys.executable, "app.py", "export", "--format", "cota-mantis", "--out", str(tmp_path / "x")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TACO_DB_TIMEOUT": "abc", "TACO_HOME": str(tmp_path / "home")})
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "TACO_DB_TIMEOUT" in done.stderr


def _file_size_limit(limit: int):
    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_ends_the_session_failed_with_no_partial_files(tmp_path, monkeypatch):
    """Files over 1 MB cannot be written (RLIMIT_FSIZE: the kernel refuses, as on a full disk): the
    input image and the database fit, the ZoomIn image of a noisy photo does not."""
    home = tmp_path / "home"
    env = {**os.environ, "TACO_HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    image = tmp_path / "noise.png"
    Image.effect_noise((256, 256), 80).convert("RGB").save(image)
    assert image.stat().st_size < 400_000
    script = tmp_path / "s.json"
    script.write_text(json.dumps([step("ZoomIn", image="image-0", bbox=[0, 0, 1, 1], zoom_factor=4.0), terminate("x")]))
    args = [sys.executable, "app.py", "run", "--image", str(image), "--question", "q", "--backend", f"replay:{script}", "--json"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
                          preexec_fn=_file_size_limit(1_000_000))
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1, done.stderr
    assert events[-1]["type"] == "final" and events[-1]["status"] == "failed"
    assert "could not be saved" in events[-1]["message"] and "Traceback" not in done.stderr
    assert not list((home / "images").rglob("*.tmp")), "no partial file is left behind"
    monkeypatch.setenv("TACO_HOME", str(home))
    trace = get_trace(Store.open(), events[0]["session_id"])
    assert trace.session["status"] == "failed" and "could not be saved" in trace.session["message"]
    # Space again: the next run works.
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and json.loads(again.stdout.splitlines()[-1])["status"] == "finished"
