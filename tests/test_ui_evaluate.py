"""The Evaluate tab: starting a run and following it, refusing bad input, one run's report and two
runs' (the flipped items, each opening both sessions in Compare), and all of it in a browser.

The benchmark and the model are ``tests/eval_bench.py``'s: drawn images with known answers, and a fake
TACO behind an OpenAI API (model ``taco-a``, and ``taco-b`` which differs from it on known items).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import gradio as gr
import pytest

from taco_app.backends.openai import OpenAIBackend
from taco_app.evaluation.data import load_benchmark
from taco_app.evaluation.runs import Failure, ItemDone, evaluate
from taco_app.evaluation.stats import wilson
from taco_app.store import evals, queries
from taco_app.tools import default_tools
from taco_app.ui import eval_view
from taco_app.ui import evaluate as tab
from taco_app.ui.studio import MANUAL, OPENAI, Studio

from .eval_bench import FakeTACO, make_benchmark

N = 8  # items: q00 … q07; taco-b is wrong where taco-a is right on q00, and right where it is wrong on q01
KEY = ("", "127.0.0.1", "tab-1")
OUT = tab.Outputs(*"progress latest skipped stop resume run_a run_b".split())  # names stand in for components


@pytest.fixture
def bench(tmp_path, monkeypatch):
    monkeypatch.setenv("TACO_BENCHMARKS", str(tmp_path))  # the page reads benchmarks from there only
    return make_benchmark(tmp_path / "bench", n=N)


@pytest.fixture
def fake(bench, monkeypatch):
    with FakeTACO(bench) as server:
        monkeypatch.setenv("TACO_OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("TACO_OPENAI_MODEL", "taco-b")  # what the page's OpenAI choice runs
        yield server


@pytest.fixture
def studio(store):
    return Studio(store, probe=False, local_reason="no CUDA GPU here (test)")


def run_a(store, bench, fake, name="run-a", **kwargs):
    """Run A, as ``python app.py eval --backend openai --api-model taco-a`` would make it."""
    return evaluate(store, load_benchmark(bench.data), name, OpenAIBackend(fake.url, "taco-a"), tools=default_tools(),
                    backend_spec="openai", concurrency=2, **kwargs)


def form(studio, bench, name="run-b", **changes):
    values = dict(data=str(bench.data), name=name, mode="cota", model=OPENAI, concurrency=2, limit=None,
                  max_replies=10, resume=False)
    values.update(changes)
    return tab.check_request(studio, **values)


def follow(studio, jobs, request, key=KEY):
    """Every update of the Start handler, to the end."""
    return list(tab.run_stream(studio, jobs, key, OUT, request))


def last(updates, name):
    return [u[name] for u in updates if name in u][-1]


# --- the progress area ---------------------------------------------------------------------------


def test_progress_says_how_far_how_right_how_fast_and_what_failed():
    snap = eval_view.Snapshot("run-b", total=10, done=4, correct=3, failed=1, resumed=0, done_now=4, elapsed_s=2.0)
    lo, hi = wilson(3, 4)
    text = eval_view.progress_text(snap, "running", [Failure("q9", "the server said <b>503</b>")])
    assert text.startswith("**run-b** · running")
    assert "**4 of 10** items done" in text
    assert f"accuracy so far **75.0%** (95% CI {100 * lo:.1f}–{100 * hi:.1f}%), 3 right" in text
    assert "2.00 items/s · about 2 s left · 1 failed" in text  # (10 - 4 - 1) items at 2 a second
    assert "**1 item(s) not finished**" in text and "q9: the server said &lt;b&gt;503&lt;/b&gt;" in text

    stopping = eval_view.progress_text(snap, "running", stopping=True)
    assert "stopping: the items in flight end, every finished one is kept" in stopping
    stopped = eval_view.progress_text(snap, "finished", cancelled=True)
    assert "stopped: the 4 finished item(s) are kept" in stopped and "left" not in stopped and "took 2 s" in stopped
    resumed = eval_view.Snapshot("r", total=10, done=6, correct=3, failed=0, resumed=5, done_now=1, elapsed_s=4.0)
    said = eval_view.progress_text(resumed, "finished")
    assert "finished" in said and "**6 of 10** items done (5 finished before, kept)" in said and "0.25 items/s" in said
    empty = eval_view.Snapshot("r", total=3, done=0, correct=0, failed=0, resumed=0, done_now=0, elapsed_s=0.0)
    assert "no item finished yet" in eval_view.progress_text(empty, "running")
    assert "time left: –" in eval_view.progress_text(empty, "running")


def test_latest_items_say_the_answer_and_whether_it_was_right():
    done = [ItemDone("q2", "s2", "math", "finished", 12.5, [12, "twelve"], False, "no match", 0.1),
            ItemDone("q1", "s1", None, "max_steps", None, ["4"], False, "no answer", 0.2),
            ItemDone("q0", "s0", "count", "finished", "4", ["4"], True, "exact", 0.3)]
    assert eval_view.latest_rows(done) == [["q2", "12.5", "12 / twelve", "wrong (no match)"],
                                     ["q1", "(no answer: stopped at the step limit)", "4", "wrong (no answer)"],
                                     ["q0", "4", "4", "right (exact)"]]


# --- bad input: a message, nothing started --------------------------------------------------------


@pytest.mark.parametrize("changes, said", [
    (dict(data="  "), "Give the path of a benchmark"),
    (dict(name=""), "Give the run a name"),
    (dict(name="my run!"), "The run name 'my run!': use 1 to 128 letters"),
    (dict(model=MANUAL), "Manual mode needs a person"),
    (dict(model="a model nobody offers"), "Choose a model"),
    (dict(mode="chatty"), "Choose a mode"),
    (dict(concurrency=0), "sessions at once must be a whole number from 1 to 256"),
    (dict(concurrency=1.5), "must be a whole number"),
    (dict(concurrency=float("inf")), "must be a whole number from 1 to 256"),
    (dict(concurrency=300), "must be a whole number from 1 to 256"),
    (dict(limit=-1), "The limit must be a whole number 0 or more"),
    (dict(limit="ten"), "The limit must be a whole number, not 'ten'"),
    (dict(max_replies=None), "Give max replies"),
])
def test_a_bad_form_is_refused_with_what_to_fix(studio, bench, fake, changes, said):
    with pytest.raises(gr.Error) as caught:
        form(studio, bench, **changes)
    assert said in caught.value.message


def test_without_a_model_that_answers_any_question_the_page_says_how_to_get_one(studio, bench, monkeypatch):
    """No local checkpoint and no server: the examples' replays answer only their own pictures, so none is offered."""
    monkeypatch.delenv("TACO_OPENAI_BASE_URL", raising=False)
    assert tab.eval_choices(studio) == [] and studio.choices()  # the Ask tab still has its examples
    for model in (None, studio.choices()[0]):
        with pytest.raises(gr.Error) as caught:
            form(studio, bench, model=model)
        assert caught.value.message == tab.NO_MODEL


def test_the_page_reads_no_file_outside_the_benchmarks_folder(studio, bench, fake, tmp_path, tmp_path_factory):
    """A person who can log in cannot make the server read its other files: neither a benchmark elsewhere
    (by an absolute path, a ``..`` or a link) nor an image elsewhere named by a benchmark inside."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    outside = make_benchmark(elsewhere / "bench", n=2)
    (tmp_path / "link").symlink_to(elsewhere)
    for path in (str(outside.data), "../" + os.path.relpath(outside.data, tmp_path.parent), "link/bench/data.jsonl"):
        with pytest.raises(gr.Error, match="is not in the benchmarks folder"):
            follow(studio, tab.EvalJobs(), form(studio, bench, data=path))
    inside = tmp_path / "mine.jsonl"
    row = json.loads(bench.data.read_text().splitlines()[0])
    inside.write_text(json.dumps({**row, "images": [str(outside.data.parent / outside.plan("q00").images[0])]}) + "\n"
                      + json.dumps({**row, "id": "ok", "images": ["bench/" + row["images"][0]]}) + "\n")
    benchmark = tab.read_benchmark("mine.jsonl")  # relative: in the benchmarks folder
    assert [item.id for item in benchmark.items] == ["ok"]
    assert "is not in the benchmarks folder" in str(benchmark.problems[0])
    assert fake.requests == []


def test_no_limit_is_every_item(studio, bench, fake):
    assert form(studio, bench, limit=0).limit is None and form(studio, bench, limit=None).limit is None
    assert form(studio, bench, limit=3.0).limit == 3


def test_a_missing_file_is_said_and_nothing_starts(studio, bench, fake, tmp_path):
    jobs = tab.EvalJobs()
    with pytest.raises(gr.Error, match="does not exist"):
        follow(studio, jobs, form(studio, bench, data=str(tmp_path / "nowhere.jsonl")))
    assert evals.list_runs(studio.store) == [] and fake.requests == []
    assert not jobs.get(KEY).running  # the tab may start another run at once


def test_a_name_taken_by_other_settings_needs_the_box_ticked(studio, bench, fake):
    run_a(studio.store, bench, fake, name="shared", limit=3)
    fake.clear()
    jobs = tab.EvalJobs()
    updates = []
    with pytest.raises(gr.Error) as caught:  # the page's model is taco-b: other settings
        for update in tab.run_stream(studio, jobs, KEY, OUT, form(studio, bench, name="shared")):
            updates.append(update)
    message = caught.value.message
    assert updates[-1]["resume"] == gr.update(visible=True)  # the box that lets it go on
    assert updates[-1]["progress"].startswith("**Not started:** A run named 'shared' exists")
    assert "A run named 'shared' exists with other settings" in message and "the model: taco-a then, taco-b now" in message
    assert "Tick “Go on with the new settings”" in message and "--" not in message
    assert fake.requests == [] and len(evals.finished(studio.store, "shared")) == 3  # nothing ran
    updates = follow(studio, jobs, form(studio, bench, name="shared", resume=True))
    assert "**8 of 8** items done (3 finished before, kept)" in last(updates, "progress")
    assert evals.get_settings(studio.store, "shared")["model"] == "taco-b"
    assert fake.seen() == {f"q{i:02d}" for i in range(3, N)}  # only the items not finished before


# --- a run, followed --------------------------------------------------------------------------------


def test_a_run_streams_its_progress_lists_skipped_rows_and_refreshes_the_run_lists(studio, bench, fake):
    with bench.data.open("a") as data:  # two rows the loader skips
        data.write('{"id": "q99", "images": ["images/none.png"], "question": "?", "answer": "1"}\nnot json\n')
    updates = follow(studio, tab.EvalJobs(), form(studio, bench))
    skipped = last(updates, "skipped")
    assert "**2 row(s) of data.jsonl skipped** (the other 8 run)" in skipped
    assert re.search(r"skipped line 9 \(q99\): image .*none\.png", skipped) and "skipped line 10" in skipped
    assert updates[2]["stop"] == gr.update(interactive=True)
    truth = bench.run("taco-b", max_replies=10)
    final = last(updates, "progress")
    assert final.startswith("**run-b** · finished")
    assert f"**{N} of {N}** items done" in final and f"{truth.correct} right" in final and "0 failed" in final
    assert sorted(row[0] for row in last(updates, "latest")) == [f"q{i:02d}" for i in range(N)]
    rows = {row[0]: row for row in last(updates, "latest")}
    assert rows["q00"][3].startswith("wrong") and rows["q01"][3].startswith("right")
    assert updates[-1]["stop"] == gr.update(interactive=False)
    assert updates[-1]["run_a"]["value"] == "run-b"
    assert [value for _, value in updates[-1]["run_b"]["choices"]] == ["", "run-b"]
    assert evals.finished(studio.store, "run-b") == {i: item.correct for i, item in truth.items.items()}


def test_one_run_per_tab_and_per_name_and_stop_keeps_the_finished_items(studio, bench, fake):
    fake.hold = {"q03"}  # its first reply waits: the run cannot end until it is released
    jobs = tab.EvalJobs()
    stream = tab.run_stream(studio, jobs, KEY, OUT, form(studio, bench))
    for update in stream:  # until every other item has finished
        if "7 of 8" in update.get("progress", ""):
            break
    with pytest.raises(gr.Error, match="is still going in this tab"):
        follow(studio, jobs, form(studio, bench, name="another"))
    with pytest.raises(gr.Error, match="A run named 'run-b' is going in another tab"):
        follow(studio, jobs, form(studio, bench), key=("", "127.0.0.1", "tab-2"))
    assert jobs.stop(KEY)
    fake.release.set()  # (the step loop may have left the held reply already: either way it is not finished)
    rest = list(stream)
    final = last(rest, "progress")
    assert "stopped: the 7 finished item(s) are kept" in final and "press Start again" in final
    assert sorted(evals.finished(studio.store, "run-b")) == [f"q{i:02d}" for i in range(N) if i != 3]
    assert not jobs.stop(KEY)  # nothing runs now
    # Start again with the same name: only the stopped item runs.
    fake.clear()
    again = follow(studio, jobs, form(studio, bench))
    assert "**8 of 8** items done (7 finished before, kept)" in last(again, "progress")
    assert fake.seen() == {"q03"}


def test_items_the_model_failed_are_listed_and_retried_next_time(studio, bench, fake, monkeypatch):
    monkeypatch.setenv("TACO_OPENAI_MODEL", "taco-z")  # the server has no such model: every item fails
    updates = follow(studio, tab.EvalJobs(), form(studio, bench, limit=3))
    final = last(updates, "progress")
    assert "**0 of 3** items done" in final and "3 failed" in final and "**3 item(s) not finished**" in final
    assert "- q00: " in final and "taco\\-z" not in final and "does not exist" in final
    assert evals.finished(studio.store, "run-b") == {}


def test_a_store_failing_mid_run_ends_it_with_its_message(studio, bench, fake, monkeypatch):
    from taco_app.store import StoreError

    real, calls = evals.record_item, []

    def record_item(*args, **kwargs):
        calls.append(kwargs["item_id"])
        if len(calls) == 3:
            raise StoreError("The database is full: free some space and start again.")
        return real(*args, **kwargs)

    monkeypatch.setattr(evals, "record_item", record_item)
    updates = []
    with pytest.raises(StoreError, match="database is full"):
        for update in tab.run_stream(studio, tab.EvalJobs(), KEY, OUT, form(studio, bench, concurrency=1)):
            updates.append(update)
    final = last(updates, "progress")
    kept = len(evals.finished(studio.store, "run-b"))
    assert kept == 2 and "q02" not in evals.finished(studio.store, "run-b")  # queued items did not start
    assert final.startswith(f"**run-b** · stopped by an error: the {kept} finished item(s) are kept")
    assert f"**{kept} of {N}** items done" in final
    assert updates[-1]["stop"] == gr.update(interactive=False)


# --- reports --------------------------------------------------------------------------------------


def test_one_runs_report(studio, bench, fake, tmp_path):
    run_a(studio.store, bench, fake)
    truth = bench.run("taco-a", max_replies=10)
    view = eval_view.report_view(studio, "run-a", "", tmp_path / "report")
    lo, hi = wilson(truth.correct, N)
    assert view.summary.startswith(f"**run-a**: **{100 * truth.accuracy:.1f}%** right"
                                   f" (95% CI {100 * lo:.1f}–{100 * hi:.1f}%), {truth.correct} of {N}")
    assert "mode cota · model taco-a (openai) · scorer standard · max replies 10" in view.summary
    for category, counts in truth.by_category.items():
        assert f"| {category} | {counts['n']} | {counts['correct']} |" in view.summary
    assert f"parse errors: {truth.parse_errors['steps']} step(s) in {truth.parse_errors['sessions']} session(s)" \
        in view.summary
    assert [caption for _, caption in view.plots] == ["Accuracy by category (95% CI)", "Tool use", "Latency"]
    for path, _ in view.plots:
        assert Path(path).parent == tmp_path / "report" and Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert view.flips == [] and view.pairs == {}


def test_two_runs_report_lists_the_flips_and_each_opens_both_sessions(studio, bench, fake, tmp_path, monkeypatch):
    run_a(studio.store, bench, fake)
    follow(studio, tab.EvalJobs(), form(studio, bench))  # run-b, with taco-b
    view = eval_view.report_view(studio, "run-a", "run-b", tmp_path / "report")
    right, wrong = bench.flips("taco-a", "taco-b", max_replies=10)
    assert (right, wrong) == (["q00"], ["q01"])
    rows = sorted(view.flips)  # in the order run-a's items finished
    assert [row[:3] for row in rows] == [["q00", "math", "right in run-a, wrong in run-b"],
                                         ["q01", "math", "wrong in run-a, right in run-b"]]
    plan = bench.plan("q00")
    assert rows[0][3] == plan.question and rows[0][6] == str(plan.answer)
    assert "**2 flipped**: 1 right in A and wrong in B, 1 the other way (McNemar's exact p = 1)" in view.summary
    assert "B (the baseline)" in view.summary and "| math |" in view.summary
    a_items = {item.item_id: item for item in evals.run_data(studio.store, "run-a").items}
    b_items = {item.item_id: item for item in evals.run_data(studio.store, "run-b").items}
    assert view.pairs == {i: (a_items[i].session_id, b_items[i].session_id) for i in ("q00", "q01")}

    a, b, html, verdicts = eval_view.open_flipped(studio, view.pairs, "q00")
    assert (a, b) == view.pairs["q00"] and a in html and b in html
    assert queries.get_trace(studio.store, a).session["question"] == plan.question
    assert "No preference recorded" in verdicts
    with pytest.raises(gr.Error, match="Show a report of two runs first"):
        eval_view.open_flipped(studio, view.pairs, "q05")


def test_text_from_the_data_is_shown_as_text(studio, bench, fake, tmp_path):
    import json

    rows = [json.loads(line) for line in bench.data.read_text().splitlines()]
    rows[0]["category"] = '<img src="http://127.0.0.1:9/x"> *bold* | $x$'
    bench.data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run_a(studio.store, bench, fake, limit=2)
    summary = eval_view.report_view(studio, "run-a", "", tmp_path / "report").summary
    assert '| &lt;img src="http\\://127.0.0.1:9/x"&gt; \\*bold\\* \\| \\$x\\$ | 1 |' in summary
    assert "<img" not in summary


@pytest.mark.parametrize("a, b, said", [
    ("", "", "Pick a run"),
    ("run-a", "run-a", "'run-a' was picked twice"),
    ("nope", "", "There is no eval run named 'nope'"),
    ("run-a", "nope", "There is no eval run named 'nope'"),
])
def test_a_bad_pick_of_runs_is_said(studio, bench, fake, tmp_path, a, b, said):
    run_a(studio.store, bench, fake, limit=1)
    with pytest.raises(gr.Error, match=re.escape(said)):
        eval_view.report_view(studio, a, b, tmp_path / "report")


def test_run_lists_are_newest_first_with_their_scores(studio, bench, fake):
    run_a(studio.store, bench, fake, name="older", limit=2)
    run_a(studio.store, bench, fake, name="newer", limit=3)
    labels = eval_view.run_choices(studio)
    assert [value for _, value in labels] == ["newer", "older"]
    assert re.fullmatch(r"newer · \d/3 right · cota · taco-a", labels[0][0])


# --- in a browser -------------------------------------------------------------------------------------


CHROMIUM = Path(os.environ.get("TACO_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio"]


def choose(page, dropdown: str, label) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=label).click()


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
def test_evaluate_in_a_browser(tmp_path, bench, fake):
    """Run B from the page beside a stored run A, watch it reach 8 of 8, compare the two, and open a
    flipped item in Compare."""
    playwright = pytest.importorskip("playwright.sync_api")
    from .ui_server import running

    shots = Path(os.environ.get("TACO_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with running(tmp_path / "home") as (url, studio), playwright.sync_playwright() as p:
        run_a(studio.store, bench, fake)
        fake.hold = {"q05"}  # run B cannot end before the page has seen it running
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.locator("#ask-run").wait_for()
        page.get_by_role("tab", name="Evaluate").click()
        page.locator("#eval-data textarea, #eval-data input").first.fill(str(bench.data))
        page.locator("#eval-name textarea, #eval-name input").first.fill("run-b")
        choose(page, "#eval-model", OPENAI)
        page.locator("#eval-concurrency input").fill("2")
        stop = page.locator("#eval-stop")
        assert stop.is_disabled()
        page.locator("#eval-start").click()

        progress = page.locator("#eval-progress")
        progress.get_by_text(f"{N - 1} of {N}").wait_for(timeout=60_000)
        assert "running" in progress.inner_text()
        playwright.expect(stop).to_be_enabled(timeout=10_000)
        page.locator("#eval-latest").get_by_text("q00").first.wait_for(timeout=10_000)
        page.screenshot(path=str(shots / "evaluate-running.png"), full_page=True)
        fake.release.set()
        progress.get_by_text(f"{N} of {N}").wait_for(timeout=60_000)
        progress.get_by_text("finished").wait_for(timeout=10_000)
        playwright.expect(stop).to_be_disabled(timeout=10_000)
        truth = bench.run("taco-b", max_replies=10)
        assert f"{truth.correct} right" in progress.inner_text()

        choose(page, "#eval-run-a", re.compile(r"^run-a · "))
        page.locator("#eval-summary").get_by_text("run-a", exact=False).first.wait_for(timeout=60_000)
        choose(page, "#eval-run-b", re.compile(r"^run-b · "))
        flips = page.locator("#eval-flips")
        flips.locator("text=right in run-a, wrong in run-b >> visible=true").first.wait_for(timeout=60_000)
        flips.locator("text=wrong in run-a, right in run-b >> visible=true").first.wait_for(timeout=10_000)
        page.locator("#eval-summary").get_by_text("2 flipped").wait_for(timeout=10_000)
        page.locator("#eval-plots img").nth(2).wait_for(timeout=30_000)
        assert page.locator("#eval-plots img").count() == 3
        # The report's event has ended: no component of the page still shows it as pending.
        playwright.expect(page.get_by_text(re.compile(r"processing \|"))).to_have_count(0, timeout=30_000)
        page.screenshot(path=str(shots / "evaluate-report.png"), full_page=True)

        a_items = {i.item_id: i.session_id for i in evals.run_data(studio.store, "run-a").items}
        b_items = {i.item_id: i.session_id for i in evals.run_data(studio.store, "run-b").items}
        flips.locator("text=q00 >> visible=true").first.click()
        view = page.locator("#compare-view")
        view.get_by_text(a_items["q00"]).wait_for(timeout=30_000)
        view.get_by_text(b_items["q00"]).wait_for(timeout=10_000)
        assert page.locator("#compare-a textarea, #compare-a input").first.input_value() == a_items["q00"]
        assert page.locator("#compare-b textarea, #compare-b input").first.input_value() == b_items["q00"]
        assert page.get_by_role("tab", name="Compare").get_attribute("aria-selected") == "true"
        page.screenshot(path=str(shots / "evaluate-compare.png"), full_page=True)
        assert not errors, errors
        browser.close()
