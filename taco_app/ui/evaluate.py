"""The Evaluate tab: run a benchmark through a model with live progress, then read and compare runs.

Start runs :func:`taco_app.evaluation.runs.evaluate` (the same as ``python app.py eval``) in a
thread of its own; the Start handler follows it, showing how far it is (done of total, accuracy so
far with its 95% interval, items per second, time left, failures, the latest finished items) a few
times a second. Each browser tab runs one eval at a time, and a run name runs in one tab at a time;
Stop ends the items in flight and keeps every finished one, so Start with the same name goes on.

Below, one run's report (or two runs', item by item: :func:`taco_app.evaluation.report.build_report`
with ``vs``): the summary, the plots (written by :func:`~taco_app.evaluation.report.write_report` into
the app's private temporary folder, one folder per browser tab, replaced by its next report) and the
items that flipped between the two. Clicking a flipped item opens both sessions side by side in
the Compare tab (:func:`wire_compare`). The words and tables it shows are :mod:`taco_app.ui.eval_view`'s.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from taco_app.cota.backend import Backend, BackendError
from taco_app.cota.prompt import MAX_REPLIES, MODES
from taco_app.evaluation.data import Benchmark, DataError, load_benchmark
from taco_app.evaluation.runs import (MAX_CONCURRENCY, EvalError, Failure, ItemDone, Progress, Summary, check_name,
                                      evaluate)
from taco_app.settings import current
from taco_app.tools import default_tools
from taco_app.ui import render
from taco_app.ui.compare import ComparePage
from taco_app.ui.eval_view import Snapshot, latest_rows, open_flipped, progress_text, report_view, run_choices, skipped_text
from taco_app.ui.live import ModelLoadError, Owner, loading, owner
from taco_app.ui.scratch import LatestFolders
from taco_app.ui.studio import LOCAL, MANUAL, OPENAI, Studio

UPDATE_S = 0.25  # at most four progress updates a second while items finish
TICK_S = 1.0  # and at least one a second (items/s and the time left move on)
LATEST = 10  # finished items listed, newest first
LATEST_HEADERS = ["item", "answer", "accepted", "result"]
FLIP_HEADERS = ["item", "category", "flipped", "question", "answer in A", "answer in B", "accepted"]
NONE = ""  # the "compared with" choice for one run alone
NO_OTHER = ("(none: this run alone)", NONE)
# The command line's words in the messages of runs.evaluate, as the page names the same fields.
PAGE_WORDS = (
    ("Pass --resume to go on with these settings, or choose another --name",
     "Tick “Go on with the new settings” to go on with these, or choose another run name"),
    ("--name", "the run name"), ("--data", "the benchmark file"), ("--mode", "the mode"),
    ("--backend", "the model choice"), ("--family", "the prompt format"), ("--scorer", "the scorer"),
    ("--max-replies", "max replies"), ("--concurrency", "sessions at once"), ("--limit", "the limit"),
)


def for_page(message: str) -> str:
    """An eval error's message with the command line's flags named as the page names its fields."""
    for flag, words in PAGE_WORDS:
        message = message.replace(flag, words)
    return message[:1].upper() + message[1:]


# --- one tab's run -----------------------------------------------------------------------------


@dataclass
class EvalJob:
    """One tab's eval run: its thread, its Stop, and what the page shows of it."""

    name: str
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "starting"  # starting | running | finished | refused
    progress: Progress | None = None
    started_at: float = 0.0
    ended_at: float | None = None
    latest: deque = field(default_factory=lambda: deque(maxlen=LATEST))  # ItemDone, newest first
    failures: list[Failure] = field(default_factory=list)
    summary: Summary | None = None
    error: BaseException | None = None
    version: int = 0  # bumped at every change, so the follower knows when to redraw
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def running(self) -> bool:
        return self.state in ("starting", "running")

    # evaluate()'s callbacks, called in the run's threads one at a time

    def on_start(self, progress: Progress) -> None:
        with self.changed:
            self.progress, self.started_at, self.state = progress, progress.started, "running"
            self._bump()

    def on_item(self, done: ItemDone, progress: Progress) -> None:
        with self.changed:
            self.latest.appendleft(done)
            self._bump()

    def on_failure(self, failure: Failure, progress: Progress) -> None:
        with self.changed:
            self.failures.append(failure)
            self._bump()

    def end(self, summary: Summary | None = None, error: BaseException | None = None) -> None:
        with self.changed:
            self.summary, self.error, self.ended_at, self.state = summary, error, time.perf_counter(), "finished"
            self._bump()

    def _bump(self) -> None:
        self.version += 1
        self.changed.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Wait until something changed after version ``seen`` (or ``timeout``); the version now."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != seen, timeout=timeout)
            return self.version

    def view(self) -> "JobView":
        """What the page shows now, copied at one moment (the run's threads keep changing it)."""
        with self.changed:
            p = self.progress
            snap = None
            if p is not None:
                end = self.ended_at if self.ended_at is not None else time.perf_counter()
                snap = Snapshot(p.name, p.total, p.done, p.correct, p.failed, p.resumed, p.done_now,
                                max(end - p.started, 0.0))
            return JobView(self.version, self.state == "finished", snap, list(self.latest), list(self.failures),
                           self.summary is not None and self.summary.cancelled, self.error is not None)


@dataclass(frozen=True)
class JobView:
    version: int
    finished: bool
    snapshot: Snapshot | None
    latest: list[ItemDone]
    failures: list[Failure]
    cancelled: bool
    failed: bool  # ended by an error (the store failing), not by its items


class EvalJobs:
    """Each browser tab's eval run, by :func:`~taco_app.ui.live.owner`: one at a time per tab, and one
    tab at a time per run name (two would run the same items twice)."""

    def __init__(self) -> None:
        self._jobs: dict[Owner, EvalJob] = {}
        self._lock = threading.Lock()

    def reserve(self, key: Owner, name: str) -> EvalJob:
        """A new job for this tab, or gr.Error when it already runs one or the name runs elsewhere."""
        with self._lock:
            mine = self._jobs.get(key)
            if mine is not None and mine.running:
                raise gr.Error(f"The run {mine.name!r} is still going in this tab: press Stop, or wait until it"
                               " finishes, before starting another.")
            if any(job.running and job.name == name for job in self._jobs.values()):
                raise gr.Error(f"A run named {name!r} is going in another tab: wait for it, or choose another name.")
            job = self._jobs[key] = EvalJob(name)
            return job

    def get(self, key: Owner) -> EvalJob | None:
        with self._lock:
            return self._jobs.get(key)

    def stop(self, key: Owner) -> bool:
        """Stop this tab's run; False when it runs none."""
        job = self.get(key)
        if job is None or not job.running:
            return False
        job.cancel.set()
        return True

    def forget(self, key: Owner) -> None:
        """The tab closed: stop its run (its finished items are kept)."""
        with self._lock:
            job = self._jobs.pop(key, None)
        if job is not None:
            job.cancel.set()


# --- starting a run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRequest:
    """What the form asks for, checked."""

    data: str
    name: str
    mode: str
    model: str
    concurrency: int
    limit: int | None
    max_replies: int
    resume: bool


def _whole(value: Any, what: str, *, low: int, high: int | None = None, optional: bool = False) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return None
        raise gr.Error(f"Give {what}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{what[0].upper()}{what[1:]} must be a whole number, not {value!r}.") from None
    if not math.isfinite(number) or number != int(number) or number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise gr.Error(f"{what[0].upper()}{what[1:]} must be a whole number {bounds}, not {value!r}.")
    return int(number)


def check_request(studio: Studio, data: str | None, name: str | None, mode: str | None, model: str | None,
                  concurrency: Any, limit: Any, max_replies: Any, resume: bool | None) -> RunRequest:
    """The form's values, or gr.Error saying what to fix (nothing has started)."""
    data, name = (data or "").strip(), (name or "").strip()
    if not data:
        raise gr.Error(f"Give the path of a benchmark in {current().benchmarks_dir}: a .jsonl file, a .parquet file"
                       " or a folder written by datasets' save_to_disk.")
    if not name:
        raise gr.Error("Give the run a name (e.g. taco-8b-mmvet): running the same name again goes on where it"
                       " stopped.")
    try:
        check_name(name)
    except EvalError as err:
        raise gr.Error(for_page(str(err)) + ".") from None
    if mode not in MODES:
        raise gr.Error(f"Choose a mode: {' or '.join(MODES)}.")
    if model == MANUAL:
        raise gr.Error("Manual mode needs a person at every step of every item: choose a model for an eval run.")
    choices = eval_choices(studio)
    if not choices:
        raise gr.Error(NO_MODEL)
    if not model or model not in choices:
        raise gr.Error(f"Choose a model: {' or '.join(choices)}.")
    return RunRequest(data, name, mode, model,
                      _whole(concurrency, "the number of sessions at once", low=1, high=MAX_CONCURRENCY),
                      _whole(limit, "the limit", low=0, optional=True) or None,  # 0: every item
                      _whole(max_replies, "max replies", low=0), bool(resume))


NO_MODEL = ("No model can answer a benchmark here: start the app where a TACO checkpoint and CUDA are, or set"
            " TACO_OPENAI_BASE_URL and TACO_OPENAI_MODEL to a vLLM server (README, Serving TACO with vLLM).")


def eval_choices(studio: Studio) -> list[str]:
    """The Ask tab's models that can answer any question: the local checkpoint and the server. Not manual
    mode (a person cannot write every step of a benchmark), nor the examples' replayed scripts (each
    answers its own picture)."""
    return [label for label in studio.choices() if label in (LOCAL, OPENAI)]


def backend_spec(studio: Studio, label: str) -> str:
    """How ``python app.py eval --backend`` names this choice, so the CLI and the page go on with each
    other's runs."""
    if label == LOCAL:
        return "auto"
    return "openai" if label == OPENAI else label


def read_benchmark(path: str) -> Benchmark:
    """The benchmark at ``path`` in the benchmarks folder (``TACO_BENCHMARKS``): the page reads no other file
    of the server, so a person who can log in cannot make it read one. A relative path starts there."""
    folder = current().benchmarks_dir
    try:
        return load_benchmark(folder / path, within=folder)  # an absolute path stays as it is, and is checked
    except DataError as err:
        raise gr.Error(str(err)) from None


@dataclass
class Outputs:
    """The components the Start handler updates."""

    progress: Any
    latest: Any
    skipped: Any
    stop: Any
    resume: Any
    run_a: Any
    run_b: Any


def run_stream(studio: Studio, jobs: EvalJobs, key: Owner, out: Outputs, form: RunRequest) -> Iterator[dict[Any, Any]]:
    """Start the run in its own thread and follow it: component updates until it has ended.

    Bad input (an unreadable file, a name taken by other settings, a model that cannot be had) is a
    gr.Error before anything runs; the run's own failure ends the updates with one."""
    job = jobs.reserve(key, form.name)
    try:
        yield {out.progress: f"Reading {render.escape_text(form.data)} …", out.latest: [], out.skipped: ""}
        benchmark = read_benchmark(form.data)
        skipped = skipped_text(benchmark)
        yield {out.skipped: skipped}
        try:
            backend = studio.backend(form.model, cancel=job.cancel)
        except BackendError as err:
            raise gr.Error(str(err)) from None
        if not backend.loaded:  # the local checkpoint's first use
            try:
                for line in loading(backend):
                    yield {out.progress: line}
            except ModelLoadError as err:
                raise gr.Error(str(err)) from None
        _launch(studio, job, benchmark, backend, form)
        job.wait(0, timeout=None)  # until it started, or was refused
        if job.progress is None:  # refused before any item ran
            yield from _refused(job, out)
    except BaseException:
        if job.state == "starting":
            job.state = "refused"
        raise
    yield {out.stop: gr.update(interactive=True), out.resume: gr.update(visible=False)}
    yield from _follow(studio, job, out)


def _launch(studio: Studio, job: EvalJob, benchmark: Benchmark, backend: Backend, form: RunRequest) -> None:
    def work() -> None:
        try:
            summary = evaluate(studio.store, benchmark, form.name, backend, tools=default_tools(),
                               backend_spec=backend_spec(studio, form.model), mode=form.mode,
                               concurrency=form.concurrency, resume=form.resume, limit=form.limit, cancel=job.cancel,
                               on_item=job.on_item, on_failure=job.on_failure, on_start=job.on_start,
                               max_replies=form.max_replies, tool_timeout_s=current().tool_timeout)
        except BaseException as err:  # shown by the follower (a refusal, or the store failing)
            job.end(error=err)
        else:
            job.end(summary=summary)

    threading.Thread(target=work, name=f"taco-eval-{form.name}", daemon=True).start()


def _refused(job: EvalJob, out: Outputs) -> Iterator[dict[Any, Any]]:
    """The run ended before it started: its reason as a gr.Error in words for the page. When going on
    with the new settings would start it, the box that says so is shown first."""
    job.state = "refused"
    err = job.error
    if not isinstance(err, EvalError):
        raise err if err is not None else RuntimeError("the eval run ended before it started")
    message = for_page(str(err))
    if "--resume" in str(err):
        yield {out.resume: gr.update(visible=True), out.progress: f"**Not started:** {render.escape_text(message)}"}
    raise gr.Error(message)


def _follow(studio: Studio, job: EvalJob, out: Outputs) -> Iterator[dict[Any, Any]]:
    """The run's progress as it goes (a few updates a second at most, one a second at least), then its
    end: Stop disabled, the run lists refreshed with this run picked, and its failure raised if it failed."""
    shown_latest = -1
    while True:
        view = job.view()
        state = "failed" if view.failed else "finished" if view.finished else "running"
        updates: dict[Any, Any] = {out.progress: progress_text(view.snapshot, state, view.failures,
                                                               stopping=job.cancel.is_set(), cancelled=view.cancelled)}
        if view.latest and view.version != shown_latest:
            updates[out.latest] = latest_rows(view.latest)
            shown_latest = view.version
        if view.finished:
            break
        yield updates
        shown_at = time.perf_counter()
        job.wait(view.version, timeout=TICK_S)
        _pause(job, UPDATE_S - (time.perf_counter() - shown_at))
    choices = run_choices(studio)
    updates[out.stop] = gr.update(interactive=False)
    updates[out.run_a] = gr.update(choices=choices, value=job.name if job.name in {v for _, v in choices} else None)
    updates[out.run_b] = gr.update(choices=[NO_OTHER, *choices])
    yield updates
    if job.error is not None:
        raise job.error


def _pause(job: EvalJob, seconds: float) -> None:
    """Wait ``seconds``, or less if the run ends meanwhile."""
    if seconds <= 0:
        return
    with job.changed:
        job.changed.wait_for(lambda: job.state == "finished", timeout=seconds)


# --- the tab -------------------------------------------------------------------------------------


@dataclass
class EvalPage:
    data: gr.Textbox
    name: gr.Textbox
    model: gr.Dropdown
    mode: gr.Radio
    concurrency: gr.Number
    limit: gr.Number
    max_replies: gr.Number
    resume: gr.Checkbox
    start: gr.Button
    stop: gr.Button
    progress: gr.Markdown
    latest: gr.Dataframe
    skipped: gr.Markdown
    run_a: gr.Dropdown
    run_b: gr.Dropdown
    show: gr.Button
    refresh: gr.Button
    summary: gr.Markdown
    plots: gr.Gallery
    flips: gr.Dataframe
    pairs: gr.State
    jobs: EvalJobs


def build(studio: Studio, app: gr.Blocks) -> EvalPage:
    """The Evaluate tab's components and events (call inside a ``gr.Tab``); ``app`` refreshes the run
    lists when a page loads and stops a tab's run when the tab closes."""
    jobs, reports = EvalJobs(), LatestFolders()
    gr.Markdown("Run a benchmark through a model, every item a stored session, scored as it finishes (the same"
                " as `python app.py eval`). Running a name again goes on where it stopped.")
    with gr.Row():
        data = gr.Textbox(label=f"Benchmark in {current().benchmarks_dir} (TACO_BENCHMARKS)", scale=3,
                          elem_id="eval-data",
                          placeholder="mmvet/data.jsonl — or a .parquet file, or a save_to_disk folder")
        name = gr.Textbox(label="Run name", scale=2, placeholder="taco-8b-mmvet", elem_id="eval-name")
    with gr.Row():
        choices = eval_choices(studio)
        model = gr.Dropdown(choices, value=choices[0] if choices else None, label="Model", scale=3,
                            elem_id="eval-model")
        mode = gr.Radio(list(MODES), value=MODES[0], label="Mode (cota: TACO's actions; direct: one reply)",
                        scale=2, elem_id="eval-mode")
        concurrency = gr.Number(1, precision=0, minimum=1, maximum=MAX_CONCURRENCY, label="Sessions at once",
                                scale=1, elem_id="eval-concurrency")
        limit = gr.Number(0, precision=0, minimum=0, label="Only the first N items (0: all)", scale=1,
                          elem_id="eval-limit")
        max_replies = gr.Number(MAX_REPLIES, precision=0, minimum=0, label="Max replies", scale=1,
                                elem_id="eval-max-replies")
    resume = gr.Checkbox(False, label="Go on with the new settings (a run of this name exists with other settings)",
                         visible=False, elem_id="eval-resume")
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="eval-start")
        stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="eval-stop")
    progress = gr.Markdown(elem_id="eval-progress")
    latest = gr.Dataframe(headers=LATEST_HEADERS, interactive=False, wrap=True, label="Latest finished items",
                          elem_id="eval-latest")
    skipped = gr.Markdown(elem_id="eval-skipped")

    gr.Markdown("### Reports\nPick a run, and a second one to compare them item by item.")
    with gr.Row():
        run_a = gr.Dropdown([], value=None, label="Run (A)", scale=3, elem_id="eval-run-a")
        run_b = gr.Dropdown([NO_OTHER], value=NONE, label="Compared with (B, the baseline)",
                            scale=3, elem_id="eval-run-b")
        show = gr.Button("Show report", variant="primary", scale=1, elem_id="eval-show")
        refresh = gr.Button("Refresh the list", scale=1, elem_id="eval-refresh")
    summary = gr.Markdown(elem_id="eval-summary")
    plots = gr.Gallery(label="Plots", columns=3, height="auto", object_fit="contain", elem_id="eval-plots")
    gr.Markdown("Items that flipped between A and B: click one to open both sessions side by side in Compare.")
    flips = gr.Dataframe(headers=FLIP_HEADERS, interactive=False, wrap=True, label="Flipped items",
                         elem_id="eval-flips")
    pairs = gr.State({})
    page = EvalPage(data, name, model, mode, concurrency, limit, max_replies, resume, start, stop, progress, latest,
                    skipped, run_a, run_b, show, refresh, summary, plots, flips, pairs, jobs)
    out = Outputs(progress, latest, skipped, stop, resume, run_a, run_b)

    def start_run(data_, name_, mode_, model_, concurrency_, limit_, max_replies_, resume_, request: gr.Request):
        form = check_request(studio, data_, name_, mode_, model_, concurrency_, limit_, max_replies_, resume_)
        yield from run_stream(studio, jobs, owner(request), out, form)

    start.click(start_run, [data, name, mode, model, concurrency, limit, max_replies, resume],
                [progress, latest, skipped, stop, resume, run_a, run_b], api_name="eval_start",
                show_progress="hidden")  # the progress area says how far it is

    def stop_run(request: gr.Request):
        if not jobs.stop(owner(request)):
            raise gr.Error("No eval run is going in this tab.")
        return gr.update(interactive=False)

    stop.click(stop_run, None, stop, api_name="eval_stop")

    def lists(current_a, current_b):
        found = run_choices(studio)
        names = {value for _, value in found}
        return (gr.update(choices=found, value=current_a if current_a in names else None),
                gr.update(choices=[NO_OTHER, *found],
                          value=current_b if current_b in names else NONE))

    refresh.click(lists, [run_a, run_b], [run_a, run_b], api_name=False)
    app.load(lists, [run_a, run_b], [run_a, run_b], api_name=False)
    def models(current):  # e.g. TACO_OPENAI_BASE_URL set since the app was built
        found = eval_choices(studio)
        return gr.update(choices=found, value=current if current in found else (found or [None])[0])

    app.load(models, model, model, api_name=False)

    def show_report(a, b, request: gr.Request):
        cache = Path(plots.GRADIO_CACHE)  # the app's private temporary folder (Gradio's cache in it)
        cache.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="report-", dir=cache))
        try:
            view = report_view(studio, a, b, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        reports.replace(owner(request), folder)
        return view.summary, view.plots, view.flips, view.pairs

    def picked(a, b, request: gr.Request):  # a dropdown changed: show the report once a run is picked
        if not (a or "").strip():
            return (gr.skip(),) * 4
        return show_report(a, b, request)

    # One report at a time, in the order asked: a quick second pick never shows the first one's report.
    report_outputs, queue = [summary, plots, flips, pairs], dict(concurrency_id="eval-report", concurrency_limit=1)
    show.click(show_report, [run_a, run_b], report_outputs, api_name="eval_report", **queue)
    run_a.input(picked, [run_a, run_b], report_outputs, api_name=False, **queue)
    run_b.input(picked, [run_a, run_b], report_outputs, api_name=False, **queue)

    def forget(request: gr.Request) -> None:  # the tab closed: stop its run, drop its report
        jobs.forget(owner(request))
        reports.forget(owner(request))

    app.unload(forget)
    return page


def wire_compare(studio: Studio, tabs: gr.Tabs, page: EvalPage, compare: ComparePage) -> None:
    """A click on a flipped item opens its two sessions (A's, then B's) in the Compare tab."""

    def from_flip(pairs, evt: gr.SelectData):
        row = evt.row_value if isinstance(getattr(evt, "row_value", None), list) else None
        item_id = str(row[0]) if row else None
        if item_id is None or item_id not in (pairs or {}):
            return (gr.skip(),) * 5  # a header or an empty table: nothing to open
        return (*open_flipped(studio, pairs, item_id), gr.Tabs(selected="compare"))

    page.flips.select(from_flip, page.pairs, [compare.a, compare.b, compare.view, compare.verdicts, tabs],
                      api_name=False)
