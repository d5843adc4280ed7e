"""How an eval run drives its sessions: a local model generates one reply at a time while another
session's tool runs, and an item the backend broke is left unfinished and retried by the next run of
the same name."""

from __future__ import annotations

import json
import re
import threading

import pytest
from PIL import Image

from taco_app.cota.backend import Backend, BackendError
from taco_app.evaluation.data import load_benchmark
from taco_app.evaluation.runs import EvalError, evaluate
from taco_app.store import evals
from taco_app.tools import default_tools
from taco_app.tools.calculator import Calculate

pytestmark = pytest.mark.store  # CI runs them again on PostgreSQL

WAIT_S = 10  # a bound on waiting for the other thread, so a broken overlap fails instead of hanging


def step(name, arguments, thought="t"):
    return json.dumps({"thought": thought, "actions": [{"name": name, "arguments": arguments}]})


def write_benchmark(folder, n, *, broken=()):
    rows = []
    for i in range(n):
        Image.new("RGB", (16, 16), (10 * i, 0, 0)).save(folder / f"{i}.png")
        rows.append({"id": f"q{i}", "images": [f"{i}.png"], "question": f"What is {i} + 1?", "answer": str(i + 1)})
    for i in broken:  # not a picture
        (folder / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return data


class PerItem(Backend):
    """Answers each item from its question: Calculate, then Terminate with the result; one reply at a time."""

    name, model_id = "local-test", "local-test"

    def __init__(self, max_sessions=2, fail=()):
        self.max_sessions = max_sessions
        self.fail = set(fail)
        self.lock = threading.Lock()  # what the transformers backend's _run_lock does
        self.generating = 0
        self.most_at_once = 0
        self.tool_running = threading.Event()
        self.generated_while_a_tool_ran = threading.Event()

    def stream(self, prompt, images):
        i = int(re.search(r"What is (\d+) \+ 1\?", prompt.user).group(1))
        with self.lock:
            self.generating += 1
            self.most_at_once = max(self.most_at_once, self.generating)
            if self.tool_running.is_set():
                self.generated_while_a_tool_ran.set()
            try:
                if i in self.fail:
                    raise BackendError("the model server went away")
                first = prompt.user.count("###Assistant: ") == 1  # no reply of its own yet
                yield (step("Calculate", {"expression": f"{i}+1"}) if first
                       else step("Terminate", {"answer": str(i + 1)}))
            finally:
                self.generating -= 1


class WaitingCalculate(Calculate):
    """Calculate that, the first time, holds on until another session is generating."""

    def __init__(self, backend):
        super().__init__()
        self.backend = backend
        self.first = threading.Lock()

    def forward(self, **kwargs):
        if self.first.acquire(blocking=False):
            self.backend.tool_running.set()
            self.backend.generated_while_a_tool_ran.wait(WAIT_S)
            self.backend.tool_running.clear()
        return super().forward(**kwargs)


def test_a_local_model_generates_for_one_session_while_another_runs_its_tool(store, tmp_path):
    benchmark = load_benchmark(write_benchmark(tmp_path, 6))
    backend = PerItem(max_sessions=2)
    tools = default_tools().replace(WaitingCalculate(backend))
    summary = evaluate(store, benchmark, "overlap", backend, tools=tools, concurrency=8)
    assert (summary.n, summary.correct, summary.failed) == (6, 6, [])
    assert backend.generated_while_a_tool_ran.is_set()  # a tool and a generation ran at the same time
    assert backend.most_at_once == 1  # never two generations at once


def test_items_the_backend_broke_are_retried_by_the_next_run(store, tmp_path):
    data = write_benchmark(tmp_path, 5, broken=[4])
    benchmark = load_benchmark(data)
    summary = evaluate(store, benchmark, "flaky", PerItem(max_sessions=1, fail={1}), tools=default_tools())
    assert (summary.n, summary.skipped_rows) == (3, 1)  # q4's picture is reported by the loader and skipped
    assert [f.item_id for f in summary.failed] == ["q1"] and "the model server went away" in summary.failed[0].message
    assert set(evals.finished(store, "flaky")) == {"q0", "q2", "q3"}
    Image.new("RGB", (16, 16)).save(tmp_path / "4.png")  # the picture is fixed: the data changed
    with pytest.raises(EvalError, match="other settings"):
        evaluate(store, load_benchmark(data), "flaky", PerItem(max_sessions=1), tools=default_tools())
    again = evaluate(store, load_benchmark(data), "flaky", PerItem(max_sessions=1), tools=default_tools(), resume=True)
    assert (again.n, again.correct, again.resumed, again.failed) == (5, 5, 3, [])


@pytest.mark.parametrize("kwargs, says", [
    ({"concurrency": 0}, "--concurrency"), ({"limit": 0}, "--limit"), ({"mode": "chatty"}, "--mode"),
    ({"max_replies": -1}, "--max-replies"),
])
def test_bad_settings_start_nothing(store, tmp_path, kwargs, says):
    benchmark = load_benchmark(write_benchmark(tmp_path, 1))
    with pytest.raises(EvalError, match=says):
        evaluate(store, benchmark, "bad", PerItem(), tools=default_tools(), **kwargs)
    assert evals.list_runs(store) == []


@pytest.mark.parametrize("name", ["", "a b", "-x", "x" * 129, "run/1", "ü"])
def test_run_names_are_checked(store, tmp_path, name):
    benchmark = load_benchmark(write_benchmark(tmp_path, 1))
    with pytest.raises(EvalError, match="--name"):
        evaluate(store, benchmark, name, PerItem(), tools=default_tools())


def test_review_finds_a_runs_sessions_by_its_name(store, tmp_path):
    from taco_app.store import queries

    benchmark = load_benchmark(write_benchmark(tmp_path, 3))
    evaluate(store, benchmark, "first", PerItem(), tools=default_tools())
    evaluate(store, benchmark, "second", PerItem(), tools=default_tools(), limit=2)
    found = {name: queries.list_sessions(store, queries.SessionFilter(eval_run=name)) for name in ("first", "second")}
    assert (found["first"].total, found["second"].total) == (3, 2)
    assert {s.id for s in found["second"].items} == {r.session_id for r in evals.run_data(store, "second").items}
    assert queries.list_sessions(store, queries.SessionFilter(eval_run="third")).total == 0


def test_the_judge_scores_through_a_real_server_and_is_off_unless_asked(store, tmp_path, capsys):
    """``--scorer judge`` asks an OpenAI-compatible server for each verdict (MM-Vet's prompt), and the
    standard rules are used unless it is asked for."""
    from taco_app.cli import main

    from .test_openai_backend import FakeOpenAI

    data = write_benchmark(tmp_path, 2)
    replay = tmp_path / "replay.json"
    replay.write_text(json.dumps([step("Terminate", {"answer": "one"}), step("Terminate", {"answer": "two"})]))
    common = ["eval", "--data", str(data), "--backend", f"replay:{replay}", "--json"]
    assert main([*common, "--name", "no-judge", "--scorer", "judge"]) == 2
    assert "--judge-model" in capsys.readouterr().err
    server = FakeOpenAI()
    server.thread.start()
    try:
        server.reply("1.0")  # "one" for 1 + 0 = 1: the judge says right
        server.reply("0.0")
        status = main([*common, "--name", "judged", "--scorer", "judge", "--judge-model", "judge",
                       "--judge-base-url", server.url])
        out = capsys.readouterr().out.splitlines()
    finally:
        server.stop.set()
        server.server.shutdown()
        server.server.server_close()
    assert status == 0
    items = [json.loads(line) for line in out[:-1]]
    assert [(i["id"], i["correct"], i["how"]) for i in items] == [("q0", True, "judge"), ("q1", False, "judge")]
    asked = server.requests[0]["messages"][-1]["content"]
    assert "What is 0 + 1? | 1 | one |" in asked  # MM-Vet's table row: question | answer | prediction | score
    assert main([*common[:-1], "--name", "plain"]) == 0  # the default: the fixed rules, no server
    assert "0 of 2 right" in capsys.readouterr().out


def test_an_eval_on_a_local_checkpoint(store, tmp_path, capsys):
    """``--backend transformers:PATH``: a tiny Mantis checkpoint (random weights, the real layout) through the
    same loader users hit; two sessions at a time, whatever --concurrency asks, each item stored and counted."""
    from taco_app.cli import main

    from .tiny import mantis

    checkpoint = mantis.build(tmp_path / "mantis", tower="siglip")
    data = write_benchmark(tmp_path, 3)
    status = main(["eval", "--data", str(data), "--name", "local", "--backend", f"transformers:{checkpoint}",
                   "--device", "cpu", "--max-new-tokens", "8", "--max-replies", "1", "--concurrency", "4", "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "runs 2 session(s) at a time, not 4" in err
    summary = json.loads(out.splitlines()[-1])
    assert (summary["n"], summary["backend"], summary["model"]) == (3, f"transformers:{checkpoint}", str(checkpoint))
    run = evals.run_data(store, "local")
    assert len(run.items) == 3 and all(item.prompt_tokens > 0 for item in run.items)  # the model counted them
    assert {item.status for item in run.items} <= {"finished", "max_steps"}  # random weights rarely answer
