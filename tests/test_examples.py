"""The bundled examples: their files are what the code makes, and each runs to its answer offline."""

import json

import pytest

from taco_app.backends import ReplayBackend
from taco_app.cota import events as ev
from taco_app.runner import InputImage
from taco_app.examples import ASSETS, EXAMPLES

from .conftest import of_kind, run_loop


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_example_files_are_current(example):
    assert json.loads((ASSETS / f"{example.name}.replay.json").read_text()) == example.script()
    assert (ASSETS / f"{example.name}.png").is_file()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_example_runs_to_its_answer_with_live_tools(example):
    script = example.script()
    events = list(run_loop(example.question, [InputImage.open(ASSETS / f"{example.name}.png")], ReplayBackend(script)))
    assert events[-1].status == "finished" and events[-1].steps == len(script)
    assert not [o for o in of_kind(events, ev.Observation) if o.error], "every tool of the script ran"
    assert events[-1].answer == json.loads(script[-1])["actions"][0]["arguments"]["answer"]


def test_the_astronaut_example_draws_a_face_box():
    example = next(e for e in EXAMPLES if e.name == "astronaut")
    events = list(run_loop(example.question, [InputImage.open(ASSETS / "astronaut.png")], ReplayBackend(example.script())))
    faces = of_kind(events, ev.Observation)[0]
    assert [r["label"] for r in faces.overlays["regions"]] == ["face"]
