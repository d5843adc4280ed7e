"""The step loop's rules, on scripted model outputs with cheap tools."""

import json
import threading
import time

import pytest
from PIL import Image

from taco_app.backends import ReplayBackend
from taco_app.cota import events as ev
from taco_app.tools import Tool, default_tools
from taco_app.tools.base import IMAGE, ProducedImage

from .conftest import of_kind, run_loop, run_session


def step(name=None, thought="t", **arguments):
    actions = [{"name": name, "arguments": arguments}] if name else []
    return json.dumps({"thought": thought, "actions": actions})


def terminate(answer="done"):
    return step("Terminate", answer=answer)


@pytest.fixture
def photo():
    return Image.new("RGB", (200, 100), "navy")


class Boom(Tool):
    name = "OCR"
    inputs = {"image": IMAGE}

    def forward(self, image):
        raise RuntimeError("the OCR engine exploded")


class Halve(Tool):
    """A tool that makes an image: the left half of its input."""

    name = "Crop"
    inputs = {"image": IMAGE}

    def forward(self, image):
        return {"image": ProducedImage(image.crop((0, 0, image.width // 2, image.height)), bbox=[0, 0, 0.5, 1])}


def test_terminate_ends_with_answer(photo):
    events = run_session([terminate("42")], [photo])
    assert of_kind(events, ev.FinalAnswer)[0].answer == "42"
    final = events[-1]
    assert isinstance(final, ev.Finished) and final.status == "finished" and final.answer == "42" and final.steps == 1


def test_event_order_and_kinds(photo):
    events = run_session([step("Calculate", expression="2+3"), terminate("5")], [photo])
    kinds = [e.kind for e in events if e.kind != "thought_delta"]
    assert kinds == ["session_started", "step_started", "action_parsed", "tool_started", "observation",
                     "step_started", "action_parsed", "answer", "final"]
    observation = of_kind(events, ev.Observation)[0]
    assert observation.output == {"result": 5}
    assert observation.observation.startswith("OBSERVATION:\n{'result': 5}\nThe OBSERVATION")


def test_thought_deltas_join_to_the_raw_output(photo):
    raw = step("Calculate", thought="a fairly long thought to be cut into several chunks", expression="1+1")
    events = run_session([raw, terminate()], [photo])
    deltas = [e.text for e in events if isinstance(e, ev.ThoughtDelta) and e.step == 1]
    assert len(deltas) > 3 and "".join(deltas) == raw


def test_every_event_round_trips_json(photo):
    events = run_session([step("Crop", image="image-0", bbox=[0.1, 0.1, 0.6, 0.9]), "not json", step(), terminate()], [photo])
    for event in events:
        line = ev.to_json(event)
        assert ev.from_dict(json.loads(line)) == event
        data = json.loads(line)
        assert "type" in data and "step" in data


def test_step_limit_is_ten_replies_after_the_first(photo):
    events = run_session([step()] * 20, [photo])
    assert max(e.step for e in events) == 11
    assert len(of_kind(events, ev.StepStarted)) == 11
    final = events[-1]
    assert final.status == "max_steps" and final.answer is None
    assert "No answer within 11 steps" in of_kind(events, ev.Error)[0].message


def test_terminate_on_the_last_allowed_reply_counts(photo):
    events = run_session([step()] * 10 + [terminate("late")], [photo])
    assert events[-1].status == "finished" and events[-1].answer == "late"


def test_custom_step_limit(photo):
    events = run_session([step()] * 5, [photo], max_replies=2)
    assert events[-1].status == "max_steps" and events[-1].steps == 3


def test_tool_images_get_the_next_ids_and_reach_the_model(photo):
    seen = []

    class Spy(ReplayBackend):
        def stream(self, prompt, images):
            seen.append((prompt.text.count("<image>"), [im.size for im in images]))
            return super().stream(prompt, images)

    outputs = [step("Crop", image="image-0"), step("Crop", image="image-1"), terminate()]
    events = list(run_loop("q", [photo, photo], Spy(outputs), tools=default_tools().replace(Halve())))
    produced = [e.image for e in of_kind(events, ev.ImageProduced)]
    assert [i.image_id for i in produced] == ["image-2", "image-3"]
    assert produced[0].parent == "image-0" and produced[1].parent == "image-1"
    assert [n for n, _ in seen] == [2, 3, 4]
    assert seen[-1][1] == [(200, 100), (200, 100), (100, 100), (100, 100)]
    observation = of_kind(events, ev.Observation)[0]
    assert "'image': 'image-2: <image>'" in observation.observation
    assert observation.output == {"image": "image-2"} and observation.image_ids == ["image-2"]


def test_missing_image_is_a_failed_execution(photo):
    events = run_session([step("OCR", image="image-7"), terminate()], [photo])
    observation = of_kind(events, ev.Observation)[0]
    assert observation.observation.startswith("Execution failed with <class 'ValueError'>: image-7 does not exist")
    assert events[-1].status == "finished"


def test_tool_exception_becomes_tacos_failed_turn_and_session_goes_on(photo):
    events = run_session([step("OCR", image="image-0"), terminate("anyway")], [photo], tools=default_tools().replace(Boom()))
    observation = of_kind(events, ev.Observation)[0]
    assert observation.observation.startswith("Execution failed with <class 'RuntimeError'>: the OCR engine exploded.\nThe OBSERVATION")
    assert observation.error and observation.output is None
    assert events[-1].answer == "anyway"


def test_no_action_turn(photo):
    events = run_session([step(), terminate()], [photo])
    observation = of_kind(events, ev.Observation)[0]
    assert observation.action is None
    assert "{'message': 'No action has been provided. Proceed to the next step.'}" in observation.observation


def test_parse_error_feeds_the_repair_turn(photo):
    events = run_session(["I cannot answer in JSON", terminate()], [photo])
    error = of_kind(events, ev.ParseError)[0]
    assert error.code == "json" and "Please format the output to a strict JSON format" in error.observation
    assert events[-1].status == "finished"


def test_backend_failure_ends_the_session_clearly(photo):
    events = run_session([step("Calculate", expression="1+1")], [photo])
    error = of_kind(events, ev.Error)[0]
    assert error.code == "backend" and "no more outputs" in error.message
    assert events[-1].status == "failed"


def test_cancel_between_chunks(photo):
    cancel = threading.Event()
    backend = ReplayBackend([step("Calculate", thought="word " * 50, expression="1+1"), terminate()])
    events = []
    for event in run_loop("q", [photo], backend, cancel=cancel):
        events.append(event)
        if isinstance(event, ev.ThoughtDelta) and len(events) > 5:
            cancel.set()
    assert events[-1].status == "cancelled"
    assert len(of_kind(events, ev.ThoughtDelta)) < 10


def test_input_images_from_paths(tmp_path, photo):
    path = tmp_path / "p.jpg"
    photo.save(path)
    events = run_session([terminate()], [path])
    info = events[0].images[0]
    assert info.image_id == "image-0" and info.path.endswith(".jpg") and info.width == 200


HOSTILE = {
    "invalid json": "{'thought': oops",
    "unknown action": step("Teleport", where="moon"),
    "missing argument": step("OCR"),
    "wrong-typed argument": step("ZoomIn", image="image-0", bbox="left half", zoom_factor="big"),
    "extra argument": step("OCR", image="image-0", language="fr"),
    "bbox outside 0..1": step("Crop", image="image-0", bbox=[0.2, 0.2, 1.5, 0.8]),
    "inverted bbox": step("Crop", image="image-0", bbox=[0.8, 0.8, 0.2, 0.2]),
    "bbox of wrong length": step("Crop", image="image-0", bbox=[0.1, 0.2]),
    "code in Calculate": step("Calculate", expression="__import__('os').system('id')"),
    "tower of powers": step("Calculate", expression="9**9**9**9"),
    "100 kB expression": step("Calculate", expression="1+" * 50_000 + "1"),
    "arguments not an object": '{"thought":"t","actions":[{"name":"OCR","arguments":"image-0"}]}',
    "image id not a string": step("OCR", image=["image-0"]),
    "missing image": step("Crop", image="image-9", bbox=[0, 0, 1, 1]),
    "nested 10000 deep": '{"thought":"t","actions":[{"name":"OCR","arguments":' + "[" * 10_000 + "]" * 10_000 + "}]}",
    "1e309": step("ZoomIn", image="image-0", bbox=[0.1, 0.1, 0.5, 0.5], zoom_factor=1e309),
    "Terminate without answer": step("Terminate", result="x"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_output_becomes_a_clear_observation_quickly(name, photo, tmp_path):
    marker = tmp_path / "pwned"
    raw = HOSTILE[name].replace("system('id')", f"system('touch {marker}')")
    started = time.perf_counter()
    events = run_session([raw, terminate("still here")], [photo])
    elapsed = time.perf_counter() - started
    feedback = of_kind(events, ev.Observation) + of_kind(events, ev.ParseError)
    assert len(feedback) == 1, name
    text = feedback[0].observation
    assert text.startswith(("Execution failed with", "OBSERVATION:\n")), text[:200]
    assert len(text) < 2000, name  # a clear sentence, not a dump
    assert events[-1].status == "finished" and events[-1].answer == "still here"
    assert elapsed < 1.0, f"{name}: {elapsed:.2f}s"
    assert not marker.exists()


def test_a_runaway_reply_is_cut_and_the_session_goes_on(photo):
    from taco_app.runner import MAX_REPLY_CHARS

    huge = '{"thought":"' + "blah " * 200_000 + '","actions":[]}'  # 1 MB in one step
    started = time.perf_counter()
    events = run_session([huge, terminate("still here")], [photo])
    assert time.perf_counter() - started < 5
    reply = of_kind(events, ev.ParseError)[0]
    assert len(reply.raw) == MAX_REPLY_CHARS and reply.raw == huge[:MAX_REPLY_CHARS]
    assert events[-1].status == "finished" and events[-1].answer == "still here"
    prompt_sizes = [e.prompt_chars for e in of_kind(events, ev.StepStarted)]
    assert prompt_sizes[1] - prompt_sizes[0] < MAX_REPLY_CHARS + 2_000  # the history holds the cut reply only
