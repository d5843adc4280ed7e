"""Forks, step judgments and comparisons in the web app.

The side-by-side view and the fork form's checks are tested as functions (stored sessions, no
server); forking, judging, comparing and preferring through a real server on 127.0.0.1, driven by
``gradio_client`` as a page would: the fork streams, is stored with its lineage and opened; bad
forks are refused with one sentence and store nothing.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from taco_app.backends.replay import ReplayBackend
from taco_app.fork import fork, plan_fork
from taco_app.store import queries
from taco_app.store.schema import SessionRow
from taco_app.tools import default_tools

from .conftest import ROOT, run_loop

pytest.importorskip("gradio_client")
import gradio as gr  # noqa: E402
from gradio_client import Client  # noqa: E402

from taco_app.ui import compare, forking  # noqa: E402
from taco_app.ui.studio import MANUAL, Studio  # noqa: E402

from .ui_server import chat_text, running, submit_when_waiting  # noqa: E402

FUEL = ROOT / "assets" / "examples" / "fuel_prices.png"
FUEL_REPLAY = "Replay example: fuel_prices"
QUESTION = "How much gas can I buy with $50?"  # the fuel example's own question
CROP = json.dumps({"thought": "The prices are on the sign; I look closer.",
                   "actions": [{"name": "Crop", "arguments": {"image": "image-0", "bbox": [0.1, 0.05, 0.9, 0.7]}}]})
CALC = json.dumps({"thought": "Regular is $3.49 a gallon.",
                   "actions": [{"name": "Calculate", "arguments": {"expression": "50 / 3.49"}}]})
DONE = json.dumps({"thought": "About 14.33 gallons.",
                   "actions": [{"name": "Terminate", "arguments": {"answer": "About 14.33 gallons of regular gas"}}]})
PREMIUM = {"thought": "Premium is $3.89 a gallon.",
           "actions": [{"name": "Calculate", "arguments": {"expression": "50 / 3.89"}}]}


def stored(store, outputs=(CROP, CALC, DONE), question=QUESTION, image=None) -> str:
    """A finished session in ``store`` on scripted replies; its id."""
    picture = image if image is not None else Image.open(FUEL).convert("RGB")
    events = list(store.record(run_loop(question, [picture], ReplayBackend(list(outputs)), sink=store.images)))
    assert events[-1].status == "finished", events[-1]
    return events[-1].session_id


def forked(store, parent: str, step: int, **edit) -> str:
    plan = plan_fork(store, parent, step, **edit)
    events = list(store.record(fork(plan, ReplayBackend([DONE]), tools=default_tools(), sink=store.images)))
    return events[-1].session_id


def sessions(store) -> int:
    with store.reading() as db:
        return db.query(SessionRow).count()


# --- the view and the form's checks, as functions -----------------------------------------------


def test_the_side_by_side_view_aligns_steps_and_marks_the_first_difference(store):
    parent = stored(store)
    child = forked(store, parent, 2, thought=PREMIUM["thought"], action=PREMIUM["actions"][0])
    a, b = queries.get_trace(store, child), queries.get_trace(store, parent)
    assert compare.first_difference(a, b) == 2
    view = compare.comparison_html(a, b)
    rows = {k: view.split(f'id="compare-step-{k}"')[0].rsplit("<tr", 1)[1] for k in (1, 2, 3)}
    assert 'class=""' in rows[1] and "first-difference" in rows[2] and "differs" in rows[2]
    assert view.count("first difference") == 1 and "first difference" in view.split('id="compare-step-2"')[1][:200]
    # Step 1 (a Crop) has its overlay beside it on both sides; the answers and the lineage sit on top.
    step_1 = view.split('id="compare-step-1"')[1].split("</tr>")[0]
    assert step_1.count('<img alt="step 1 overlay" src="data:image/jpeg;base64,') == 2
    assert view.index("About 14.33 gallons") < view.index('id="compare-step-1"')
    assert f"fork of <code>{parent}</code> at step 2" in view
    assert "50 / 3.89" in view.split('id="compare-step-2"')[1] and "50 / 3.49" in view

    again = stored(store)  # the same script again: the same steps, observations and images
    assert compare.first_difference(queries.get_trace(store, again), b) is None
    assert "took the same steps" in compare.comparison_html(queries.get_trace(store, again), b)


def test_the_view_shows_model_text_as_text(store):
    hostile = json.dumps({"thought": '<img src=x onerror="alert(1)"> <script>x()</script>',
                          "actions": [{"name": "Terminate", "arguments": {"answer": "<b>42</b>"}}]})
    a = queries.get_trace(store, stored(store, [hostile], "What?"))
    b = queries.get_trace(store, stored(store, [DONE], "What?"))
    view = compare.comparison_html(a, b)
    assert "<script>" not in view and "<b>42</b>" not in view and "<img src=x" not in view
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in view and "&lt;b&gt;42&lt;/b&gt;" in view


def test_the_fork_form_reads_the_step_editor():
    shown = json.dumps(json.loads(CALC), indent=1)
    assert forking.edited_step(shown, shown, 2) == (None, None)  # unchanged: the model writes it again
    assert forking.edited_step("", shown, 2) == (None, None)
    assert forking.edited_step(json.dumps(PREMIUM), shown, 2) == (PREMIUM["thought"], PREMIUM["actions"][0])
    for text, says in (('{"thought": "x", "actions": [', "Step 2 is not valid JSON"),
                       ('["Calculate"]', "must be a CoTA step"),
                       ('{"thought": "x", "actions": []}', "exactly one action"),
                       ('{"thought": 3, "actions": [{"name": "Terminate", "arguments": {}}]}', "thought must be text")):
        with pytest.raises(gr.Error, match=says):
            forking.edited_step(text, shown, 2)


def test_a_fork_continues_the_example_of_its_own_question_else_the_person_writes(store):
    studio = Studio(store, probe=False)
    plan = plan_fork(store, stored(store), 2)
    assert forking.fork_backend(studio, FUEL_REPLAY, plan, edited=True)[:2] == (FUEL_REPLAY, 2)  # replies 1-2 had
    assert forking.fork_backend(studio, FUEL_REPLAY, plan, edited=False)[:2] == (FUEL_REPLAY, 1)
    label, _, words = forking.fork_backend(studio, "Replay example: astronaut", plan, edited=True)
    assert label == MANUAL and "write step 3" in words
    recorded = json.loads(FUEL.with_suffix(".replay.json").read_text())
    assert studio.backend(FUEL_REPLAY, replayed=2).outputs == recorded[2:]


# --- through the server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running(tmp_path_factory.mktemp("compare-home")) as (url, studio):
        yield url, studio


def test_a_fork_streams_is_stored_with_its_lineage_and_opened(server):
    url, studio = server
    parent = stored(studio.store)
    client = Client(url, verbose=False)
    job = client.submit(parent, 2, json.dumps(PREMIUM, indent=1), FUEL_REPLAY, api_name="/fork_session")
    updates = list(job)
    final = job.result()
    chats = [chat_text(u[1]) for u in updates if u[1]]
    assert len(chats) >= 3, "the fork streams, step by step"
    assert "50 / 3.89" not in chats[0] and "50 / 3.89" in chats[-1]
    child = final[0]
    assert child != parent and f"`{child}`" in final[-1] and "saved" in final[-1]
    row = queries.get_trace(studio.store, child)
    assert (row.session["parent_session_id"], row.session["fork_step"]) == (parent, 2)
    assert row.steps[1]["action"]["arguments"]["expression"] == "50 / 3.89"
    assert row.session["answer"] == "About 14.33 gallons of regular gas"  # the example's step 3, replayed
    assert f"**Forked from** `{parent}` at step 2" in final[7]  # opened: its lineage shown

    # The parent lists its fork, openable with one click (a row), and offers it to compare with.
    opened = client.predict(parent, api_name="/open_session")
    # Through the API: session, chat, slider, picture, caption, feedback, step, lineage, its table, compare with.
    family, choices = opened[8], opened[9]
    assert family["visible"] is True and family["value"]["data"][0][:3] == ["fork", 2, child]
    assert choices["value"] == child and "Forks:** 1" in opened[7]


def test_bad_forks_get_one_sentence_and_store_nothing(server):
    url, studio = server
    parent = stored(studio.store)
    lonely = stored(studio.store, image=Image.linear_gradient("L").convert("RGB"))  # its own image file
    queries.get_trace(studio.store, lonely).images[0].path.unlink()
    before = sessions(studio.store)
    client = Client(url, verbose=False)  # a new page: its slider goes to 11
    for args, says in (((parent, 2, '{"thought": "x", "actions": [{"name"'), "Step 2 is not valid JSON"),
                       ((parent, 9, ""), "step 9 is out of range: session .* has steps 1 to 3"),
                       ((parent, 2, '{"thought": "x", "actions": [{"name": "Calculator", "arguments": {}}]}'),
                        "not a valid CoTA step: unknown action 'Calculator'"),
                       ((lonely, 2, ""), "image-0 of session .* is missing from disk"),
                       (("", 1, ""), "Open a session first")):
        with pytest.raises(Exception, match=says):
            client.predict(*args, FUEL_REPLAY, api_name="/fork_session")
    with pytest.raises(Exception, match="is missing from disk"):
        client.predict(lonely, FUEL_REPLAY, api_name="/run_again")
    assert sessions(studio.store) == before


def test_run_again_in_manual_mode_when_no_model_can_answer_this_question(server):
    url, studio = server
    parent = stored(studio.store)
    client = Client(url, verbose=False)
    job = client.submit(parent, "Replay example: astronaut", api_name="/run_again")
    submit_when_waiting(client, "I read the sign myself.", "Terminate", '{"answer": "14 gallons"}')
    final = job.result()
    assert any("No model can run here for this question" in (u[-1] or "") for u in job.outputs())
    row = queries.get_trace(studio.store, final[0])
    assert (row.session["parent_session_id"], row.session["fork_step"]) == (parent, 1)
    assert row.session["answer"] == "14 gallons" and len(row.steps) == 1
    assert f"Running `{parent}` again" in final[-1]


def test_step_judgments_say_whose_fault_a_bad_step_was(server):
    url, studio = server
    session = stored(studio.store)
    client = Client(url, verbose=False)
    client.predict(session, 1, api_name="/bad_step_tool")
    client.predict(session, 2, api_name="/bad_step_model")
    summary = client.predict(session, 3, api_name="/good_step")
    trace = queries.get_trace(studio.store, session)
    assert trace.step_ratings == {1: "down", 2: "down", 3: "up"} and trace.step_blame == {1: "tool", 2: "model"}
    assert "step 1: bad: the tool's, step 2: bad: the model's, step 3: good" in summary
    client.predict(session, 1, api_name="/good_step")  # judged again: the blame goes with the old rating
    assert queries.get_trace(studio.store, session).step_blame == {2: "model"}
    with pytest.raises(Exception, match="Open a session first"):
        client.predict("", 1, api_name="/bad_step_tool")


def test_compare_two_sessions_and_record_preferences(server):
    url, studio = server
    parent = stored(studio.store)
    child = forked(studio.store, parent, 2, thought=PREMIUM["thought"], action=PREMIUM["actions"][0])
    client = Client(url, verbose=False)
    view, verdicts = client.predict(child, parent, api_name="/compare_sessions")
    assert 'class="differs first-difference" id="compare-step-2"' in view and "No preference recorded" in verdicts
    verdicts, reason = client.predict(child, parent, "premium was asked for", api_name="/prefer_a")
    assert "A is better — premium was asked for" in verdicts and reason == ""
    verdicts, _ = client.predict(child, parent, "", api_name="/prefer_tie")
    assert "a tie" in verdicts
    verdicts, _ = client.predict(child, parent, "", api_name="/prefer_b")
    found = queries.preferences(studio.store, child)
    assert [(p.chosen_id, p.rejected_id, p.tie, p.reason) for p in found] == [
        (child, parent, False, "premium was asked for"), (child, parent, True, None), (parent, child, False, None)]
    assert verdicts.count("\n- ") == 3

    other_question = stored(studio.store, question="How much is premium?")
    other_image = stored(studio.store, image=Image.new("RGB", (64, 48), "navy"))
    for a, b, says in ((child, other_question, "answer different questions"),
                       (child, other_image, "were given different images"),
                       (child, child, "was given twice"), (child, "nope", "no session 'nope'"),
                       ("", parent, "Give two session ids")):
        with pytest.raises(Exception, match=says):
            client.predict(a, b, api_name="/compare_sessions")
        with pytest.raises(Exception, match=says):
            client.predict(a, b, "", api_name="/prefer_a")
    assert len(queries.preferences(studio.store, child)) == 3
