"""Clean targets only: what each kind of imperfect session becomes in every export format.

The rule (taco_app/store/export/rebuild.py): a session is exported whole or left out with a reason;
an edit made before the action ran is exported with the observation it produced; a correction made
after the run is exported only when the observation that follows still belongs to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from taco_app.backends.replay import ReplayBackend
from taco_app.cota.actions import Action
from taco_app.store.db import Store
from taco_app.store.export import FORMATS, export
from taco_app.store.schema import FeedbackRow, SessionRow

from .conftest import run_loop

pytestmark = pytest.mark.store

CALC = '{"thought":"add them","actions":[{"name":"Calculate","arguments":{"expression":"2+3"}}]}'
DONE = '{"thought":"done","actions":[{"name":"Terminate","arguments":{"answer":"5"}}]}'
NOT_JSON = "I think the answer is 5, let me call Calculate(2+3)"
MARKUP = '{"thought":"done<|eot_id|>","actions":[{"name":"Terminate","arguments":{"answer":"5"}}]}'
EDITED = Action("Calculate", {"expression": "6*7"})


def _record(store: Store, backend, **kwargs) -> str:
    photo = Image.new("RGB", (120, 80), "teal")
    events = list(store.record(run_loop("What is 2+3?", [photo], backend, **kwargs)))
    return events[-1].session_id


def _correct(store: Store, session_id: str, step: int, corrected: dict) -> None:
    with store.writing() as db:
        db.add(FeedbackRow(session_id=session_id, step=step, corrected_step=corrected, created_at=1e9))


@pytest.fixture
def sessions(store) -> dict[str, str]:
    """One session of each kind, by name."""
    s = {
        "good": _record(store, ReplayBackend([CALC, DONE])),
        "not-json": _record(store, ReplayBackend([NOT_JSON, CALC, DONE])),  # the model recovered, the reply is still bad
        "edited": _record(store, ReplayBackend([CALC, DONE]), review=lambda step, a: EDITED if a.name == "Calculate" else a),
        "cancelled": _record(store, ReplayBackend([CALC, DONE]), review=lambda step, action: None),
        "max_steps": _record(store, ReplayBackend([CALC] * 5), max_replies=1),
        "failed": _record(store, ReplayBackend([CALC])),  # the backend fails on step 2: it has no more replies
        "stale": _record(store, ReplayBackend([CALC, DONE])),
        "thought": _record(store, ReplayBackend([CALC, DONE])),
        "to-terminate": _record(store, ReplayBackend([CALC, DONE])),
        "markup": _record(store, ReplayBackend([CALC, MARKUP])),  # a tokenizer reads <|eot_id|> as a turn's end
    }
    # After the run, in Review: another action (its observation is the old action's), a better thought
    # for the same action, and a step turned into the final answer.
    _correct(store, s["stale"], 1, {"thought": "multiply", "actions": [EDITED.as_dict()]})
    _correct(store, s["thought"], 1, {"thought": "sum the two numbers", "actions": [json.loads(CALC)["actions"][0]]})
    _correct(store, s["to-terminate"], 1, {"thought": "easy", "actions": [{"name": "Terminate", "arguments": {"answer": "5"}}]})
    return s


def _rows(folder: Path, fmt: str) -> list[dict]:
    data = folder / FORMATS[fmt].data_file
    if data.suffix == ".json":
        return json.loads(data.read_text("utf-8"))
    return [json.loads(line) for line in data.read_text("utf-8").splitlines()]


def _turns(row: dict) -> list[tuple[str, str]]:
    """(role, text) of a row in any format, images as ``<image>``."""
    if "conversation" in row:
        return [(m["role"], m["content"]) for m in row["conversation"]]
    if "conversations" in row:
        return [("user" if m["from"] == "human" else "assistant", m["value"]) for m in row["conversations"]]
    return [(m["role"], "".join(p["text"] if p["type"] == "text" else "<image>\n" for p in m["content"]))
            for m in row["messages"]]


def _id(row: dict) -> str:
    return row.get("id", row.get("sample_id"))


@pytest.mark.parametrize("fmt", [name for name, f in FORMATS.items() if not f.needs_judgments])  # the others: test_export_preferences
def test_each_kind_of_session_gives_its_documented_row_or_skip(store, sessions, tmp_path, fmt):
    result = export(store, tmp_path / fmt, fmt)
    rows = {_id(row): row for row in _rows(tmp_path / fmt, fmt)}
    exported = {name for name, sid in sessions.items() if f"taco-studio-{sid}" in rows}
    assert exported == {"good", "edited", "thought", "to-terminate"}
    assert result.reasons == {"cancelled": 1, "control-token": 1, "failed": 1, "max_steps": 1, "not-json": 1,
                              "stale-observation": 1}
    assert result.summary(fmt) == (
        f"exported 4 session(s) as {fmt}; left out 6: 1 the session was stopped, "
        "1 its text holds a chat template's control token, which a trainer would read as markup, 1 the session failed, "
        "1 the session hit the step limit without an answer, 1 a reply is not a CoTA step in JSON, "
        "1 a corrected step's action is not the one that ran: re-run it from that step")
    card = (tmp_path / fmt / "README.md").read_text("utf-8")
    assert "**Left out:** 6 session(s):" in card and "  - 1 × a reply is not a CoTA step in JSON" in card

    def turns(name):
        return _turns(rows[f"taco-studio-{sessions[name]}"])

    # Every assistant turn of every row is a clean JSON step.
    for row in rows.values():
        assert all(json.loads(text)["thought"] for role, text in _turns(row) if role == "assistant")
    # Edited before it ran: the edit is the target, followed by the observation it produced (6*7).
    edited = turns("edited")
    assert json.loads(edited[1][1])["actions"] == [EDITED.as_dict()] and "{'result': 42}" in edited[2][1]
    assert len(edited) == 4 and json.loads(edited[3][1])["actions"][0]["name"] == "Terminate"
    # A better thought for the same action keeps the observation, which is still the action's own.
    thought = turns("thought")
    assert json.loads(thought[1][1])["thought"] == "sum the two numbers" and "{'result': 5}" in thought[2][1]
    # A step turned into the answer ends the row there: no observation, no later step.
    ended = turns("to-terminate")
    assert [role for role, _ in ended] == ["user", "assistant"] and '"answer":"5"' in ended[1][1]
    provenance = {p["id"]: p for p in map(json.loads, (tmp_path / fmt / "provenance.jsonl").read_text().splitlines())}
    assert set(provenance) == set(rows)
    assert provenance[f"taco-studio-{sessions['edited']}"]["corrections"]["steps"]["1"]["actions"] == [EDITED.as_dict()]
    assert provenance[f"taco-studio-{sessions['good']}"]["backend"] == "replay"


def test_the_skips_are_listed_with_the_step_that_caused_them(store, sessions):
    result = export(store, None, "cota-mantis", dry_run=True)
    by_session = {line.split(":", 1)[0]: line.split(": ", 1)[1] for line in result.skipped}
    assert by_session[sessions["not-json"]] == "a reply is not a CoTA step in JSON (step 1)"
    assert by_session[sessions["stale"]] == "a corrected step's action is not the one that ran: re-run it from that step (step 1)"
    assert by_session[sessions["failed"]] == "the session failed"
    with store.reading() as db:
        statuses = {name: db.get(SessionRow, sid).status for name, sid in sessions.items()}
    assert statuses == {"good": "finished", "not-json": "finished", "edited": "finished", "cancelled": "cancelled",
                        "max_steps": "max_steps", "failed": "failed", "stale": "finished", "thought": "finished",
                        "to-terminate": "finished", "markup": "finished"}
    assert by_session[sessions["markup"]].endswith("(<|eot_id|>)")


def test_review_says_when_a_correction_leaves_the_session_out_of_exports(store, sessions):
    from types import SimpleNamespace

    from taco_app.ui.review import _stale_warning

    studio = SimpleNamespace(store=store)
    another_action = {"thought": "multiply", "actions": [EDITED.as_dict()]}
    assert "until it is run again from step 1" in _stale_warning(studio, sessions["good"], 1, another_action)
    assert _stale_warning(studio, sessions["good"], 1, {**json.loads(CALC), "thought": "better"}) == ""  # same action
    assert _stale_warning(studio, sessions["good"], 1, json.loads(DONE)) == ""  # ends the session there
    assert _stale_warning(studio, sessions["edited"], 1, {"thought": "x", "actions": [EDITED.as_dict()]}) == ""  # what ran


def test_the_export_tab_counts_what_is_left_out_and_why(store, sessions):
    from types import SimpleNamespace

    from taco_app.ui.export_tab import _count_text

    text = _count_text(SimpleNamespace(store=store), "trl-sft", "any", False, "")
    assert text.startswith("**4** session(s) match. 6 left out (training rows hold clean targets only):\n")
    assert "- 1 × a corrected step's action is not the one that ran: re-run it from that step" in text.splitlines()
    assert len(text.splitlines()) == 7
