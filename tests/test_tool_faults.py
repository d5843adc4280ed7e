"""Tool faults never hang or crash a session: a raising, hanging, late, oversized or out-of-memory
tool becomes an observation (or a prompt Stop), the session goes on, and the store records it all."""

import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from taco_app.backends import ReplayBackend
from taco_app.cota import events as ev
from taco_app.runner import run
from taco_app.settings import Settings
from taco_app.store import queries
from taco_app.store.files import ImageFiles
from taco_app.tools import Tool, ToolResult, default_tools
from taco_app.tools.base import IMAGE, ProducedImage
from taco_app.tools.execution import time_limit

from .conftest import of_kind, run_session
from .test_agent import Boom, photo, step, terminate  # noqa: F401  (photo: a fixture)

pytestmark = pytest.mark.store


@pytest.fixture
def release():
    """Set at teardown, so a 'hanging' tool's abandoned thread ends with its test."""
    gate = threading.Event()
    yield gate
    gate.set()


def session(store, outputs, images, tool=None, **kwargs):
    """Run and record one session; its events and its stored trace."""
    tools = default_tools().replace(tool) if tool else default_tools()
    files = ImageFiles(Path(os.environ["TACO_HOME"]) / "images")
    events = list(store.record(run("q", images, ReplayBackend(outputs), tools=tools, sink=files, **kwargs)))
    return events, queries.get_trace(store, events[-1].session_id)


class Hang(Tool):
    """An OCR that does not come back (for 30 s, or until the test ends)."""

    name = "OCR"
    inputs = {"image": IMAGE}

    def __init__(self, gate: threading.Event, timeout_s: float | None = 0.5):
        super().__init__()
        self.gate = gate
        self.timeout_s = timeout_s  # type: ignore[misc]

    def forward(self, image):
        self.gate.wait(30)
        return {"text": "too late"}


class Late(Tool):
    """A Crop that finishes after its time limit, then tries to read the session and make an image."""

    name = "Crop"
    inputs = {"image": IMAGE}
    timeout_s = 0.2

    def __init__(self):
        super().__init__()
        self.finished = threading.Event()
        self.late_lookup: BaseException | None = None

    def __call__(self, arguments, lookup, *, language_model=None):
        image = lookup(arguments["image"])
        time.sleep(0.6)
        try:
            lookup(arguments["image"])
        except BaseException as err:
            self.late_lookup = err
        self.finished.set()
        return ToolResult(output={"image": ProducedImage(image.copy())})

    def forward(self, image):  # pragma: no cover - __call__ is overridden
        raise AssertionError


class Huge(Tool):
    """A Crop that returns a picture far larger than anything the model should see."""

    name = "Crop"
    inputs = {"image": IMAGE}

    def __init__(self, size):
        super().__init__()
        self.size = size

    def forward(self, image):
        return {"image": ProducedImage(Image.new("L", self.size, 128), bbox=[0, 0, 1, 1])}


def test_a_raising_tool_is_a_failed_execution_and_the_session_goes_on(store, photo):
    events, trace = session(store, [step("OCR", image="image-0"), terminate("anyway")], [photo], Boom())
    observation = of_kind(events, ev.Observation)[0]
    assert observation.observation.startswith("Execution failed with <class 'RuntimeError'>: the OCR engine exploded.")
    assert events[-1].status == "finished" and events[-1].answer == "anyway"
    assert trace.session["status"] == "finished" and len(trace.steps) == 2
    assert trace.steps[0]["error"] == "<class 'RuntimeError'>: the OCR engine exploded."


def test_a_hanging_tool_times_out_and_the_next_session_works(store, photo, release):
    t0 = time.perf_counter()
    events, trace = session(store, [step("OCR", image="image-0"), terminate("anyway")], [photo], Hang(release))
    assert time.perf_counter() - t0 < 5
    observation = of_kind(events, ev.Observation)[0]
    assert observation.observation.startswith(
        "Execution failed with <class 'TimeoutError'>: OCR did not finish within 0.5 s.\nThe OBSERVATION")
    assert observation.output is None and 0.5 <= observation.tool_s < 2
    assert events[-1].status == "finished" and events[-1].answer == "anyway"
    assert trace.session["status"] == "finished"
    assert trace.steps[0]["error"] == "<class 'TimeoutError'>: OCR did not finish within 0.5 s."

    # the stuck thread is still there; the next session does not care
    events, trace = session(store, [step("Calculate", expression="2+3"), terminate("5")], [photo])
    assert of_kind(events, ev.Observation)[0].output == {"result": 5}
    assert trace.session["status"] == "finished" and trace.session["answer"] == "5"


def test_the_default_time_limit_comes_from_the_environment(monkeypatch, release):
    calculate = default_tools().get("Calculate")
    monkeypatch.delenv("TACO_TOOL_TIMEOUT", raising=False)
    assert time_limit(calculate, Settings.read().tool_timeout) == 120
    monkeypatch.setenv("TACO_TOOL_TIMEOUT", "2.5")
    assert time_limit(calculate, Settings.read().tool_timeout) == 2.5
    assert time_limit(Hang(release, timeout_s=0.5), Settings.read().tool_timeout) == 0.5  # a tool's own limit wins
    monkeypatch.setenv("TACO_TOOL_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="TACO_TOOL_TIMEOUT must be a positive number"):
        Settings.read()  # refused when the settings are read, before any session: the model never sees it


def test_the_environment_limit_applies_to_a_tool_without_its_own(store, photo, release, monkeypatch):
    monkeypatch.setenv("TACO_TOOL_TIMEOUT", "0.3")
    events, _ = session(store, [step("OCR", image="image-0"), terminate()], [photo], Hang(release, timeout_s=None),
                        tool_timeout_s=Settings.read().tool_timeout)
    assert "OCR did not finish within 0.3 s." in of_kind(events, ev.Observation)[0].observation


def test_a_result_that_comes_after_the_time_limit_is_dropped(store, photo, taco_home):
    late = Late()
    events, trace = session(store, [step("Crop", image="image-0"), terminate()], [photo], late)
    assert "Crop did not finish within 0.2 s." in of_kind(events, ev.Observation)[0].observation
    stored = sorted(p for p in (taco_home / "images").rglob("*") if p.is_file())
    assert late.finished.wait(5)
    time.sleep(0.1)  # let the late call hand its result over (to nobody)
    assert not of_kind(events, ev.ImageProduced)
    assert isinstance(late.late_lookup, TimeoutError)  # the abandoned call could not read the session
    assert sorted(p for p in (taco_home / "images").rglob("*") if p.is_file()) == stored
    assert [i.role for i in queries.get_trace(store, events[-1].session_id).images] == ["input"]
    assert trace.session["status"] == "finished"


def test_stop_during_a_hanging_tool_ends_the_session_promptly(store, photo, release):
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    t0 = time.perf_counter()
    events, trace = session(store, [step("OCR", image="image-0"), terminate()], [photo], Hang(release, timeout_s=None),
                            cancel=cancel)
    assert time.perf_counter() - t0 < 1.5
    final = events[-1]
    assert final.status == "cancelled" and final.steps == 1 and final.message == "Stopped while OCR was running."
    assert not of_kind(events, ev.Observation) and of_kind(events, ev.ToolStarted)
    assert trace.session["status"] == "cancelled" and trace.session["message"] == "Stopped while OCR was running."
    assert [s["action_name"] for s in trace.steps] == ["OCR"] and trace.steps[0]["observation"] is None


def test_an_oversized_image_is_downscaled_and_the_session_goes_on(store, photo):
    events, trace = session(store, [step("Crop", image="image-0"), terminate()], [photo], Huge((20000, 5000)))
    produced = of_kind(events, ev.ImageProduced)[0].image
    assert (produced.width, produced.height) == (4096, 1024)  # aspect kept
    observation = of_kind(events, ev.Observation)[0]
    assert observation.overlays["downscaled_from"] == {"image-1": [20000, 5000]}
    assert observation.observation.startswith("OBSERVATION:\n{'image': 'image-1: <image>'}")
    assert events[-1].status == "finished"
    tool_image = next(i for i in trace.images if i.role == "tool")
    assert (tool_image.width, tool_image.height) == (4096, 1024)
    with Image.open(tool_image.path) as stored:
        assert stored.size == (4096, 1024)


def test_an_image_no_larger_than_the_input_is_kept_as_is(store):
    big = Image.new("RGB", (5000, 20), "white")  # a wide input: its crops keep every pixel
    events, _ = session(store, [step("Crop", image="image-0"), terminate()], [big], Huge((5000, 10)))
    produced = of_kind(events, ev.ImageProduced)[0].image
    assert (produced.width, produced.height) == (5000, 10)
    assert "downscaled_from" not in of_kind(events, ev.Observation)[0].overlays


def test_out_of_gpu_memory_frees_the_tool_models_and_the_session_goes_on(store, photo, monkeypatch):
    torch = pytest.importorskip("torch")
    from taco_app.weights import MODELS

    cleared = []
    monkeypatch.setattr(MODELS, "clear", lambda: cleared.append(True))

    class Greedy(Tool):
        name = "OCR"
        inputs = {"image": IMAGE}

        def forward(self, image):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    outputs = [step("OCR", image="image-0"), step("Calculate", expression="1+1"), terminate("2")]
    events, trace = session(store, outputs, [photo], Greedy())
    first, second = of_kind(events, ev.Observation)
    assert first.observation.startswith("Execution failed with <class 'RuntimeError'>: OCR ran out of GPU memory; "
                                        "the app freed its tool models, try again.\nThe OBSERVATION")
    assert cleared == [True]
    assert second.output == {"result": 2}
    assert events[-1].status == "finished" and events[-1].answer == "2"
    assert trace.session["status"] == "finished" and len(trace.steps) == 3
    assert "ran out of GPU memory" in trace.steps[0]["error"]


def test_the_loop_reads_no_setting(photo, monkeypatch):
    """A bad TACO_TOOL_TIMEOUT is refused when the app starts (its settings are read then); a session
    in progress never reads it, so the model is never told about it as a failed tool call."""
    monkeypatch.setenv("TACO_TOOL_TIMEOUT", "soon")
    events = run_session([step("Calculate", expression="2+3"), terminate("5")], [photo], tool_timeout_s=2.5)
    observation = of_kind(events, ev.Observation)[0]
    assert observation.error is None and observation.output == {"result": 5}
    assert events[-1].status == "finished" and events[-1].answer == "5"
