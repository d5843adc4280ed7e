"""What an eval run needs from the step loop and the store: TACO's direct-answer baseline, and why a
step's action gave no observation, recorded so a report can count unknown actions, bad arguments and
failing tools apart."""

from __future__ import annotations

import threading

import pytest
from PIL import Image

from taco_app.backends.replay import ReplayBackend
from taco_app.cota import events as ev
from taco_app.cota.prompt import build_prompt, direct_request
from taco_app.fork import ForkError, plan_fork
from taco_app.store import queries
from taco_app.store.export import export

from .conftest import of_kind, run_loop

pytestmark = pytest.mark.store  # CI runs them again on PostgreSQL

# TACO's direct-answer baseline, written out from its code (taco/prompt.py DirectAnswerPrompt, taco/data.py
# format_query, and autogen's llava_agent._image_reply flattening the system message and one user message).
TACO_DIRECT_GOAL = "You are a helpful assistant, and your goal is to answer the # USER REQUEST # based on the image(s).\n"


def taco_direct_text(question: str, n_images: int) -> str:
    query = "".join(f"image-{i}: <image>\n" for i in range(n_images)) + f"{question}\n"  # format_query
    request = f"\n# USER REQUEST #:\n{query}\n"  # DirectAnswerPrompt.get_prompt_for_curr_query
    return TACO_DIRECT_GOAL + "\n" + f"###Human: {request}\n" + "\n###Assistant: "  # _image_reply


def test_the_direct_prompt_is_tacos():
    question = "Which of the two is bigger?\nA. the cat\nB. the dog"
    for family in ("mantis", "qwen2"):
        prompt = build_prompt([direct_request(question, ["image-0", "image-1"])], family, "direct")
        assert prompt.user == taco_direct_text(question, 2)
        assert prompt.image_ids == ("image-0", "image-1")
    with pytest.raises(ValueError, match="unknown prompt mode"):
        build_prompt([direct_request(question, [])], "mantis", "chatty")


class Recording(ReplayBackend):
    def __init__(self, outputs):
        super().__init__(outputs)
        self.prompts = []

    def stream(self, prompt, images):
        self.prompts.append(prompt)
        return super().stream(prompt, images)


def test_a_direct_session_is_one_reply_which_is_the_answer(store):
    backend = Recording(["  B\n", "never read"])
    events = list(store.record(run_loop("Which?", [Image.new("RGB", (8, 8))], backend, mode="direct",
                                        sink=store.images)))
    assert len(backend.prompts) == 1 and backend.prompts[0].user == taco_direct_text("Which?", 1)
    end = of_kind(events, ev.Finished)[-1]
    assert (end.status, end.answer, end.steps) == ("finished", "B", 1)
    assert of_kind(events, ev.SessionStarted)[0].mode == "direct"
    row = store.get_session(end.session_id)
    assert row.mode == "direct" and row.answer == "B" and [s.raw for s in row.steps] == ["  B\n"]
    # Its events read back as a direct session; it is not CoTA training data and has no steps to fork.
    assert queries.get_trace(store, end.session_id).session["mode"] == "direct"
    with pytest.raises(ForkError, match="direct answer"):
        plan_fork(store, end.session_id, 1)


def test_exports_leave_direct_sessions_out_and_say_why(store, tmp_path):
    list(store.record(run_loop("Which?", [Image.new("RGB", (8, 8))], ReplayBackend(["B"]), mode="direct",
                               sink=store.images)))
    result = export(store, tmp_path / "out", "cota-mantis")
    assert result.count == 0 and result.reasons == {"direct": 1}


def test_a_direct_session_stopped_while_replying_is_cancelled(store):
    cancel = threading.Event()
    cancel.set()
    events = list(run_loop("Which?", [Image.new("RGB", (8, 8))], ReplayBackend(["B"]), mode="direct", cancel=cancel))
    assert of_kind(events, ev.Finished)[-1].status == "cancelled"


def step(name, arguments):
    import json

    return json.dumps({"thought": "t", "actions": [{"name": name, "arguments": arguments}]})


@pytest.mark.parametrize("reply, code", [
    (step("Fly", {"to": "the moon"}), "unknown_action"),
    (step("Calculate", {}), "bad_arguments"),  # missing
    (step("Calculate", {"expression": "1+1", "extra": 1}), "bad_arguments"),  # unexpected
    (step("Crop", {"image": "image-7", "bbox": [0, 0, 1, 1]}), "bad_arguments"),  # no such image
    (step("Crop", {"image": "image-0", "bbox": [0.5, 0.5, 0.2, 0.2]}), "bad_arguments"),  # inverted box
    (step("Calculate", {"expression": "1/0"}), "tool"),  # the tool's own error
    (step("Calculate", {"expression": "1+1"}), None),
])
def test_why_an_action_failed_is_recorded_and_the_model_reads_tacos_text(store, reply, code):
    done = step("Terminate", {"answer": "2"})
    events = list(store.record(run_loop("q", [Image.new("RGB", (8, 8))], ReplayBackend([reply, done]),
                                        sink=store.images)))
    observation = of_kind(events, ev.Observation)[0]
    assert observation.error_code == code
    if code is not None:  # the text the model reads still names the built-in class, as TACO's tools raised it
        assert observation.observation.startswith("Execution failed with <class '")
        assert "taco_app" not in observation.observation
    row = store.get_session(of_kind(events, ev.Finished)[-1].session_id)
    assert row.steps[0].error_code == code


def test_review_shows_a_direct_answer_as_the_reply_it_was(store):
    from taco_app.store import codec
    from taco_app.ui.render import chat_messages

    events = list(store.record(run_loop("Which?", [Image.new("RGB", (8, 8))], ReplayBackend(["  B, the dog  "]),
                                        mode="direct", sink=store.images)))
    stored = codec.trace_events(queries.get_trace(store, of_kind(events, ev.Finished)[-1].session_id))
    for shown in (chat_messages(events), chat_messages(stored)):
        text = "\n".join(str(m["content"]) for m in shown)
        assert "**Direct answer**" in text and "B, the dog" in text and "No action" not in text
        assert "**Answer:** B, the dog" in text
