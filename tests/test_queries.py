"""Review queries and feedback: filters, paging, a trace, the dashboard, and validated corrections."""

from __future__ import annotations

import datetime as dt

import pytest
from PIL import Image
from sqlalchemy import update

from taco_app.backends import ReplayBackend
from taco_app.store import queries as q
from taco_app.store.db import Store
from taco_app.store.schema import SessionRow

from .conftest import run_loop

pytestmark = pytest.mark.store

CROP = '{"thought":"crop","actions":[{"name":"Crop","arguments":{"image":"image-0","bbox":[0.2,0.2,0.6,0.6]}}]}'
CALC = '{"thought":"add","actions":[{"name":"Calculate","arguments":{"expression":"2+2"}}]}'


def done(answer: str) -> str:
    return '{"thought":"done","actions":[{"name":"Terminate","arguments":{"answer":"%s"}}]}' % answer


@pytest.fixture
def store(taco_home) -> Store:
    return Store.open()


def make(store: Store, outputs, question="q", model="m1", created_at: float | None = None) -> str:
    """Record one session through the real step loop; returns its id."""
    photo = Image.new("RGB", (64, 48), "teal")
    events = list(store.record(run_loop(question, [photo], ReplayBackend(outputs, model_id=model))))
    session_id = events[-1].session_id
    if created_at is not None:  # the step loop stamps "now"; date-range tests need other days
        with store.writing() as db:
            db.execute(update(SessionRow).where(SessionRow.id == session_id).values(created_at=created_at))
    return session_id


@pytest.fixture
def sample(store):
    """Four sessions: two finished with Calculate, one with Crop on another model, one failed."""
    day = dt.datetime(2024, 5, 10, 12).timestamp()
    ids = {
        "calc": make(store, [CALC, done("four")], "What is 2+2?", created_at=day),
        "crop": make(store, [CROP, done("A Teal Square")], "Describe the photo", model="m2", created_at=day + 86400),
        "calc2": make(store, [CALC, CALC, done("8")], "Double it", created_at=day + 2 * 86400),
        "failed": make(store, [CALC], "never answered", created_at=day + 3 * 86400),  # replay runs out
    }
    return ids


def ids_of(store, **kwargs) -> list[str]:
    return [item.id for item in q.list_sessions(store, q.SessionFilter(**kwargs)).items]


def test_unfiltered_newest_first_with_summaries(store, sample):
    page = q.list_sessions(store, q.SessionFilter())
    assert page.total == 4 and page.pages == 1
    assert [i.id for i in page.items] == [sample["failed"], sample["calc2"], sample["crop"], sample["calc"]]
    calc2 = page.items[1]
    assert calc2.status == "finished" and calc2.answer == "8" and calc2.steps == 3 and calc2.model == "m1"
    assert page.items[0].status == "failed" and page.items[0].answer is None


def test_text_matches_question_and_answer_case_insensitively(store, sample):
    assert ids_of(store, text="2+2") == [sample["calc"]]
    assert ids_of(store, text="teal square") == [sample["crop"]]  # only in the answer
    assert ids_of(store, text="DOUBLE") == [sample["calc2"]]
    assert ids_of(store, text="%") == []  # LIKE wildcards are escaped


def test_date_range(store, sample):
    assert ids_of(store, since=dt.date(2024, 5, 11), until=dt.date(2024, 5, 12)) == [sample["calc2"], sample["crop"]]
    since = dt.datetime(2024, 5, 12, 12).timestamp()
    assert ids_of(store, since=since) == [sample["failed"], sample["calc2"]]
    assert ids_of(store, until=dt.datetime(2024, 5, 10, 12).timestamp()) == []  # until is exclusive


def test_model_and_status(store, sample):
    assert ids_of(store, model="m2") == [sample["crop"]]
    assert ids_of(store, status="failed") == [sample["failed"]]
    assert ids_of(store, status="finished", model="m1") == [sample["calc2"], sample["calc"]]


def test_tool_used(store, sample):
    assert ids_of(store, tool="Crop") == [sample["crop"]]
    assert ids_of(store, tool="Calculate") == [sample["failed"], sample["calc2"], sample["calc"]]
    assert ids_of(store, tool="OCR") == []


def test_rating_latest_wins(store, sample):
    q.rate(store, sample["calc"], "up")
    q.rate(store, sample["crop"], "up")
    q.rate(store, sample["crop"], "down")  # changed their mind: down counts
    q.rate(store, sample["calc2"], "up", step=1)  # a step rating is not the session's
    assert ids_of(store, rating="up") == [sample["calc"]]
    assert ids_of(store, rating="down") == [sample["crop"]]
    summary = {i.id: i.rating for i in q.list_sessions(store).items}
    assert summary[sample["crop"]] == "down" and summary[sample["calc2"]] is None


def test_paging(store):
    for n in range(7):
        make(store, [done(str(n))], f"question {n}", created_at=1_700_000_000 + n)
    first = q.list_sessions(store, q.SessionFilter(page_size=3))
    last = q.list_sessions(store, q.SessionFilter(page=3, page_size=3))
    assert first.total == 7 and first.pages == 3 and [i.answer for i in first.items] == ["6", "5", "4"]
    assert [i.answer for i in last.items] == ["0"] and last.total == 7
    assert q.list_sessions(store, q.SessionFilter(page_size=10_000)).page_size == q.MAX_PAGE_SIZE


def test_trace(store, sample):
    q.rate(store, sample["crop"], "up")
    q.add_note(store, sample["crop"], "good crop", step=1)
    trace = q.get_trace(store, sample["crop"])
    assert trace.session["question"] == "Describe the photo" and trace.rating == "up"
    assert [s["index"] for s in trace.steps] == [1, 2]
    assert trace.steps[0]["action"]["name"] == "Crop" and trace.steps[0]["image_ids"] == ["image-1"]
    assert [i.image_id for i in trace.images] == ["image-0", "image-1"]
    assert all(i.path.is_absolute() and i.path.is_file() for i in trace.images)
    assert [(f.step, f.note) for f in trace.feedback if f.note] == [(1, "good crop")]
    assert q.get_trace(store, "nope") is None


def test_dashboard(store, sample):
    q.rate(store, sample["calc"], "up")
    q.rate(store, sample["calc2"], "up")
    q.rate(store, sample["crop"], "down")
    board = q.dashboard(store)
    assert board["total_sessions"] == 4 and board["total_steps"] == 2 + 2 + 3 + 1
    assert board["by_status"] == {"finished": 3, "failed": 1}
    assert board["by_model"] == {"m1": 3, "m2": 1}
    assert board["thumbs_up"] == 2 and board["thumbs_down"] == 1
    assert board["top_actions"] == [("Calculate", 4), ("Terminate", 3), ("Crop", 1)]


def test_correct_step_validates(store, sample):
    sid = sample["calc"]
    with pytest.raises(ValueError, match=r"(?s)Hint: a step is .*thought"):
        q.correct_step(store, sid, 1, "not json at all")
    with pytest.raises(ValueError, match="'actions'"):
        q.correct_step(store, sid, 1, '{"thought": "x"}')
    with pytest.raises(ValueError, match="unknown action 'Teleport'"):
        q.correct_step(store, sid, 1, {"thought": "x", "actions": [{"name": "Teleport", "arguments": {}}]})
    stored = q.correct_step(store, sid, 1, '```json\n{"thought":"mul","actions":[{"name":"Calculate","arguments":{"expression":"2*2"}}]}\n```')
    assert stored == {"thought": "mul", "actions": [{"name": "Calculate", "arguments": {"expression": "2*2"}}]}
    q.correct_step(store, sid, 2, {"thought": "nothing to do", "actions": []})
    trace = q.get_trace(store, sid)
    assert trace.corrected_steps == {1: stored, 2: {"thought": "nothing to do", "actions": []}}


def test_feedback_refusals_and_history(store, sample):
    sid = sample["calc"]
    with pytest.raises(ValueError, match="rating"):
        q.rate(store, sid, "meh")
    with pytest.raises(ValueError, match="no session"):
        q.rate(store, "missing", "up")
    with pytest.raises(ValueError, match="no session"):
        q.add_note(store, sid, "x", step=99)
    with pytest.raises(ValueError, match="no session"):
        q.correct_answer(store, "missing", "5")
    q.correct_answer(store, sid, "four")
    q.correct_answer(store, sid, "4")
    trace = q.get_trace(store, sid)
    assert trace.corrected_answer == "4"  # the latest wins
    assert [f.corrected_answer for f in trace.feedback if f.corrected_answer] == ["four", "4"]  # history kept
    with pytest.raises(ValueError, match="rating"):
        q.list_sessions(store, q.SessionFilter(rating="sideways"))


@pytest.mark.store
def test_a_page_past_any_database_integer_and_a_huge_search_are_refused_in_words(store):
    with pytest.raises(ValueError, match="past the last possible page"):
        q.list_sessions(store, q.SessionFilter(page=10**20))
    with pytest.raises(ValueError, match="the limit is 1,000"):
        q.list_sessions(store, q.SessionFilter(text="x" * 1_000_000))
    assert q.list_sessions(store, q.SessionFilter(page=q.MAX_PAGE)).items == []
