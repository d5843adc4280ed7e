"""The eval report from hand-built runs (no database): every count against a truth computed by hand,
the comparison of two runs against scipy's binomial test, the files written, an empty run, and the
same run giving the same bytes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from PIL import Image
from scipy.stats import binomtest

from taco_app.evaluation.report import build_report, markdown, write_report
from taco_app.evaluation.stats import wilson
from taco_app.store.evals import ItemRecord, RunData, StepStat

from .conftest import ROOT

SETTINGS = {"data": "bench.jsonl", "fingerprint": "ab" * 32, "mode": "cota", "backend": "replay",
            "model": "tiny", "family": "mantis", "scorer": "standard", "max_replies": 10}


def step(index, action=None, *, parse_error=False, error=None, gen=0.5, tool=0.1) -> StepStat:
    return StepStat(index=index, action=action, parse_error=parse_error, error_code=error,
                    generation_s=gen, tool_s=tool)


def item(item_id, category, correct, steps, *, status="finished", total_s=1.0, prompt=0, output=0,
         prediction="x", answers=("y",), question=None) -> ItemRecord:
    return ItemRecord(item_id=item_id, category=category, session_id=f"s-{item_id}",
                      question=question or f"question {item_id}?", status=status, answers=list(answers),
                      prediction=prediction, correct=correct, how="exact" if correct else "no match",
                      steps=tuple(steps), total_s=total_s, prompt_tokens=prompt, output_tokens=output)


def run_a() -> RunData:
    """Six items: planted parse errors, an unknown action, bad arguments, a timeout, a tool failure, a
    max_steps item, two categories and one item without category, one item without a time."""
    items = (
        item("q1", "count", True, [step(0, "OCR"), step(1, parse_error=True), step(2, "Terminate")],
             total_s=2.0, prompt=100, output=10, prediction="3", answers=["3"]),
        item("q2", "count", False, [step(0, "OCR"), step(1, "Calculate", error="bad_arguments"),
                                    step(2, parse_error=True), step(3, parse_error=True), step(4, "OCR")],
             status="max_steps", total_s=10.0, prompt=300, output=40, prediction=None, answers=["7", 7]),
        item("q3", "color", True, [step(0, "FooBar", error="unknown_action"),
                                   step(1, "GetObjects", error="timeout"), step(2, "Terminate")],
             total_s=4.0, prompt=200, output=20, prediction="red", answers=["red"]),
        item("q4", "color", False, [step(0, "GetObjects", error="tool"), step(1, "Terminate")],
             total_s=None, prediction=float("inf"), answers=["blue"]),
        item("q5", None, True, [step(0, "Calculate"), step(1, "Calculate"), step(2, "Terminate")],
             total_s=1.0, prompt=50, output=5, prediction={"value": 12}, answers=[12]),
        item("q6", "count", True, [step(0, "Terminate")], total_s=3.0, prompt=50, output=5),
    )
    return RunData(name="ckpt-a", created_at=1700000000.0, settings=dict(SETTINGS), items=items)


def run_b() -> RunData:
    """The baseline: q1..q5 of run A (q6 missing) and q7 of its own, in another order.
    Against A: q1 and q3 flip to right, q2 flips to wrong, q4 both wrong, q5 both right."""
    items = (
        item("q7", "count", True, [step(0, "Terminate")]),
        item("q5", None, True, [step(0, "Terminate")], prediction="12"),
        item("q3", "color", False, [step(0, "Terminate")], prediction="green"),
        item("q1", "count", False, [step(0, "Terminate")], prediction="4"),
        item("q2", "count", True, [step(0, "Terminate")], prediction="7"),
        item("q4", "color", False, [step(0, "Terminate")], prediction="navy"),
    )
    return RunData(name="baseline", created_at=1690000000.0, settings=dict(SETTINGS, model="base"), items=items)


def test_counts_equal_the_hand_computed_truth():
    report = build_report(run_a())
    assert report["run"] == "ckpt-a" and report["settings"] == SETTINGS
    assert (report["n"], report["correct"]) == (6, 4)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["ci95"] == pytest.approx(list(wilson(4, 6)))
    by = report["by_category"]
    assert list(by) == ["(none)", "color", "count"]  # sorted by name, not by first appearance
    assert {cat: (c["n"], c["correct"]) for cat, c in by.items()} == {"(none)": (1, 1), "color": (2, 1),
                                                                      "count": (3, 2)}
    assert by["count"]["accuracy"] == pytest.approx(2 / 3)
    assert by["count"]["ci95"] == pytest.approx(list(wilson(2, 3)))
    v = report["validity"]
    assert v["steps"] == 3 + 5 + 3 + 2 + 3 + 1
    assert v["mean_steps"] == pytest.approx(17 / 6)
    assert v["parse_errors"] == {"steps": 3, "sessions": 2}
    assert (v["unknown_actions"], v["bad_arguments"], v["timeouts"], v["tool_failures"]) == (1, 1, 1, 1)
    assert v["max_steps"] == 1
    # Terminate and the unknown action FooBar are no tools; sorted by name.
    assert list(v["tools"]) == ["Calculate", "GetObjects", "OCR"]
    assert v["tools"]["OCR"] == {"uses": 3, "sessions": 2, "correct": 1, "accuracy": 0.5}
    assert v["tools"]["Calculate"] == {"uses": 3, "sessions": 2, "correct": 1, "accuracy": 0.5}
    assert v["tools"]["GetObjects"] == {"uses": 2, "sessions": 2, "correct": 1, "accuracy": 0.5}
    # Times 2, 10, 4, 1, 3 (q4 has none): sorted 1 2 3 4 10; p95 = 4 + 0.8 * (10 - 4).
    assert report["latency_s"] == pytest.approx({"p50": 3.0, "p95": 8.8, "mean": 4.0})
    assert report["tokens"] == pytest.approx({"prompt": 700, "output": 80, "prompt_per_item": 700 / 6,
                                              "output_per_item": 80 / 6})
    assert report["vs"] is None


def test_a_tool_is_counted_once_per_session_and_its_accuracy_is_of_those_sessions():
    items = (item("a", "x", True, [step(0, "OCR"), step(1, "OCR"), step(2, "OCR")]),
             item("b", "x", False, [step(0, "OCR")]),
             item("c", "x", False, [step(0, "Crop")], status="cancelled"),
             item("d", "x", True, [step(0, "Crop"), step(1, "OCR")]))
    validity = build_report(RunData("t", 0.0, {}, items))["validity"]
    assert validity["max_steps"] == 0  # a session that ended otherwise did not stop at the step limit
    tools = validity["tools"]
    assert tools == {"Crop": {"uses": 2, "sessions": 2, "correct": 1, "accuracy": 0.5},
                     "OCR": {"uses": 5, "sessions": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)}}


def test_vs_pairs_items_by_id_and_lists_the_flips_in_run_order():
    vs = build_report(run_a(), run_b())["vs"]
    assert vs["other"] == "baseline"
    assert vs["common"] == 5  # q6 only in A, q7 only in B
    assert (vs["both_right"], vs["both_wrong"], vs["flipped_right"], vs["flipped_wrong"]) == (1, 1, 2, 1)
    assert vs["mcnemar_p"] == pytest.approx(binomtest(2, 3, 0.5).pvalue)
    assert vs["accuracy"] == pytest.approx({"ckpt-a": 3 / 5, "baseline": 2 / 5})
    assert [(f["item_id"], f["direction"]) for f in vs["flips"]] == [("q1", "right"), ("q2", "wrong"),
                                                                     ("q3", "right")]
    q1 = vs["flips"][0]
    assert q1 == {"item_id": "q1", "category": "count", "question": "question q1?", "direction": "right",
                  "session_id": "s-q1", "other_session_id": "s-q1", "prediction": "3", "other_prediction": "4",
                  "answers": ["3"]}
    assert vs["flips"][1]["prediction"] is None and vs["flips"][1]["other_prediction"] == "7"
    # The other way round, the flips swap.
    back = build_report(run_b(), run_a())["vs"]
    assert (back["flipped_right"], back["flipped_wrong"]) == (1, 2)
    assert [(f["item_id"], f["direction"]) for f in back["flips"]] == [("q3", "wrong"), ("q1", "wrong"),
                                                                       ("q2", "right")]


@pytest.mark.parametrize("b,c", [(7, 1), (0, 5), (12, 9), (0, 0)])
def test_mcnemar_p_is_the_exact_binomial_test_on_the_flips(b, c):
    mine, theirs = [], []
    for i in range(b + c + 4):
        right = i < b or i >= b + c + 2  # b flips to right, c to wrong, 2 both wrong, 2 both right
        mine.append(item(f"i{i}", None, right, []))
        theirs.append(item(f"i{i}", None, (b <= i < b + c) or i >= b + c + 2, []))
    vs = build_report(RunData("new", 0.0, {}, tuple(mine)), RunData("old", 0.0, {}, tuple(theirs)))["vs"]
    assert (vs["flipped_right"], vs["flipped_wrong"], vs["both_wrong"], vs["both_right"]) == (b, c, 2, 2)
    expected = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    assert vs["mcnemar_p"] == pytest.approx(expected)


def test_markdown_headline_reads_like_the_paper():
    items = tuple(item(f"q{i}", None, i < 19, []) for i in range(30))
    text = markdown(build_report(RunData("r", 0.0, {}, items)))
    assert "accuracy 63.3% (95% CI 45.5–78.1%), 19 of 30" in text


def test_markdown_has_every_section_and_the_flips():
    a = run_a()
    long = "How many\nred | blue cars are parked " + "along the street " * 10 + "?"
    a = dataclasses.replace(a, items=(dataclasses.replace(a.items[0], question=long),) + a.items[1:])
    text = markdown(build_report(a, run_b()))
    lo, hi = wilson(4, 6)
    assert f"accuracy 66.7% (95% CI {100 * lo:.1f}–{100 * hi:.1f}%), 4 of 6" in text
    for heading in ("## By category", "## Validity", "## Tools", "## Latency and tokens",
                    "## Compared with baseline", "### Flips", "## Definitions"):
        assert heading in text
    assert "| count | 3 | 2 | 66.7% |" in text and "| (none) | 1 | 1 | 100.0% |" in text
    assert "| parse errors (steps) | 3 |" in text and "| sessions with a parse error | 2 |" in text
    assert "| stopped at the step limit | 1 |" in text and "| unknown actions | 1 |" in text
    assert "| OCR | 3 | 2 | 1 | 50.0% |" in text
    assert "| seconds per item | 3.00 | 8.80 | 4.00 |" in text
    assert "| ckpt-a right | 1 | 2 |" in text and "| ckpt-a wrong | 1 | 1 |" in text
    assert f"McNemar's exact p = {binomtest(2, 3, 0.5).pvalue:.3g}" in text
    flip_rows = [line for line in text.splitlines() if line.startswith("| q")]
    assert [row.split(" | ")[0] for row in flip_rows] == ["| q1", "| q2", "| q3"]
    q1 = flip_rows[0]
    assert "How many red \\| blue cars" in q1 and "…" in q1 and "\n" not in q1  # one line, shortened, escaped
    assert "| 3 | 4 | 3 |" in q1  # its prediction, the baseline's, the answers
    assert "| 7 / 7 |" in flip_rows[1]  # accepted answers, string and number


def test_write_report_files(tmp_path):
    out = tmp_path / "new" / "folder"  # made when missing
    paths = write_report(run_a(), out, vs=run_b())
    assert sorted(p.name for p in paths) == ["accuracy_by_category.png", "latency.png", "report.json",
                                             "report.md", "tools.png"]
    assert all(p.parent == out and p.is_file() for p in paths)
    for png in (p for p in paths if p.suffix == ".png"):
        with Image.open(png) as image:
            image.load()
            assert image.format == "PNG" and 300 <= image.width <= 3000 and 200 <= image.height <= 3000
    text = (out / "report.json").read_text(encoding="utf-8")

    def no_constants(name):
        raise AssertionError(f"{name} in report.json")

    data = json.loads(text, parse_constant=no_constants)
    assert data == build_report(run_a(), run_b())
    assert data["vs"]["common"] == 5
    assert next(f for f in data["vs"]["flips"] if f["item_id"] == "q3")["category"] == "color"
    assert (out / "report.md").read_text(encoding="utf-8") == markdown(data)
    for name in ("accuracy_by_category.png", "tools.png", "latency.png"):
        assert f"]({name})" in (out / "report.md").read_text(encoding="utf-8")


def test_no_nan_anywhere():
    """A prediction of NaN or infinity, or a time that is NaN, gives None, never NaN, in report.json."""
    nan = float("nan")
    items = (item("a", "x", True, [], prediction=nan, total_s=nan),
             item("b", "x", False, [], prediction=[1.0, float("-inf")], total_s=2.0))
    other = RunData("o", 0.0, {"temperature": nan}, (item("a", "x", False, [], prediction=float("inf")),
                                                    item("b", "x", True, [])))
    report = build_report(RunData("r", 0.0, {"temperature": nan}, items), other)
    text = json.dumps(report, allow_nan=False)  # raises on NaN or infinity
    assert report["settings"] == {"temperature": None}
    assert report["latency_s"] == {"p50": 2.0, "p95": 2.0, "mean": 2.0}
    assert [(f["prediction"], f["other_prediction"]) for f in report["vs"]["flips"]] == [(None, None),
                                                                                        ([1.0, None], "x")]
    assert "NaN" not in text and "Infinity" not in text


def test_an_empty_run_says_so(tmp_path):
    empty = RunData("nothing-yet", 0.0, dict(SETTINGS), ())
    paths = write_report(empty, tmp_path, vs=RunData("other-empty", 0.0, {}, ()))
    assert len(paths) == 5
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert (data["n"], data["correct"], data["accuracy"]) == (0, 0, None)
    assert data["by_category"] == {} and data["validity"]["tools"] == {} and data["validity"]["mean_steps"] is None
    assert data["latency_s"] == {"p50": None, "p95": None, "mean": None}
    assert data["tokens"] == {"prompt": 0, "output": 0, "prompt_per_item": None, "output_per_item": None}
    assert data["vs"]["common"] == 0 and data["vs"]["mcnemar_p"] == 1.0 and data["vs"]["flips"] == []
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "No finished items" in text and "no finished item in common" in text
    for png in (p for p in paths if p.suffix == ".png"):
        with Image.open(png) as image:
            assert image.format == "PNG"


def test_same_run_same_bytes_and_old_files_are_overwritten(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    write_report(run_a(), first)
    write_report(run_a(), second, vs=run_b())
    write_report(run_a(), second)  # over a report with a comparison: none is left behind
    for name in ("report.json", "report.md"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert json.loads((second / "report.json").read_text(encoding="utf-8"))["vs"] is None
    with_vs = [build_report(run_a(), run_b()) for _ in range(2)]
    assert json.dumps(with_vs[0]) == json.dumps(with_vs[1]) and markdown(with_vs[0]) == markdown(with_vs[1])


def test_importing_the_report_does_not_import_matplotlib():
    code = "import sys, taco_app.evaluation.report; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
