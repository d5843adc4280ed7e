"""The review queue: the oldest unrated session first, held for one reviewer at a time, and who gave each feedback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter

import pytest
from sqlalchemy import delete, insert, select

from taco_app.store import queries as q
from taco_app.store import review_queue as rq
from taco_app.store.db import Store
from taco_app.store.schema import FeedbackRow, ReviewClaimRow, SessionRow, StepRow

from .conftest import ROOT

pytestmark = pytest.mark.store

CALC = '{"thought":"add","actions":[{"name":"Calculate","arguments":{"expression":"2+2"}}]}'


def add_sessions(store: Store, rows: list[dict], tools: dict[str, str] | None = None) -> None:
    """Session rows written directly (each: id, created_at, and any other column), with one step each
    whose action is ``tools[id]`` when given."""
    defaults = {"question": "q", "backend": "replay", "family": "mantis", "tool_versions": {}, "status": "finished",
                "model": "m1"}
    with store.writing() as db:
        db.execute(insert(SessionRow), [{**defaults, **row} for row in rows])
        db.execute(insert(StepRow), [{"session_id": row["id"], "index": 1, "raw": CALC, "image_ids": [], "overlays": {},
                                      "action_name": (tools or {}).get(row["id"])} for row in rows])


def numbered(store: Store, n: int, start: float = 1000.0) -> list[str]:
    ids = [f"s{i:03d}" for i in range(n)]
    add_sessions(store, [{"id": session_id, "created_at": start + i} for i, session_id in enumerate(ids)])
    return ids


def claims(store: Store) -> dict[str, str]:
    with store.reading() as db:
        return dict(db.execute(select(ReviewClaimRow.session_id, ReviewClaimRow.reviewer)).all())


@pytest.fixture
def clock(monkeypatch):
    """The queue's clock, set by the test."""
    now = [1_000_000.0]
    monkeypatch.setattr(rq, "_now", lambda: now[0])
    return now


@pytest.fixture(params=["upsert", "insert-or-update"])
def path(request, monkeypatch):
    """Both ways a claim is taken: the upsert SQLite and PostgreSQL have, and the insert-then-update for other engines."""
    if request.param == "insert-or-update":
        monkeypatch.setattr(rq, "_UPSERT", ())
    return request.param


def given(store, reviewer, flt=None, **kwargs) -> str | None:
    found = rq.next_to_review(store, flt, reviewer, **kwargs)
    return None if found is None else found.id


# --- order, filters, what is left --------------------------------------------------------------


def test_oldest_first_then_by_id(store):
    # Inserted out of order; two share a creation time, so the id decides between them.
    add_sessions(store, [{"id": "c", "created_at": 30.0}, {"id": "b2", "created_at": 20.0},
                         {"id": "a", "created_at": 40.0}, {"id": "b1", "created_at": 20.0}])
    order = []
    while (found := rq.next_to_review(store, None, "ana", skip=order)) is not None:
        order.append(found.id)
    assert order == ["b1", "b2", "c", "a"]


def test_the_summary_is_that_of_the_session(store):
    add_sessions(store, [{"id": "s1", "created_at": 5.0, "question": "How many cats?" + "x" * 300, "answer": "3",
                          "status": "finished", "model": "m9"}])
    found = rq.next_to_review(store, q.SessionFilter(), "ana")
    assert isinstance(found, q.SessionSummary)
    assert (found.id, found.created_at, found.answer, found.status, found.model, found.steps, found.rating) == \
        ("s1", 5.0, "3", "finished", "m9", 1, None)
    assert found.question == ("How many cats?" + "x" * 300)[:200]


def test_filters_are_respected_and_paging_ignored(store):
    add_sessions(store, [
        {"id": "old-failed", "created_at": 1.0, "status": "failed"},
        {"id": "other-model", "created_at": 2.0, "model": "m2"},
        {"id": "cats-ocr", "created_at": 3.0, "question": "How many CATS?"},
        {"id": "cats-crop", "created_at": 4.0, "question": "two cats"},
        {"id": "dogs", "created_at": 5.0, "question": "dogs"},
    ], tools={"cats-ocr": "OCR", "cats-crop": "Crop", "dogs": "OCR"})
    assert given(store, "ana", q.SessionFilter(status="finished")) == "other-model"
    assert given(store, "ana", q.SessionFilter(model="m1", status="finished")) == "cats-ocr"
    assert given(store, "ana", q.SessionFilter(text="cats", tool="Crop")) == "cats-crop"
    assert given(store, "ana", q.SessionFilter(tool="OCR", page=7, page_size=1), skip=["cats-ocr"]) == "dogs"
    assert given(store, "ana", q.SessionFilter(since=4.5, until=4.9)) is None
    assert given(store, "ana", q.SessionFilter(since=4.5)) == "dogs"
    with pytest.raises(ValueError, match="search text"):
        rq.next_to_review(store, q.SessionFilter(text="x" * (q.MAX_SEARCH_CHARS + 1)), "ana")


def test_sessions_with_a_session_rating_are_skipped(store):
    ids = numbered(store, 5)
    q.rate(store, ids[0], "up")
    q.rate(store, ids[1], "down", reviewer="bo")
    q.rate(store, ids[2], "down", step=1, blame="tool")  # a step's rating is not the session's
    q.correct_answer(store, ids[3], "4")  # nor is a correction
    q.add_note(store, ids[3], "look again")
    order = []
    while (found := given(store, "ana", skip=order)) is not None:
        order.append(found)
    assert order == [ids[2], ids[3], ids[4]]
    assert given(store, "ana", q.SessionFilter(rating="up")) is None  # every session it matches is rated


def test_a_skip_list_passes_sessions_over(store):
    ids = numbered(store, 4)
    assert given(store, "ana", skip=[ids[0], ids[2]]) == ids[1]
    assert given(store, "ana", skip=set(ids[:3])) == ids[3]
    assert given(store, "ana", skip=ids) is None


def test_the_reviewers_own_session_is_given_again_until_skipped(store):
    ids = numbered(store, 3)
    assert given(store, "ana") == ids[0]
    assert given(store, "ana") == ids[0]  # not rated yet, and hers
    assert given(store, "ana", skip=[ids[0]]) == ids[1]


# --- claims ------------------------------------------------------------------------------------


def test_a_claimed_session_goes_to_no_one_else_until_it_expires(store, clock, path):
    ids = numbered(store, 3)
    assert given(store, "ana", claim_s=60) == ids[0]
    clock[0] += 59.9
    assert given(store, "bo", claim_s=60) == ids[1]
    assert given(store, "cy", claim_s=60) == ids[2]
    assert given(store, "dee", claim_s=60) is None  # all three held
    clock[0] += 0.1  # ana's claim ends now
    assert given(store, "dee", claim_s=60) == ids[0]
    assert claims(store) == {ids[0]: "dee", ids[1]: "bo", ids[2]: "cy"}
    assert given(store, "ana", claim_s=60) is None  # hers was taken over, the others still hold
    clock[0] += 60
    assert given(store, "ana", claim_s=60) == ids[0]  # the oldest again: dee's claim has expired too


def test_a_zero_claim_holds_nothing(store, clock):
    ids = numbered(store, 2)
    assert given(store, "ana", claim_s=0) == ids[0]
    assert given(store, "bo", claim_s=0) == ids[0]
    with pytest.raises(ValueError, match="0 seconds or more"):
        rq.next_to_review(store, None, "ana", claim_s=-1)
    with pytest.raises(ValueError, match="0 seconds or more"):
        rq.next_to_review(store, None, "ana", claim_s=float("nan"))


def test_a_new_claim_drops_the_reviewers_old_one(store, path):
    ids = numbered(store, 3)
    assert given(store, "ana") == ids[0]
    assert given(store, "ana", skip=[ids[0]]) == ids[1]
    assert claims(store) == {ids[1]: "ana"}
    assert given(store, "bo") == ids[0]
    assert claims(store) == {ids[0]: "bo", ids[1]: "ana"}


def test_release_frees_the_reviewers_sessions_at_once(store):
    ids = numbered(store, 2)
    assert given(store, "ana") == ids[0]
    assert given(store, "bo") == ids[1]
    rq.release(store, " ana ")  # the name as the reviewer typed it
    assert claims(store) == {ids[1]: "bo"}
    assert given(store, "cy") == ids[0]
    rq.release(store, "nobody")  # holds nothing: nothing happens
    assert claims(store) == {ids[0]: "cy", ids[1]: "bo"}


def test_nothing_left_leaves_the_reviewer_holding_nothing(store):
    ids = numbered(store, 1)
    assert given(store, "ana") == ids[0]
    q.rate(store, ids[0], "up", reviewer="ana")
    assert given(store, "ana") is None
    assert claims(store) == {}


def test_a_session_rated_or_deleted_while_held_loses_its_claim_or_is_not_claimed(store, path):
    ids = numbered(store, 3)
    assert given(store, "ana") == ids[0]
    with store.writing() as db:
        db.execute(delete(SessionRow).where(SessionRow.id == ids[0]))
    assert claims(store) == {}  # the claim went with its session
    # A session that stopped being one to give between the reading and the claiming is not claimed.
    q.rate(store, ids[1], "up")
    with store.writing() as db:
        assert not rq._claim(db, ids[1], "bo", 1.0, 2.0, rq._open(None))
        assert rq._claim(db, ids[2], "bo", 1.0, 2.0, rq._open(None))
        assert not rq._claim(db, ids[2], "cy", 1.5, 3.0, rq._open(None))  # bo holds it until 2.0
        assert rq._claim(db, ids[2], "cy", 2.0, 3.0, rq._open(None))
    assert claims(store) == {ids[2]: "cy"}


# --- progress ----------------------------------------------------------------------------------


def test_progress_counts_the_sessions_with_a_session_rating(store):
    add_sessions(store, [{"id": f"m1-{i}", "created_at": float(i)} for i in range(4)]
                 + [{"id": f"m2-{i}", "created_at": 10.0 + i, "model": "m2"} for i in range(3)])
    assert rq.progress(store, None) == rq.Progress(0, 7)
    q.rate(store, "m1-0", "up")
    q.rate(store, "m1-0", "down")  # rated twice: one session
    q.rate(store, "m1-1", "down", step=1)  # a step only: not reviewed
    q.correct_answer(store, "m1-2", "x")  # a correction only: not reviewed
    q.rate(store, "m2-0", "down", reviewer="bo")
    assert rq.progress(store, None) == rq.Progress(2, 7)
    assert rq.progress(store, q.SessionFilter(model="m1", page=3)) == rq.Progress(1, 4)
    assert rq.progress(store, q.SessionFilter(model="m2")) == rq.Progress(1, 3)
    assert rq.progress(store, q.SessionFilter(rating="down")) == rq.Progress(2, 2)
    assert rq.progress(store, q.SessionFilter(model="m3")) == rq.Progress(0, 0)


# --- reviewer names ----------------------------------------------------------------------------


def test_every_kind_of_feedback_keeps_its_reviewer(store):
    add_sessions(store, [{"id": "s", "created_at": 1.0}])
    q.rate(store, "s", "up", reviewer="  Ana María ")
    q.rate(store, "s", "down", step=1, blame="model", reviewer="bo")
    q.correct_answer(store, "s", "4", reviewer="cy")
    q.correct_step(store, "s", 1, CALC, reviewer="dee")
    q.add_note(store, "s", "hm", step=1, reviewer="eve")
    q.add_note(store, "s", "unsigned")
    feedback = q.get_trace(store, "s").feedback
    assert [f.reviewer for f in feedback] == ["Ana María", "bo", "cy", "dee", "eve", None]
    with store.reading() as db:
        assert db.scalars(select(FeedbackRow.reviewer).order_by(FeedbackRow.id)).all() == \
            ["Ana María", "bo", "cy", "dee", "eve", None]
    with pytest.raises(ValueError, match="reviewer name"):
        q.rate(store, "s", "up", reviewer="   ")
    with pytest.raises(ValueError, match="reviewer name"):
        q.correct_answer(store, "s", "5", reviewer="a\nb")
    with pytest.raises(ValueError, match="reviewer name"):
        q.correct_step(store, "s", 1, CALC, reviewer="x" * 65)
    with pytest.raises(ValueError, match="reviewer name"):
        q.add_note(store, "s", "n", reviewer="\x00")
    assert len(q.get_trace(store, "s").feedback) == 6  # nothing was added by the refused calls


@pytest.mark.parametrize("name, why", [
    (None, "needed"), ("", "needed"), ("  \t\n ", "needed"), (42, "needed"),
    ("x" * 65, "65 characters long; the limit is 64"),
    ("ana\nbo", "U\\+000A"), ("ana\x00", "U\\+0000"), ("a\x1b[31m", "U\\+001B"), ("a\x7f", "U\\+007F"),
    ("a\x85b", "U\\+0085"), ("ana\ud800", "U\\+D800"), ("a\u2028b", "U\\+2028"), ("a\uffffb", "U\\+FFFF"),
])
def test_check_reviewer_refuses_what_is_not_a_name(name, why):
    with pytest.raises(ValueError, match=why):
        rq.check_reviewer(name)


def test_check_reviewer_keeps_a_name_stripped():
    assert rq.check_reviewer("  Ana María  ") == "Ana María"
    assert rq.check_reviewer("x" * 64) == "x" * 64
    assert rq.check_reviewer(" 李 明 (QA) 😀 ") == "李 明 (QA) 😀"


def test_the_queue_refuses_a_bad_name_before_claiming(store):
    numbered(store, 1)
    for call in (lambda: rq.next_to_review(store, None, ""), lambda: rq.release(store, "a\x00")):
        with pytest.raises(ValueError, match="reviewer name"):
            call()
    assert claims(store) == {}


def test_a_name_of_64_characters_of_any_script_is_stored_whole(store):
    ids = numbered(store, 1)
    name = "é" * 32 + "漢" * 31 + "😀"
    assert given(store, name) == ids[0]
    q.rate(store, ids[0], "up", reviewer=name)
    assert claims(store) == {ids[0]: name}
    assert q.get_trace(store, ids[0]).feedback[0].reviewer == name


# --- at the same time ------------------------------------------------------------------------------


def review_all(store: Store, names: list[str]) -> list[tuple[str, str]]:
    """One thread per name, all at once: each takes the next session, rates it, and goes on until none is
    left. Returns (session id, who was given it) for every session given."""
    given_to: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(names))

    def reviewer(name: str) -> None:
        try:
            start.wait()
            while (found := rq.next_to_review(store, None, name)) is not None:
                given_to.append((found.id, name))
                q.rate(store, found.id, "up", reviewer=name)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=reviewer, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return given_to


def assert_each_given_once(given_to: list[tuple[str, str]], ids: list[str]) -> None:
    # A session's claim lasts until its reviewer rated it (each reviewer rates before asking again), so a
    # session given to two reviewers was held by both at once.
    twice = {s: [name for sid, name in given_to if sid == s] for s, n in Counter(s for s, _ in given_to).items() if n > 1}
    assert not twice, f"given to more than one reviewer while held: {twice}"
    assert sorted(s for s, _ in given_to) == ids  # and every session was reviewed


def test_reviewers_in_many_threads_never_get_the_same_session(store, path):
    ids = numbered(store, 40)
    names = [f"{person}-{k}" for person in ("ana", "bo") for k in range(4)]
    given_to = review_all(store, names)
    assert_each_given_once(given_to, ids)
    assert len({name for _, name in given_to}) > 1
    assert rq.progress(store, None) == rq.Progress(40, 40)


# A process of three reviewers (threads), started by the test once every process is ready.
PROCESS = """
import json, sys, threading
from taco_app.store import queries as q
from taco_app.store import review_queue as rq
from taco_app.store.db import Store
url, images, path, person = sys.argv[1:]
if path == "insert-or-update":
    rq._UPSERT = ()
store = Store(url, images)
given_to, errors = [], []
def reviewer(name):
    try:
        while (found := rq.next_to_review(store, None, name)) is not None:
            given_to.append((found.id, name))
            q.rate(store, found.id, "up", reviewer=name)
    except BaseException as err:
        errors.append(repr(err))
threads = [threading.Thread(target=reviewer, args=(f"{person}-{k}",)) for k in range(3)]
print("ready", flush=True)
sys.stdin.readline()
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"given": given_to, "errors": errors}))
store.close()
"""


def test_reviewers_in_two_processes_never_get_the_same_session(store, path, tmp_path):
    ids = numbered(store, 30)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [subprocess.Popen([sys.executable, "-c", PROCESS, store.url, str(tmp_path / "images"), path, person],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for person in ("ana", "bo")]
    for process in processes:
        assert process.stdout.readline() == "ready\n", process.stderr.read()
    for process in processes:  # both start together
        process.stdin.write("go\n")
        process.stdin.flush()
    given_to = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        result = json.loads(out)
        assert result["errors"] == []
        given_to += [tuple(pair) for pair in result["given"]]
    assert_each_given_once(given_to, ids)
