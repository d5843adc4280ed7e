"""Loading the examples' tool models in the background: once, in order, failures in words, never twice."""

from __future__ import annotations

import threading

from taco_app.tools.base import Tool
from taco_app.tools.warmup import FAILED, READY, Warmup, loads_a_model

WAIT_S = 30  # a bound on waits for another thread, never a pause


class Gated(Tool):
    """A tool whose setup waits for ``gate`` and counts how often it ran."""

    name = "Gated"

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.entered, self.setups = threading.Event(), threading.Event(), 0

    def setup(self) -> None:
        self.setups += 1
        self.entered.set()
        assert self.gate.wait(WAIT_S)

    def forward(self) -> dict:
        return {"ok": True}


class Missing(Tool):
    name = "Missing"

    def setup(self) -> None:
        raise RuntimeError("Its weights are not on this machine: run `python app.py download` once")


class Plain(Tool):
    name = "Plain"


def test_a_session_that_needs_a_loading_tool_waits_for_it_and_it_loads_once():
    tool = Gated()
    warmup = Warmup([tool]).start()
    assert tool.entered.wait(WAIT_S)
    assert [(s.name, s.state) for s in warmup.states()] == [("Gated", "loading")] and not warmup.finished
    called = threading.Event()

    def session():  # a run that needs the tool now: it waits on the tool's lock, then finds it ready
        tool({}, lookup=None)
        called.set()

    runner = threading.Thread(target=session)
    runner.start()
    assert not called.is_set()  # it cannot have run: the gate is closed
    tool.gate.set()
    runner.join(WAIT_S)
    assert called.is_set() and warmup.wait(WAIT_S)
    assert tool.setups == 1
    assert [(s.name, s.state) for s in warmup.states()] == [("Gated", READY)]


def test_a_model_that_cannot_load_is_reported_in_words_and_the_others_still_load():
    tool = Gated()
    tool.gate.set()
    warmup = Warmup([Missing(), tool]).start()
    assert warmup.wait(WAIT_S)
    missing, gated = warmup.states()
    assert (missing.state, gated.state) == (FAILED, READY)
    assert "python app.py download" in missing.message
    assert tool.setups == 1


def test_loading_waits_until_the_page_is_served():
    tool = Gated()
    tool.gate.set()
    looked, served = threading.Event(), threading.Event()
    looks = []

    def after() -> bool:
        looks.append(1)
        if len(looks) >= 2:
            looked.set()
        return served.is_set()

    warmup = Warmup([tool]).start(after)
    assert looked.wait(WAIT_S)
    assert tool.setups == 0 and warmup.states()[0].state == "waiting"
    served.set()
    assert warmup.wait(WAIT_S) and tool.setups == 1


def test_only_tools_that_load_something_are_warmed():
    assert loads_a_model(Gated()) and not loads_a_model(Plain())


def test_the_examples_warm_ocr_and_the_face_cascades(store):
    from taco_app.ui.studio import Studio

    studio = Studio(store, probe=False, local_reason="test")
    assert studio.example_tools() == ["OCR", "DetectFaces"]  # Calculate, ZoomIn, Terminate load nothing
    assert studio.tools_settled() and studio.tools_line() == ""


def test_the_status_line_says_what_is_loading_ready_or_failed(store, monkeypatch):
    from taco_app.ui import studio as studio_module

    tool, missing = Gated(), Missing()
    studio = studio_module.Studio(store, probe=False, local_reason="test")
    monkeypatch.setattr(studio, "example_tools", lambda: ["Gated", "Missing"])
    monkeypatch.setattr("taco_app.tools.default_tools",
                        lambda: type("Box", (), {"get": staticmethod({"Gated": tool, "Missing": missing}.get)}))
    warmup = studio.warm_tools()
    assert tool.entered.wait(WAIT_S)
    line = studio.status_line()
    assert line.startswith("**Model:** none loaded here.")
    assert "**Tools:** Gated loading… · Missing waiting" in line and not studio.tools_settled()
    tool.gate.set()
    assert warmup.wait(WAIT_S) and studio.tools_settled()
    line = studio.tools_line()
    assert line.startswith("**Tools:** Gated ready · Missing could not load: Its weights are not on this machine")
    assert "python app.py download" in line
    assert studio.warm_tools() is warmup  # once


def test_warming_can_be_turned_off(store):
    from taco_app.ui.studio import Studio

    studio = Studio(store, probe=False, local_reason="test", warm=False)
    assert studio.warm_tools() is None and studio.tools_settled() and "Tools" not in studio.status_line()

