"""``python app.py eval`` and ``eval-report`` end to end, against a fake TACO whose every answer is known.

The benchmark (tests/eval_bench.py) is drawn here: 32 items in three categories, each with a script
that plants something the report must count (a reply that is not JSON, an unknown action, bad
arguments, an item that never calls Terminate, a number within 1%, a multiple-choice letter …).
Every number the command and the report print is checked against what the scripts planted; the
interval and the McNemar p against scipy.
"""

from __future__ import annotations

import ast
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image
from scipy.stats import binomtest

from taco_app.cli import main
from taco_app.store import evals

from .conftest import ROOT
from .eval_bench import FakeTACO, Truth, make_benchmark

pytestmark = pytest.mark.store  # CI runs them again on PostgreSQL

N = 32
MAX_REPLIES = 2  # keeps the item that never calls Terminate to 3 steps
TACO_MIRROR = Path(os.environ.get("TACO_MIRROR", "/work/.mirror/SalesforceAIResearch+TACO/repo"))
TACO_COMMIT = "f1c277f049cabd61184fb4640378f20a1101f070"


def asked(plan) -> str:
    """The question as the model is asked it: with its options as TACO's AgentDataset.build_mcq_prompt wrote them."""
    if not plan.choices:
        return plan.question
    options = "".join(f"{letter}. {choice}\n" for letter, choice in zip("ABCDEFGHIJ", plan.choices))
    return f"Question: {plan.question}\nOptions:\n{options}Please select the correct answer from the options above. \n"


@pytest.fixture(scope="module")
def truth(tmp_path_factory) -> Truth:
    return make_benchmark(tmp_path_factory.mktemp("bench"), n=N)


@pytest.fixture
def fake(truth):
    with FakeTACO(truth, max_replies=MAX_REPLIES) as server:
        yield server


def eval_args(truth: Truth, fake: FakeTACO, name: str, *extra: str, model: str = "taco-a", data: Path | None = None):
    return ["eval", "--data", str(data or truth.data), "--name", name, *fake.cli_args(model),
            "--max-replies", str(MAX_REPLIES), "--json", *extra]


def run_eval(capsys, *args: str) -> tuple[int, list[dict], list[dict], str]:
    """``main(args)`` in this process: (exit status, item lines, other lines, stderr)."""
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    items = [line for line in lines if line.get("type") == "item"]
    return status, items, [line for line in lines if line.get("type") != "item"], err


def run_report(capsys, *args: str) -> tuple[int, str, str]:
    """``eval-report`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main(["eval-report", *args])
    out, err = capsys.readouterr()
    return status, out, err


def wilson(k: int, n: int) -> list[float]:
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return [ci.low, ci.high]


# --- the counts ------------------------------------------------------------------------------------


def session_modes(store, session_ids) -> set[str]:
    from taco_app.store.schema import SessionRow

    with store.reading() as db:
        return {db.get(SessionRow, session_id).mode for session_id in session_ids}


def test_every_number_of_a_run_and_its_report_is_what_was_planted(truth, fake, capsys, tmp_path, store):
    status, items, rest, err = run_eval(capsys, *eval_args(truth, fake, "taco-a"))
    assert status == 0, err
    expected = truth.run("taco-a", max_replies=MAX_REPLIES)
    stored = {item.item_id: item for item in evals.run_data(store, "taco-a").items}
    assert {i: (s.session_id, s.status) for i, s in stored.items()} == {
        line["id"]: (line["session_id"], expected.items[line["id"]].status) for line in items}
    assert session_modes(store, [line["session_id"] for line in items]) == {"cota"}
    assert {r.body["max_tokens"] for r in fake.requests} == {2000}  # TACO's cap on a CoTA step
    summary = rest[-1]
    assert summary["type"] == "eval" and summary["name"] == "taco-a"
    assert (summary["n"], summary["correct"]) == (expected.n, expected.correct) == (N, 24)
    assert summary["accuracy"] == pytest.approx(expected.accuracy, abs=1e-12)
    assert summary["ci95"] == pytest.approx(wilson(expected.correct, expected.n), abs=1e-9)
    assert (summary["mode"], summary["backend"], summary["model"]) == ("cota", "openai", "taco-a")
    assert (summary["failed"], summary["resumed"], summary["skipped_rows"]) == (0, 0, 0)

    assert sorted(line["id"] for line in items) == truth.ids  # each item once
    for line in items:
        want = expected.items[line["id"]]
        assert (line["correct"], line["status"], line["category"]) == (want.correct, want.status, want.category), line
        assert line["prediction"] == want.prediction, line
        assert len(line["session_id"]) == 32 and line["total_s"] >= 0
    how = {line["id"]: line["how"] for line in items}
    assert (how["q02"], how["q09"], how["q22"], how["q24"]) == ("number", "exact", "choice", "choice")

    out = tmp_path / "report"
    status, _, err = run_report(capsys, "taco-a", "--out", str(out))
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    assert (report["run"], report["n"], report["correct"]) == ("taco-a", N, expected.correct)
    assert report["accuracy"] == pytest.approx(expected.accuracy, abs=1e-12)
    assert report["ci95"] == pytest.approx(wilson(expected.correct, N), abs=1e-9)
    assert report["settings"]["mode"] == "cota" and report["settings"]["max_replies"] == MAX_REPLIES
    assert set(report["by_category"]) == set(expected.by_category)
    for name, want in expected.by_category.items():
        got = report["by_category"][name]
        assert (got["n"], got["correct"]) == (want["n"], want["correct"]), name
        assert got["ci95"] == pytest.approx(wilson(want["correct"], want["n"]), abs=1e-9)
    validity = report["validity"]
    assert validity["steps"] == expected.steps == 55
    assert validity["mean_steps"] == pytest.approx(expected.steps / N)
    assert validity["parse_errors"] == expected.parse_errors == {"steps": 4, "sessions": 3}
    assert (validity["unknown_actions"], validity["bad_arguments"], validity["max_steps"]) == (
        expected.unknown_actions, expected.bad_arguments, expected.max_steps) == (1, 2, 1)
    assert (validity["timeouts"], validity["tool_failures"]) == (0, 0)
    tools = {name: {k: v for k, v in entry.items() if k != "accuracy"} for name, entry in validity["tools"].items()}
    assert tools == expected.tools()
    assert set(tools) == {"Calculate", "SolveMathEquation", "Crop", "ZoomIn"}
    for entry in validity["tools"].values():
        assert entry["accuracy"] == pytest.approx(entry["correct"] / entry["sessions"])
    assert {k: report["tokens"][k] for k in ("prompt", "output")} == expected.tokens
    assert report["tokens"]["prompt_per_item"] == pytest.approx(expected.tokens["prompt"] / N)
    assert report["latency_s"]["p50"] is not None and report["vs"] is None

    assert "taco-a" in (out / "report.md").read_text()
    plots = sorted(out.glob("*.png"))
    assert len(plots) >= 3
    for plot in plots:
        with Image.open(plot) as image:
            assert image.format == "PNG" and image.width > 100


def test_a_comparison_lists_exactly_the_planted_flips(truth, fake, capsys, tmp_path):
    lines = {}
    for model in ("taco-a", "taco-b"):
        status, items, _, err = run_eval(capsys, *eval_args(truth, fake, f"run-{model}", model=model))
        assert status == 0, err
        lines[model] = {line["id"]: line for line in items}
    out = tmp_path / "vs"
    status, _, err = run_report(capsys, "run-taco-a", "--vs", "run-taco-b", "--out", str(out))
    assert status == 0, err
    vs = json.loads((out / "report.json").read_text())["vs"]
    right, wrong = truth.flips(max_replies=MAX_REPLIES)
    assert (right, wrong) == (["q00", "q12", "q18", "q22", "q25"], ["q01"])  # B also differs on q14, q27: no flip
    a, b = truth.run("taco-a", max_replies=MAX_REPLIES), truth.run("taco-b", max_replies=MAX_REPLIES)
    assert vs["other"] == "run-taco-b" and vs["common"] == N
    assert (vs["flipped_right"], vs["flipped_wrong"]) == (len(right), len(wrong))
    assert vs["both_right"] == sum(a.items[i].correct and b.items[i].correct for i in truth.ids)
    assert vs["both_wrong"] == sum(not a.items[i].correct and not b.items[i].correct for i in truth.ids)
    assert vs["mcnemar_p"] == pytest.approx(binomtest(len(right), len(right) + len(wrong), 0.5).pvalue, abs=1e-12)
    assert vs["accuracy"] == pytest.approx({"run-taco-a": a.accuracy, "run-taco-b": b.accuracy})
    flips = {flip["item_id"]: flip for flip in vs["flips"]}
    assert len(flips) == len(vs["flips"])
    directions = {**dict.fromkeys(right, "right"), **dict.fromkeys(wrong, "wrong")}
    assert {i: f["direction"] for i, f in flips.items()} == directions
    for item_id, flip in flips.items():
        assert flip["session_id"] == lines["taco-a"][item_id]["session_id"]
        assert flip["other_session_id"] == lines["taco-b"][item_id]["session_id"]
        assert flip["prediction"] == a.items[item_id].prediction
        assert flip["other_prediction"] == b.items[item_id].prediction
        assert flip["question"] == asked(truth.plan(item_id))
    # The other way round, the same flips change direction.
    status, _, err = run_report(capsys, "run-taco-b", "--vs", "run-taco-a", "--out", str(tmp_path / "ba"))
    assert status == 0, err
    back = json.loads((tmp_path / "ba" / "report.json").read_text())["vs"]
    assert (back["flipped_right"], back["flipped_wrong"]) == (len(wrong), len(right))
    assert {f["item_id"]: f["direction"] for f in back["flips"]} == {**dict.fromkeys(right, "wrong"),
                                                                   **dict.fromkeys(wrong, "right")}


# --- direct mode -----------------------------------------------------------------------------------

# TACO's direct-answer prompt, written out from SalesforceAIResearch/TACO at f1c277f: taco/prompt.py
# DirectAnswerPrompt (the goal is the whole system prompt; get_prompt_for_curr_query), taco/data.py
# format_query (an <img "path"> tag per image), autogen's gpt4v_formatter and content_str (a tag becomes
# an image part, read back as "<image>") and LLaVAAgent._image_reply (system message, "\n", one
# "###Human: …\n" line per message, "\n###Assistant: ").
TACO_DIRECT_GOAL = ("You are a helpful assistant, and your goal is to answer the # USER REQUEST # based on the"
                    " image(s).\n")


def taco_direct_text(question: str, n_images: int) -> str:
    query = "".join(f"image-{i}: <image>\n" for i in range(n_images)) + f"{question}\n"
    content = f"\n# USER REQUEST #:\n{query}\n"
    return TACO_DIRECT_GOAL + "\n" + f"###Human: {content}\n" + "\n###Assistant: "


def _taco_source(path: str) -> ast.Module:
    done = subprocess.run(["git", "-C", str(TACO_MIRROR), "show", f"{TACO_COMMIT}:{path}"], capture_output=True,
                          text=True, check=True)
    return ast.parse(done.stdout)


def taco_direct_text_from_its_code(question: str, image_paths: list[str]) -> str:
    """The same text made by running TACO's own functions, taken from its source (mirror needed)."""
    from typing import Any as _Any, Dict, List, Optional, Union
    import re

    wanted = {
        "taco/prompt.py": {"PlanPrompt", "DirectAnswerPrompt"},
        "taco/data.py": {"format_query"},
        "autogen/agentchat/utils.py": {"parse_tags_from_content", "_parse_tags_from_text",
                                       "_parse_attributes_from_tags", "_reconstruct_attributes"},
        "autogen/agentchat/contrib/img_utils.py": {"gpt4v_formatter"},
        "autogen/code_utils.py": {"content_str"},
    }
    namespace: dict[str, Any] = {"re": re, "Any": _Any, "Dict": Dict, "List": List, "Optional": Optional,
                                 "Union": Union, "UserMessageTextContentPart": dict,
                                 "UserMessageImageContentPart": dict}
    for path, names in wanted.items():
        nodes = [node for node in _taco_source(path).body if getattr(node, "name", None) in names]
        assert {node.name for node in nodes} == names, path
        exec(compile(ast.Module(body=nodes, type_ignores=[]), path, "exec"), namespace)
    namespace["utils"] = SimpleNamespace(parse_tags_from_content=namespace["parse_tags_from_content"])
    agent_module = _taco_source("autogen/agentchat/contrib/llava_agent.py")
    sep = next(node for node in agent_module.body if isinstance(node, ast.Assign) and node.targets[0].id == "SEP")
    agent = next(node for node in agent_module.body if getattr(node, "name", None) == "LLaVAAgent")
    reply = next(node for node in agent.body if getattr(node, "name", None) == "_image_reply")
    exec(compile(ast.Module(body=[sep, reply], type_ignores=[]), "llava_agent.py", "exec"), namespace)

    prompter = namespace["DirectAnswerPrompt"](actions=[])
    formatter = namespace["gpt4v_formatter"]
    message = formatter(prompter.get_prompt_for_curr_query(namespace["format_query"](image_paths, question)), "url")
    sent: list[str] = []
    model = SimpleNamespace(system_message=formatter(prompter.get_task_prompt_only(), "url"), llava_mode="mantis-hf",
                            llm_config={"config_list": [{}]},
                            llava_call_binary=lambda prompt, images, **_: sent.append(prompt) or "B")
    namespace["_image_reply"](model, messages=[{"role": "user", "content": message}], sender=None)
    return sent[0]


def test_direct_mode_sends_tacos_direct_prompt_byte_for_byte_and_the_reply_is_the_answer(truth, fake, capsys, store):
    status, items, rest, err = run_eval(capsys, *eval_args(truth, fake, "direct", "--mode", "direct"))
    assert status == 0, err
    assert session_modes(store, [line["session_id"] for line in items]) == {"direct"}
    expected = truth.run("taco-a", "direct")
    assert (rest[-1]["n"], rest[-1]["correct"], rest[-1]["mode"]) == (N, expected.correct, "direct")
    for line in items:
        assert line["prediction"] == expected.items[line["id"]].prediction  # " 14.29 gallons\n" -> "14.29 gallons"
        assert line["correct"] == expected.items[line["id"]].correct, line
    assert sorted(r.item_id for r in fake.requests) == truth.ids  # one request per item, no step after it
    assert {r.mode for r in fake.requests} == {"direct"}

    two = truth.plan("q10")
    assert len(two.images) == 2
    want = taco_direct_text(two.question, 2)
    if (TACO_MIRROR / "HEAD").exists():  # the transcription is what TACO's code makes
        assert want == taco_direct_text_from_its_code(two.question, two.images)
    (sent,) = [r for r in fake.requests if r.item_id == "q10"]
    assert sent.user_text == want
    content = sent.body["messages"][-1]["content"]
    assert [part["type"] for part in content] == ["text", "image_url", "text", "image_url", "text"]
    assert {r.body["max_tokens"] for r in fake.requests} == {512}  # TACO's cap on a direct answer


# --- going on where a run stopped -----------------------------------------------------------------


def test_a_run_goes_on_where_it_stopped_and_asks_nothing_twice(truth, fake, capsys):
    status, first, rest, err = run_eval(capsys, *eval_args(truth, fake, "resumed", "--limit", "10"))
    assert status == 0, err
    assert len(first) == 10 and rest[-1]["n"] == 10
    done = {line["id"] for line in first}
    assert done == set(truth.ids[:10])  # --limit N: the first N items
    fake.clear()
    status, second, rest, err = run_eval(capsys, *eval_args(truth, fake, "resumed"))
    assert status == 0, err
    assert len(second) == N - 10 and {line["id"] for line in second} == set(truth.ids) - done
    assert fake.seen() == set(truth.ids) - done  # nothing asked about the first 10
    expected = truth.run("taco-a", max_replies=MAX_REPLIES)
    assert (rest[-1]["n"], rest[-1]["correct"], rest[-1]["resumed"]) == (N, expected.correct, 10)
    fake.clear()
    status, third, rest, err = run_eval(capsys, *eval_args(truth, fake, "resumed"))  # nothing left to do
    assert status == 0 and third == [] and fake.requests == [] and rest[-1]["n"] == N


def test_a_name_taken_with_other_settings_is_refused_unless_resumed(truth, fake, capsys, store):
    status, items, _, err = run_eval(capsys, *eval_args(truth, fake, "taken", "--limit", "3"))
    assert status == 0 and len(items) == 3, err
    fake.clear()
    status, items, rest, err = run_eval(capsys, *eval_args(truth, fake, "taken", "--mode", "direct"))
    assert status == 2 and items == [] and rest == []
    assert len(err.strip().splitlines()) == 1 and "--resume" in err and "--mode" in err, err
    assert fake.requests == [] and len(evals.run_data(store, "taken").items) == 3
    status, items, rest, err = run_eval(capsys, *eval_args(truth, fake, "taken", "--mode", "direct", "--resume"))
    assert status == 0, err
    assert len(items) == N - 3 and rest[-1]["n"] == N and rest[-1]["mode"] == "direct"
    assert {r.mode for r in fake.requests} == {"direct"}
    assert evals.run_data(store, "taken").settings["mode"] == "direct"


# --- Ctrl-C ---------------------------------------------------------------------------------------


def _reader(stream, into: queue.Queue) -> threading.Thread:
    def read():
        for line in stream:
            into.put(line)
        into.put(None)
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_keeps_every_finished_item_and_the_next_run_redoes_only_the_rest(truth, fake, taco_home, capsys):
    k = 5
    fake.finish_budget = k  # after k items, every last reply is held: the items in flight cannot finish
    args = eval_args(truth, fake, "stopped", "--concurrency", "2")
    process = subprocess.Popen([sys.executable, "app.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "TACO_HOME": str(taco_home)})
    out, err = queue.Queue(), queue.Queue()
    readers = [_reader(process.stdout, out), _reader(process.stderr, err)]
    try:
        printed = []
        while len(printed) < k:
            line = out.get(timeout=120)
            assert line is not None, "eval ended before printing k items"
            printed.append(json.loads(line))
        assert fake.holding.wait(60)  # an item in flight is waiting for its last reply
        process.send_signal(signal.SIGINT)
        try:  # promptly: not after the backend's time limit (120 s) on the replies held in flight
            status, prompt = process.wait(timeout=20), True
        except subprocess.TimeoutExpired:  # let the replies go, to check all the rest before failing
            fake.release.set()
            status, prompt = process.wait(timeout=60), False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for thread in readers:
        thread.join(timeout=10)
    rest = [line for line in iter(out.get_nowait, None)]
    said = "".join(iter(err.get_nowait, None))
    assert status == 130, said
    assert all(json.loads(line)["type"] != "item" for line in rest)
    finished = [line["id"] for line in printed]
    assert all(line["type"] == "item" for line in printed)
    assert len(fake.finished) == k and set(fake.finished) == set(finished)

    from taco_app.store.db import Store

    with_store = Store.open()
    try:
        stored = evals.run_data(with_store, "stopped")
        assert sorted(item.item_id for item in stored.items) == sorted(finished)
        assert {item.session_id for item in stored.items} == {line["session_id"] for line in printed}
    finally:
        with_store.close()

    fake.finish_budget = None
    fake.clear()
    status, again, summary, stderr = run_eval(capsys, *args)
    assert status == 0, stderr
    assert {line["id"] for line in again} == set(truth.ids) - set(finished) and len(again) == N - k
    assert fake.seen() == set(truth.ids) - set(finished)
    expected = truth.run("taco-a", max_replies=MAX_REPLIES)
    assert (summary[-1]["n"], summary[-1]["correct"]) == (N, expected.correct)
    assert prompt, "eval went on waiting for the replies in flight for 20 s after Ctrl-C (it exits once they come)"


# --- bad rows ------------------------------------------------------------------------------------


def test_bad_rows_are_reported_with_their_line_and_the_good_ones_evaluated(truth, fake, capsys, tmp_path):
    (tmp_path / "images").mkdir()
    good = [truth.plan(i) for i in ("q00", "q12", "q22")]
    for plan in good:
        for name in plan.images:
            (tmp_path / name).write_bytes((truth.folder / name).read_bytes())
    rows = [
        json.dumps(good[0].row()),
        json.dumps({"id": "gone", "images": ["images/gone.png"], "question": "What is on it?", "answer": "1"}),
        json.dumps(good[1].row()),
        '{"id": "broken", "images": ["images/q00.png"], "question": "cut off',
        json.dumps({"id": "typed", "images": ["images/q00.png"], "question": "What is it?", "answer": {"x": 1}}),
        json.dumps(good[2].row()),
    ]
    data = tmp_path / "mixed.jsonl"
    data.write_text("\n".join(rows) + "\n")
    status, items, rest, err = run_eval(capsys, *eval_args(truth, fake, "mixed", data=data))
    assert status == 0, err
    assert sorted(line["id"] for line in items) == ["q00", "q12", "q22"]
    assert rest[-1]["skipped_rows"] == 3 and rest[-1]["n"] == 3
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 3, err
    assert skipped[0].startswith("skipped line 2 (gone): ") and "images/gone.png" in skipped[0]
    assert skipped[1].startswith("skipped line 4")
    assert skipped[2].startswith("skipped line 5 (typed): ") and "answer" in skipped[2]
    assert fake.seen() == {"q00", "q12", "q22"}
