"""Forking a stored session at step k: the same prefix, the edited step run with the real tools, the lineage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image, ImageChops

from taco_app.backends.replay import ReplayBackend
from taco_app.cota import events as ev
from taco_app.cota.prompt import build_prompt, user_request
from taco_app.fork import ForkError, fork, plan_fork
from taco_app.store import queries
from taco_app.store.schema import SessionRow
from taco_app.tools import default_tools

from .conftest import ROOT, run_loop

pytestmark = pytest.mark.store

CROP = '{"thought":"look closer","actions":[{"name":"Crop","arguments":{"image":"image-0","bbox":[0,0,0.5,0.5]}}]}'
CALC = '{"thought":"add them","actions":[{"name":"Calculate","arguments":{"expression":"2+3"}}]}'
DONE = '{"thought":"done","actions":[{"name":"Terminate","arguments":{"answer":"5"}}]}'
EDITED = {"name": "Calculate", "arguments": {"expression": "6*7"}}


class Spy(ReplayBackend):
    """Replays outputs and keeps every prompt and the images sent with it."""

    def __init__(self, outputs):
        super().__init__(outputs)
        self.prompts: list = []

    def stream(self, prompt, images):
        self.prompts.append((prompt, [image.copy() for image in images]))
        return super().stream(prompt, images)


@pytest.fixture
def parent(store):
    """A stored replay session: a Crop (it makes image-1), a Calculate, then the answer."""
    spy = Spy([CROP, CALC, DONE])
    photo = Image.radial_gradient("L").convert("RGB").resize((200, 120))
    events = list(store.record(run_loop("What is 2+3?", [photo], spy)))
    assert events[-1].status == "finished"
    return events[-1].session_id, spy


def _fork(store, plan, outputs):
    spy = Spy(outputs)
    events = list(store.record(fork(plan, spy, tools=default_tools(), sink=store.images)))
    return events, spy


def _sessions(store) -> int:
    with store.reading() as db:
        return db.query(SessionRow).count()


def test_a_fork_keeps_the_prefix_runs_the_edited_step_and_records_its_lineage(store, parent):
    parent_id, parent_spy = parent
    plan = plan_fork(store, parent_id, 2, action=EDITED)
    events, spy = _fork(store, plan, [DONE])
    child_id = events[-1].session_id
    assert events[-1].status == "finished" and child_id != parent_id

    # The prompt at the fork point is the parent's step-2 prompt, byte for byte, with the same images.
    parent_prompt, parent_images = parent_spy.prompts[1]
    at_fork = build_prompt([user_request(plan.question, ["image-0"]), *plan.history.turns], parent_prompt.family)
    assert at_fork.text == parent_prompt.text and at_fork.image_ids == parent_prompt.image_ids == ("image-0", "image-1")
    # The backend's first prompt (step 3) starts with it: only what comes after the fork point is new.
    (next_prompt, next_images), = spy.prompts
    shared = parent_prompt.user.removesuffix("\n###Assistant: ")  # every turn up to the fork point, step 1's observation last
    assert shared != parent_prompt.user and shared.endswith("Now, please generate the response for the next step.\n")
    assert next_prompt.user.startswith(shared) and len(next_prompt.user) > len(parent_prompt.user)
    for mine, theirs in zip(next_images, parent_images):
        assert mine.size == theirs.size and ImageChops.difference(mine.convert("RGB"), theirs.convert("RGB")).getbbox() is None

    # The edited Calculate really ran: its observation is 6*7.
    observed = [e for e in events if isinstance(e, ev.Observation) and e.step == 2]
    assert observed and observed[0].observation.startswith("OBSERVATION:\n{'result': 42}")

    # Stored: the lineage, step 1 a copy of the parent's, step 2 the edit.
    child, mother = queries.get_trace(store, child_id), queries.get_trace(store, parent_id)
    assert child.session["parent_session_id"] == parent_id and child.session["fork_step"] == 2
    assert mother.session["parent_session_id"] is None
    assert child.steps[0]["raw"] == mother.steps[0]["raw"] and child.steps[0]["observation"] == mother.steps[0]["observation"]
    assert json.loads(child.steps[1]["raw"])["actions"] == [EDITED] and json.loads(child.steps[1]["raw"])["thought"] == "add them"
    assert [i.image_id for i in child.images] == ["image-0", "image-1"]
    assert [i.path for i in child.images] == [i.path for i in mother.images]  # the same files, content-addressed


def test_run_again_is_a_fork_at_step_1_with_the_backend_writing_it(store, parent):
    parent_id, _ = parent
    plan = plan_fork(store, parent_id, 1)
    events, spy = _fork(store, plan, [DONE])
    assert events[-1].status == "finished" and len(spy.prompts) == 1
    child = queries.get_trace(store, events[-1].session_id)
    assert child.session["fork_step"] == 1 and len(child.steps) == 1 and child.session["answer"] == "5"


def test_a_thought_alone_keeps_the_stored_action(store, parent):
    parent_id, _ = parent
    plan = plan_fork(store, parent_id, 2, thought="sum the two")
    assert json.loads(plan.history.reply) == {"thought": "sum the two", "actions": [json.loads(CALC)["actions"][0]]}


@pytest.mark.parametrize("step, kwargs, says", [
    (0, {}, "step 0 is out of range: session .* has steps 1 to 3"),
    (4, {}, "step 4 is out of range"),
    (2, {"action": "{not json"}, "the action is not JSON"),
    (2, {"action": {"name": "Calculator", "arguments": {}}}, "not a valid CoTA step: unknown action 'Calculator'"),
    (2, {"action": json.loads(CALC)}, "give the action alone"),
])
def test_bad_forks_are_refused_before_anything_is_stored(store, parent, step, kwargs, says):
    parent_id, _ = parent
    before = _sessions(store)
    with pytest.raises(ForkError, match=says):
        plan_fork(store, parent_id, step, **kwargs)
    assert _sessions(store) == before


def test_a_fork_whose_images_are_gone_from_disk_says_which(store, parent):
    parent_id, _ = parent
    trace = queries.get_trace(store, parent_id)
    tool_image = next(i for i in trace.images if i.role == "tool")
    tool_image.path.unlink()
    before = _sessions(store)
    with pytest.raises(ForkError, match=r"image-1 of session .* is missing from disk"):
        plan_fork(store, parent_id, 2)
    plan_fork(store, parent_id, 1)  # step 1 needs only the input
    with pytest.raises(ForkError, match="no session 'nope' in the store"):
        plan_fork(store, "nope", 1)
    assert _sessions(store) == before


def test_the_command_line(store, parent, tmp_path):
    parent_id, _ = parent
    script = tmp_path / "replay.json"
    script.write_text(json.dumps([DONE]))
    env = {**os.environ}
    app = [sys.executable, str(ROOT / "app.py")]
    done = subprocess.run([*app, "fork", parent_id, "--step", "2", "--action", json.dumps(EDITED),
                           "--backend", f"replay:{script}", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    final = lines[-1]
    assert final["type"] == "final" and final["status"] == "finished"
    assert final["parent_session_id"] == parent_id and final["fork_step"] == 2
    assert lines[0]["type"] == "session_started" and lines[0]["parent_session_id"] == parent_id
    assert any(e["type"] == "observation" and "'result': 42" in e["observation"] for e in lines)
    for bad, says in ((["nope", "--step", "1"], "no session 'nope'"), ([parent_id, "--step", "9"], "out of range"),
                      ([parent_id, "--step", "2", "--action", "{"], "not JSON")):
        done = subprocess.run([*app, "fork", *bad, "--backend", f"replay:{script}"], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
