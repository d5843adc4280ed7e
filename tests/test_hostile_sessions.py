"""Hostile model output, end to end: every case is logged whole, and the next session is unaffected.

The cases are the agent tests' (``HOSTILE``), plus a reply that never calls Terminate and 1 MB in one
reply. Each session is recorded through the store and read back.
"""

from __future__ import annotations

import pytest
from PIL import Image

from taco_app.backends import ReplayBackend
from taco_app.runner import MAX_REPLY_CHARS
from taco_app.store.queries import get_trace

from .conftest import run_loop
from .test_agent import HOSTILE, step, terminate

CASES = {
    **{name: [raw, terminate("still here")] for name, raw in HOSTILE.items()},
    "endless loop": [step("Calculate", expression="1+1")] * 11,
    "1 MB in one reply": ['{"thought":"' + "x" * 1_000_000 + '"}', terminate("still here")],
}


@pytest.mark.store
@pytest.mark.parametrize("name", list(CASES))
def test_hostile_session_is_logged_and_the_next_one_is_fine(store, name):
    photo = Image.new("RGB", (64, 48), "white")
    events = list(store.record(run_loop("q", [photo], ReplayBackend(CASES[name]))))
    trace = get_trace(store, events[0].session_id)
    finished = events[-1]
    assert trace.session["status"] == finished.status
    assert len(trace.steps) == finished.steps, "every step is in the store"
    if name == "endless loop":
        assert finished.status == "max_steps" and finished.steps == 11
    else:
        assert finished.status == "finished" and trace.session["answer"] == "still here"
        first = trace.steps[0]
        assert (first["observation"] or "").startswith(("Execution failed with", "OBSERVATION:\n"))
        assert len(first["raw"]) <= MAX_REPLY_CHARS
    after = list(store.record(run_loop("q", [photo], ReplayBackend([terminate("fine")]))))
    assert after[-1].status == "finished" and after[-1].answer == "fine"
