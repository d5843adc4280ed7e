"""A person in the loop: reviewing (and editing) each action before it runs, and manual mode."""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest
from PIL import Image

from taco_app.cota.backend import BackendError
from taco_app.backends.manual import ManualBackend, compose_step
from taco_app.backends.replay import ReplayBackend
from taco_app.cota import events as ev
from taco_app.cota.actions import Action, step_text
from taco_app.store import queries
from taco_app.store.export import export

from .conftest import ROOT, of_kind, run_loop, run_session

CALC = '{"thought":"add them","actions":[{"name":"Calculate","arguments":{"expression":"2+3"}}]}'
DONE = '{"thought":"done","actions":[{"name":"Terminate","arguments":{"answer":"5"}}]}'
EDITED_CALC = Action("Calculate", {"expression": "6*7"})


@pytest.fixture
def photo():
    return Image.new("RGB", (120, 80), "teal")


class Spy(ReplayBackend):
    """Replays outputs and keeps the prompt text of every step."""

    def __init__(self, outputs):
        super().__init__(outputs)
        self.prompts: list[str] = []

    def stream(self, prompt, images):
        self.prompts.append(prompt.user)
        return super().stream(prompt, images)


def edit_calc(step, action):
    return EDITED_CALC if action.name == "Calculate" else action


def comparable(events):
    """What a session did, without its ids and timings."""
    out = []
    for event in events:
        data = ev.to_dict(event)
        for key in ("session_id", "started_at", "total_s", "generation_s", "tool_s", "path", "images", "sha256"):
            data.pop(key, None)
        out.append(data)
    return out


# --- review ---------------------------------------------------------------------------------------


def test_approving_unchanged_is_the_same_session(photo):
    seen = []

    def approve(step, action):
        seen.append((step, action))
        return action

    plain, reviewed = Spy([CALC, DONE]), Spy([CALC, DONE])
    without = list(run_loop("q", [photo], plain))
    with_review = list(run_loop("q", [photo], reviewed, review=approve))
    assert seen == [(1, Action("Calculate", {"expression": "2+3"})),
                    (2, Action("Terminate", {"answer": "5"}))]  # Terminate is reviewed too
    reviews = of_kind(with_review, ev.ActionReview)
    assert [(r.step, r.action.name) for r in reviews] == [(1, "Calculate"), (2, "Terminate")]
    assert not of_kind(with_review, ev.ActionEdited)
    assert comparable([e for e in with_review if not isinstance(e, ev.ActionReview)]) == comparable(without)
    assert reviewed.prompts == plain.prompts


def test_review_comes_after_the_parsed_action_and_before_the_tool(photo):
    kinds = [e.kind for e in run_session([CALC, DONE], [photo], review=lambda s, a: a) if e.kind != "thought_delta"]
    assert kinds[:6] == ["session_started", "step_started", "action_parsed", "action_review",
                         "tool_started", "observation"]


def test_an_edited_action_is_what_runs_and_what_the_model_reads(photo):
    backend = Spy([CALC, DONE])
    events = list(run_loop("q", [photo], backend, review=edit_calc))
    edited = of_kind(events, ev.ActionEdited)
    assert len(edited) == 1
    assert edited[0].step == 1 and edited[0].original == Action("Calculate", {"expression": "2+3"})
    assert edited[0].action == EDITED_CALC
    expected_text = '{"thought":"add them","actions":[{"name":"Calculate","arguments":{"expression":"6*7"}}]}'
    assert edited[0].text == expected_text
    assert of_kind(events, ev.ActionParsed)[0].raw == CALC  # the model's own output is kept
    assert of_kind(events, ev.ToolStarted)[0].action == EDITED_CALC
    observation = of_kind(events, ev.Observation)[0]
    assert observation.action == EDITED_CALC and observation.output == {"result": 42}
    assert observation.observation.startswith("OBSERVATION:\n{'result': 42}")
    history = backend.prompts[1]
    assert expected_text in history and CALC not in history
    assert "{'result': 42}" in history
    assert events[-1].status == "finished"


def test_editing_the_final_answer(photo):
    def fix_answer(step, action):
        if action.name == "Terminate":
            action.arguments["answer"] = "five"  # editing the copy in place is allowed
        return action

    events = run_session([DONE], [photo], review=fix_answer)
    assert of_kind(events, ev.ActionEdited)[0].original.arguments["answer"] == "5"
    assert of_kind(events, ev.FinalAnswer)[0].answer == "five"
    assert events[-1].status == "finished" and events[-1].answer == "five"


def test_editing_into_terminate_ends_the_session(photo):
    stop_here = {"name": "Terminate", "arguments": {"answer": "stop here"}}
    events = run_session([CALC, CALC], [photo], review=lambda s, a: stop_here)
    assert not of_kind(events, ev.ToolStarted)
    assert events[-1].status == "finished" and events[-1].answer == "stop here" and events[-1].steps == 1


def test_review_returning_none_stops_the_session(photo):
    events = run_session([CALC, DONE], [photo], review=lambda s, a: None)
    assert not of_kind(events, ev.ToolStarted)
    final = events[-1]
    assert final.status == "cancelled" and final.steps == 1
    assert final.message == "Stopped at the review of step 1."


def test_cancel_while_reviewing_stops_even_if_the_review_returns_an_action(photo):
    cancel = threading.Event()

    def review(step, action):
        cancel.set()  # the person pressed Stop while this was on screen
        return action

    events = run_session([CALC, DONE], [photo], review=review, cancel=cancel)
    assert not of_kind(events, ev.ToolStarted)
    assert events[-1].status == "cancelled" and events[-1].message == "Stopped at the review of step 1."


@pytest.mark.parametrize("edited, says", [
    ({"name": "Teleport", "arguments": {"where": "moon"}},
     "Execution failed with <class 'ValueError'>: Unknown action 'Teleport'"),
    ({"name": "Calculate", "arguments": {"expr": "1+1"}},
     "Execution failed with <class 'TypeError'>: Calculate is missing"),
    ({"name": "Calculate", "arguments": "1+1"}, "Execution failed with <class 'TypeError'>: an action is"),
    ({"arguments": {}}, "Execution failed with <class 'TypeError'>: an action is"),
])
def test_a_wrong_edit_is_a_failed_execution_and_the_session_goes_on(photo, edited, says):
    events = run_session([CALC, DONE], [photo], review=lambda s, a: edited if a.name == "Calculate" else a)
    observation = of_kind(events, ev.Observation)[0]
    assert observation.observation.startswith(says), observation.observation
    assert observation.output is None and observation.error
    assert events[-1].status == "finished" and events[-1].answer == "5"
    for event in events:  # whatever the person typed, the events stay serialisable
        assert ev.from_dict(json.loads(ev.to_json(event))) == ev.from_dict(ev.to_dict(event))


def test_review_is_not_asked_without_an_action(photo):
    asked = []
    events = run_session(["not json", '{"thought":"hmm","actions":[]}', DONE], [photo],
                         review=lambda s, a: asked.append(s) or a)
    assert asked == [3] and events[-1].status == "finished"


def test_a_review_that_returns_nonsense_is_a_program_error(photo):
    with pytest.raises(TypeError, match="review must return an action dict or None"):
        run_session([CALC, DONE], [photo], review=lambda s, a: json.dumps(a.as_dict()))


def test_review_events_round_trip_json(photo):
    events = run_session([CALC, DONE], [photo], review=edit_calc)
    new = [e for e in events if isinstance(e, (ev.ActionReview, ev.ActionEdited))]
    assert [e.kind for e in new] == ["action_review", "action_edited", "action_review"]
    for event in new:
        assert ev.from_dict(json.loads(ev.to_json(event))) == event


# --- the store -----------------------------------------------------------------------------------


def edited_session(store, photo):
    return list(store.record(run_loop("q", [photo], ReplayBackend([CALC, DONE]), review=edit_calc)))


@pytest.mark.store
def test_an_edited_session_is_stored(store, photo):
    events = edited_session(store, photo)
    trace = queries.get_trace(store, events[-1].session_id)
    assert trace.session["status"] == "finished" and trace.session["answer"] == "5"
    first = trace.steps[0]
    assert first["raw"] == CALC  # the model's own output
    assert first["observation"].startswith("OBSERVATION:\n{'result': 42}")  # what the edited action gave


@pytest.mark.store
def test_the_stored_trace_shows_the_edit(store, photo, tmp_path):
    events = edited_session(store, photo)
    trace = queries.get_trace(store, events[-1].session_id)
    first = trace.steps[0]
    assert first["action"] == EDITED_CALC.as_dict() and first["action_name"] == "Calculate"  # what ran
    assert first["raw"] == CALC
    assert trace.corrected_steps[1] == {"thought": "add them", "actions": [EDITED_CALC.as_dict()]}
    assert trace.feedback[0].note == "edited at review, before it ran"
    # exported training data holds the step that produced the observation, as the model read it
    export(store, tmp_path / "out", "cota-mantis")
    row = json.loads((tmp_path / "out" / "data.jsonl").read_text("utf-8"))
    assert row["conversation"][1]["content"] == of_kind(events, ev.ActionEdited)[0].text


# --- manual mode ---------------------------------------------------------------------------------


class Background:
    """A session running in a thread, its events arriving on a queue, as the UI consumes them."""

    def __init__(self, *args, **kwargs):
        self.events: queue.Queue = queue.Queue()
        self.all: list[ev.Event] = []
        self.thread = threading.Thread(target=self._run, args=args, kwargs=kwargs, daemon=True)
        self.thread.start()

    def _run(self, *args, **kwargs):
        try:
            for event in run_loop(*args, **kwargs):
                self.events.put(event)
        except Exception as err:  # surfaced by next()
            self.events.put(err)

    def next(self, cls, timeout=60.0) -> ev.Event:
        """The next event of a kind (the events before it are kept in ``all``)."""
        while True:
            event = self.events.get(timeout=timeout)
            if isinstance(event, BaseException):
                raise event
            self.all.append(event)
            if isinstance(event, cls):
                return event

    def join(self, timeout=5.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the session thread did not end"
        while not self.events.empty():
            self.next(ev.Event, timeout=0)


def manual_session(backend, photo, **kwargs):
    return Background("How much is 6 times 7?", [photo], backend, cancel=backend.cancelled, **kwargs)


def wait_until_waiting(backend, timeout=5.0):
    end = time.monotonic() + timeout
    while not backend.waiting:
        assert time.monotonic() < end, "the session never waited for a step"
        time.sleep(0.005)


def test_manual_mode_runs_what_the_person_writes(photo):
    backend = ManualBackend()
    session = manual_session(backend, photo)
    session.next(ev.StepStarted)
    backend.submit(compose_step("I multiply.", "Calculate", '{"expression": "6*7"}'))
    observation = session.next(ev.Observation)
    assert observation.output == {"result": 42}
    session.next(ev.StepStarted)
    assert "{'result': 42}" in backend.prompt.user  # the person sees what a model would read
    backend.submit(compose_step("That is it.", "Terminate", {"answer": "42"}))
    final = session.next(ev.Finished)
    session.join()
    assert final.status == "finished" and final.answer == "42" and final.steps == 2
    started = session.all[0]
    assert started.backend == "manual" and started.model is None and started.family == "mantis"


@pytest.mark.slow
def test_manual_mode_with_live_ocr_on_the_example_sign():
    backend = ManualBackend()
    sign = ROOT / "assets" / "examples" / "fuel_prices.png"
    session = Background("How much gas can I buy with $50?", [sign], backend, cancel=backend.cancelled)
    session.next(ev.StepStarted)
    backend.submit(compose_step("I read the sign first.", "OCR", '{"image": "image-0"}'))
    observation = session.next(ev.Observation, timeout=300)  # a cold OCR model takes seconds to load
    assert observation.error is None, observation.observation
    assert "3.49" in observation.output["text"] and "Regular" in observation.output["text"]
    session.next(ev.StepStarted)
    backend.submit(compose_step("Regular is $3.49 a gallon.", "Terminate", '{"answer": "About 14.33 gallons"}'))
    final = session.next(ev.Finished)
    session.join()
    assert final.status == "finished" and final.answer == "About 14.33 gallons"


def test_manual_steps_are_parsed_like_a_models(photo):
    backend = ManualBackend()
    session = manual_session(backend, photo)
    backend.submit("I am not JSON")  # sent early: it waits for its turn
    error = session.next(ev.ParseError)
    assert "Please format the output to a strict JSON format" in error.observation
    backend.submit(step_text("ok", Action("Terminate", {"answer": "fine"})))
    final = session.next(ev.Finished)
    session.join()
    assert final.answer == "fine"


def test_manual_cancel_while_waiting_ends_promptly(photo):
    backend = ManualBackend()
    session = manual_session(backend, photo)
    wait_until_waiting(backend)
    started = time.perf_counter()
    backend.cancel()
    final = session.next(ev.Finished, timeout=1.0)
    elapsed = time.perf_counter() - started
    session.join(1.0)
    assert final.status == "cancelled" and elapsed < 1.0
    assert not of_kind(session.all, ev.Error)


def test_setting_the_shared_stop_event_alone_ends_the_wait(photo):
    stop = threading.Event()
    backend = ManualBackend(cancel=stop)
    session = Background("q", [photo], backend, cancel=stop)
    wait_until_waiting(backend)
    started = time.perf_counter()
    stop.set()  # the Stop button of a UI that does not know about the backend
    final = session.next(ev.Finished, timeout=1.0)
    session.join(1.0)
    assert final.status == "cancelled" and time.perf_counter() - started < 1.0


def test_manual_cancel_without_a_shared_event_fails_clearly(photo):
    backend = ManualBackend()
    session = Background("q", [photo], backend)  # the run has its own cancel event
    wait_until_waiting(backend)
    backend.close()
    final = session.next(ev.Finished, timeout=1.0)
    session.join(1.0)
    assert final.status == "failed" and final.message == "manual mode was stopped"


def test_manual_wait_limit(photo):
    events = list(run_loop("q", [photo], ManualBackend(wait_s=0.05)))
    assert events[-1].status == "failed" and "no step was submitted within 0.05 s" in events[-1].message


def test_manual_stream_raises_once_cancelled():
    backend = ManualBackend()
    backend.cancel()
    with pytest.raises(BackendError, match="stopped"):
        list(backend.stream(None, []))
    with pytest.raises(TypeError):
        backend.submit({"thought": "not text"})


def test_manual_mode_with_review(photo):
    backend = ManualBackend()
    session = manual_session(backend, photo, review=edit_calc)
    backend.submit(compose_step("add", "Calculate", {"expression": "1+1"}))
    observation = session.next(ev.Observation)
    assert observation.output == {"result": 42}
    backend.submit(compose_step("done", "Terminate", {"answer": "42"}))
    assert session.next(ev.Finished).status == "finished"
    session.join()


# --- compose_step --------------------------------------------------------------------------------


def test_compose_step_writes_compact_taco_json():
    text = compose_step("Le prix est 3,49 €.", " OCR ", '{"image": "image-0"}')
    assert text == '{"thought":"Le prix est 3,49 €.","actions":[{"name":"OCR","arguments":{"image":"image-0"}}]}'
    terminate = compose_step("t", "Terminate", {"answer": 5})
    assert terminate == '{"thought":"t","actions":[{"name":"Terminate","arguments":{"answer":5}}]}'
    empty = json.loads(compose_step("t", "GetObjects", "  "))
    assert empty == {"thought": "t", "actions": [{"name": "GetObjects", "arguments": {}}]}


@pytest.mark.parametrize("name, arguments, says", [
    ("OCR", '{"image": image-0}', "the arguments are not valid JSON"),
    ("OCR", '["image-0"]', "the arguments must be a JSON object"),
    ("OCR", "42", "the arguments must be a JSON object"),
    ("Teleport", "{}", "unknown action 'Teleport'; the actions are OCR, "),
    ("", "{}", "unknown action ''"),
])
def test_compose_step_says_what_is_wrong(name, arguments, says):
    with pytest.raises(ValueError) as info:
        compose_step("t", name, arguments)
    assert says in str(info.value)
    if "unknown action" in says:
        assert "Terminate" in str(info.value) and "Calculate" in str(info.value)
