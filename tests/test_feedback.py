"""People's judgments of stored sessions: ratings with blame and notes, preferences between two answers to
the same task, a session's forks, and the `rate` / `prefer` commands."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image
from sqlalchemy import func, select, update

from taco_app.backends.replay import ReplayBackend
from taco_app.fork import fork, plan_fork
from taco_app.store import queries as q
from taco_app.store.schema import FeedbackRow, PreferenceRow, SessionRow
from taco_app.tools import default_tools

from .conftest import ROOT, run_loop

pytestmark = pytest.mark.store

QUESTION = "What is 2+3?"
CALC = '{"thought":"add them","actions":[{"name":"Calculate","arguments":{"expression":"2+3"}}]}'
CHECK = '{"thought":"check it","actions":[{"name":"Calculate","arguments":{"expression":"5-3"}}]}'
DONE = '{"thought":"done","actions":[{"name":"Terminate","arguments":{"answer":"5"}}]}'


def record(store, question: str = QUESTION, colours=("teal",), outputs=(CALC, CHECK, DONE)) -> str:
    """One session through the real step loop, on plain images of these colours; its id."""
    images = [Image.new("RGB", (64, 48), colour) for colour in colours]
    events = list(store.record(run_loop(question, images, ReplayBackend(list(outputs)))))
    assert events[-1].status == "finished"
    return events[-1].session_id


def count(store, table) -> int:
    with store.reading() as db:
        return db.scalar(select(func.count()).select_from(table))


# --- ratings --------------------------------------------------------------------------------------


def test_a_bad_step_says_whom_it_blames_and_a_rating_keeps_its_note(store):
    sid = record(store)
    q.rate(store, sid, "down", step=2, blame="tool", note="5-3 is not what was asked")
    q.rate(store, sid, "down", step=1)  # no blame said: it stays None (exports count it as the model's)
    q.rate(store, sid, "up", note="right answer")
    trace = q.get_trace(store, sid)
    assert trace.step_ratings == {1: "down", 2: "down"} and trace.step_blame == {2: "tool"}
    assert trace.rating == "up"
    assert [(f.step, f.rating, f.blame, f.note) for f in trace.feedback] == [
        (2, "down", "tool", "5-3 is not what was asked"), (1, "down", None, None), (None, "up", None, "right answer")]

    # The blame belongs to the rating it came with: the step's latest rating decides.
    q.rate(store, sid, "down", step=2, blame="model")
    assert q.get_trace(store, sid).step_blame == {2: "model"}
    q.rate(store, sid, "down", step=2)
    assert q.get_trace(store, sid).step_blame == {}
    q.rate(store, sid, "down", step=1, blame="tool")
    q.rate(store, sid, "up", step=1)
    trace = q.get_trace(store, sid)
    assert trace.step_ratings == {1: "up", 2: "down"} and trace.step_blame == {}
    with store.reading() as db:  # what exports fold: the stored rows give the same answer
        rows = db.scalars(select(FeedbackRow).where(FeedbackRow.session_id == sid).order_by(FeedbackRow.created_at, FeedbackRow.id)).all()
        assert q.LatestFeedback.fold(rows).step_blame == {}
        assert q.LatestFeedback.fold(rows[:4]).step_blame == {2: "model"}


def test_rate_refuses_what_it_cannot_record_and_records_nothing_then(store):
    sid = record(store)
    refusals = [
        (dict(session_id="missing", rating="up"), "no session 'missing'"),
        (dict(session_id=sid, rating="meh"), "rating must be one of"),
        (dict(session_id=sid, rating="down", step=4), f"no session '{sid}' step 4: its steps are 1 to 3"),
        (dict(session_id=sid, rating="down", step=0), "its steps are 1 to 3"),
        (dict(session_id=sid, rating="down", step=10**12), "its steps are 1 to 3"),  # past the databases' integers
        (dict(session_id=sid, rating="up", step=1, blame="tool"), "only a step rated down can be blamed"),
        (dict(session_id=sid, rating="down", blame="model"), "only a step can be blamed, not a whole session"),
        (dict(session_id=sid, rating="down", step=1, blame="user"), "blame must be one of ('model', 'tool')"),
    ]
    for kwargs, message in refusals:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            q.rate(store, **kwargs)
        assert "\n" not in str(err.value)
    assert count(store, FeedbackRow) == 0
    one_step = record(store, outputs=[DONE])
    with pytest.raises(ValueError, match="its only step is 1"):
        q.rate(store, one_step, "down", step=2)


# --- preferences ----------------------------------------------------------------------------------


def test_prefer_records_a_winner_or_a_tie(store):
    a, b, c = record(store), record(store), record(store)
    q.prefer(store, a, b, reason="checked its sum")
    q.prefer(store, c, a, tie=True)
    assert [(p.chosen_id, p.rejected_id, p.tie, p.reason) for p in q.preferences(store, a)] == [
        (a, b, False, "checked its sum"), (c, a, True, None)]
    assert [(p.chosen_id, p.rejected_id, p.tie) for p in q.preferences(store, b)] == [(a, b, False)]
    assert all(isinstance(p.created_at, float) for p in q.preferences(store, a))
    with pytest.raises(ValueError, match="no session 'missing'"):
        q.preferences(store, "missing")


def test_prefer_refuses_sessions_that_are_not_two_answers_to_one_task(store):
    a, b = record(store), record(store)
    other_question = record(store, question="What is 2+2?")
    other_image = record(store, colours=("navy",))
    two, swapped = record(store, colours=("teal", "navy")), record(store, colours=("navy", "teal"))
    assert q.same_task(store, a, b) and q.same_task(store, two, record(store, colours=("teal", "navy")))
    assert not q.same_task(store, a, other_question)
    assert not q.same_task(store, a, other_image) and not q.same_task(store, two, swapped)  # images in order
    assert not q.same_task(store, a, two)  # one image more
    refusals = [
        ((a, a), f"session '{a}' was given twice"),
        ((a, other_question), "answer different questions"),
        ((a, other_image), "were given different images"),
        ((two, swapped), "were given different images"),
        ((a, "missing"), "no session 'missing'"),
        (("missing", a), "no session 'missing'"),
    ]
    for (winner, loser), message in refusals:
        with pytest.raises(ValueError, match=message) as err:
            q.prefer(store, winner, loser)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="no session 'missing'"):
        q.same_task(store, a, "missing")
    assert count(store, PreferenceRow) == 0


# --- lineage --------------------------------------------------------------------------------------


def _fork(store, parent_id: str, step: int) -> str:
    """A fork of the session at ``step``, its step written by the backend."""
    events = list(store.record(fork(plan_fork(store, parent_id, step), ReplayBackend([DONE]), tools=default_tools(),
                                    sink=store.images)))
    assert events[-1].status == "finished"
    return events[-1].session_id


def test_lineage_of_a_parent_with_two_forks(store):
    parent = record(store)
    at_two, at_one = _fork(store, parent, 2), _fork(store, parent, 1)
    grandchild = _fork(store, at_two, 2)
    unrelated = record(store)

    family = q.lineage(store, parent)
    assert family.parent is None and family.fork_step is None and family.parent_id is None
    assert [(child.id, step) for child, step in family.children] == [(at_one, 1), (at_two, 2)]  # by fork step
    assert [(child.steps, child.status, child.question) for child, _ in family.children] == [(1, "finished", QUESTION),
                                                                                            (2, "finished", QUESTION)]

    child = q.lineage(store, at_two)
    assert child.parent.id == parent and child.parent_id == parent and child.fork_step == 2
    assert child.parent.steps == 3 and child.parent.question == QUESTION
    assert [(c.id, step) for c, step in child.children] == [(grandchild, 2)]
    assert q.lineage(store, unrelated) == q.Lineage(None, None, [], None)
    with pytest.raises(ValueError, match="no session 'missing'"):
        q.lineage(store, "missing")

    # A fork keeps its parent's images, so the two answers can be compared.
    assert q.same_task(store, parent, at_two)
    q.prefer(store, at_two, parent, reason="shorter")
    assert [(p.chosen_id, p.rejected_id) for p in q.preferences(store, parent)] == [(at_two, parent)]

    # A fork outlives its parent: it still names it.
    with store.writing() as db:
        db.execute(update(SessionRow).where(SessionRow.id == unrelated).values(parent_session_id="gone", fork_step=3))
    orphan = q.lineage(store, unrelated)
    assert orphan.parent is None and orphan.parent_id == "gone" and orphan.fork_step == 3
    trace = q.get_trace(store, at_one)
    assert trace.session["parent_session_id"] == parent and trace.session["fork_step"] == 1


# --- the command line -----------------------------------------------------------------------------


def app(*args: str) -> subprocess.Popen:
    """`python app.py …` on this test's store (TACO_HOME, and TACO_DB_URL when the tests use a database)."""
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), *args], env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def test_rate_and_prefer_on_the_command_line(store):
    a, b = record(store), record(store)
    other_question, other_image = record(store, question="What is 2+2?"), record(store, colours=("navy",))

    # Every kind of bad input: one line on stderr, exit 2, nothing stored. They only read, so they run together.
    bad = {
        "unknown session": (["rate", "missing", "up"], "no session 'missing'"),
        "bad rating": (["rate", a, "meh"], "rating must be one of"),
        "step out of range": (["rate", a, "down", "--step", "9"], "its steps are 1 to 3"),
        "step not a number": (["rate", a, "down", "--step", "two"], "--step must be a step number"),
        "blame on up": (["rate", a, "up", "--step", "1", "--blame", "tool"], "only a step rated down can be blamed"),
        "blame on a session": (["rate", a, "down", "--blame", "model"], "not a whole session"),
        "unknown blame": (["rate", a, "down", "--step", "1", "--blame", "user"], "blame must be one of"),
        "same session": (["prefer", a, a], "was given twice"),
        "different question": (["prefer", a, other_question], "answer different questions"),
        "different images": (["prefer", a, other_image, "--tie"], "were given different images"),
        "unknown winner": (["prefer", "missing", a], "no session 'missing'"),
        "unknown loser": (["prefer", a, "missing"], "no session 'missing'"),
    }
    running = {kind: app(*args) for kind, (args, _) in bad.items()}
    for kind, process in running.items():
        rc, out, err = finished(process)
        assert rc == 2 and out == "", (kind, rc, out, err)
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and bad[kind][1] in err, (kind, err)
    assert count(store, FeedbackRow) == 0 and count(store, PreferenceRow) == 0

    rc, out, err = finished(app("rate", a, "down", "--step", "2", "--blame", "tool", "--note", "OCR misread the sign"))
    assert (rc, err) == (0, "") and out == f"recorded: step 2 of session {a} rated down, blamed on the tool, with a note\n"
    rc, out, err = finished(app("rate", a, "up"))
    assert (rc, err) == (0, "") and out == f"recorded: session {a} rated up\n"
    trace = q.get_trace(store, a)
    assert trace.rating == "up" and trace.step_ratings == {2: "down"} and trace.step_blame == {2: "tool"}
    assert trace.feedback[0].note == "OCR misread the sign"

    rc, out, err = finished(app("prefer", a, b, "--reason", "it checked the sum"))
    assert (rc, err) == (0, "") and out == f"recorded: session {a} answered better than session {b}\n"
    rc, out, err = finished(app("prefer", b, a, "--tie"))
    assert (rc, err) == (0, "") and out == f"recorded: sessions {b} and {a} answered as well as each other\n"
    assert [(p.chosen_id, p.rejected_id, p.tie, p.reason) for p in q.preferences(store, a)] == [
        (a, b, False, "it checked the sum"), (b, a, True, None)]
