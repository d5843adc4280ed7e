"""An eval run: every item of a benchmark through the step loop, stored as a session, scored, resumable.

Items run in worker threads, ``concurrency`` at a time, through the same :func:`taco_app.runner.run`,
tools, store and backends as a live session. Against an OpenAI-compatible server (vLLM) that is N
requests in flight, which the server batches; a local checkpoint generates one reply at a time (its
own lock), so it takes at most :attr:`Backend.max_sessions` sessions at once: one generating while
another's tool runs. The tools are shared and thread-safe.

An item is *finished* when its session ended with an answer or at the step limit; it is then scored
and written to the run (:mod:`taco_app.store.evals`) at once, so a crash or Ctrl-C loses only the
items in flight. A session the backend broke, or a picture that cannot be opened, leaves its item
unfinished: running the same name again retries exactly those.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

from taco_app.cota import events as ev
from taco_app.cota.backend import Backend
from taco_app.cota.prompt import MAX_REPLIES, MODES
from taco_app.evaluation.data import Benchmark, Item
from taco_app.evaluation.scoring import Scorer, StandardScorer
from taco_app.evaluation.stats import wilson
from taco_app.media import ImageLoadError
from taco_app.runner import run
from taco_app.store import evals
from taco_app.store.db import Store
from taco_app.tools import Toolbox
from taco_app.tools.execution import DEFAULT_TOOL_TIMEOUT

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@:=-]{0,127}")
FINISHED = ("finished", "max_steps")  # the session statuses that finish an item
MAX_CONCURRENCY = 256
POLL_S = 0.2  # how often the run looks at its stop event while items are in flight
# The settings a run keeps: going on with other values needs --resume (the report shows the latest).
SETTING_NAMES = {"data": "--data", "fingerprint": "the data's content", "mode": "--mode", "backend": "--backend",
                 "model": "the model", "family": "--family", "scorer": "--scorer", "max_replies": "--max-replies"}


class EvalError(ValueError):
    """A run that cannot start as asked; the message says why and what to do."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise EvalError(f"--name {name!r}: use 1 to 128 letters, digits and . _ + @ : = - (starting with a letter or"
                        " digit), e.g. taco-8b-mmvet")
    return name


@dataclass
class ItemDone:
    """One finished item: its session and its score."""

    item_id: str
    session_id: str
    category: str | None
    status: str
    prediction: Any
    answers: list[Any]
    correct: bool
    how: str
    total_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"type": "item", "id": self.item_id, "session_id": self.session_id, "correct": self.correct,
                "prediction": ev.json_safe(self.prediction), "answers": self.answers, "category": self.category,
                "status": self.status, "how": self.how, "total_s": self.total_s}


@dataclass
class Failure:
    """An item left unfinished this time (it is retried next time), and why."""

    item_id: str
    message: str


@dataclass
class Progress:
    """How far a run is; ``done``/``correct`` count the items finished this time and before (resumed)."""

    name: str
    total: int
    resumed: int = 0
    resumed_correct: int = 0
    done_now: int = 0
    correct_now: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def done(self) -> int:
        return self.resumed + self.done_now

    @property
    def correct(self) -> int:
        return self.resumed_correct + self.correct_now

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.done if self.done else None

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    @property
    def items_per_s(self) -> float:
        elapsed = self.elapsed_s
        return self.done_now / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.items_per_s
        left = self.total - self.done - self.failed
        return left / rate if rate > 0 else None


@dataclass
class Summary:
    """The end of a run, as the last line of ``eval --json``."""

    name: str
    n: int
    correct: int
    settings: dict[str, Any]
    failed: list[Failure]
    resumed: int
    skipped_rows: int
    elapsed_s: float
    items_per_s: float
    cancelled: bool

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None

    def as_dict(self) -> dict[str, Any]:
        lo, hi = wilson(self.correct, self.n)
        return {"type": "eval", "name": self.name, "n": self.n, "correct": self.correct, "accuracy": self.accuracy,
                "ci95": [lo, hi], "mode": self.settings["mode"], "backend": self.settings["backend"],
                "model": self.settings["model"], "failed": len(self.failed), "resumed": self.resumed,
                "skipped_rows": self.skipped_rows, "cancelled": self.cancelled,
                "elapsed_s": round(self.elapsed_s, 3), "items_per_s": round(self.items_per_s, 4)}


def run_settings(benchmark: Benchmark, backend: Backend, *, backend_spec: str, mode: str, scorer: Scorer,
                 max_replies: int) -> dict[str, Any]:
    return {"data": str(benchmark.path), "fingerprint": benchmark.fingerprint, "mode": mode, "backend": backend_spec,
            "model": backend.model_id, "family": backend.family, "scorer": scorer.name, "max_replies": max_replies}


def open_run(store: Store, name: str, settings: dict[str, Any], *, resume: bool) -> dict[str, bool]:
    """Create the run, or check that an existing one has these settings; its finished items (id -> correct).

    A run of that name with other settings is refused unless ``resume``: then it goes on with these.
    """
    check_name(name)
    stored = evals.get_settings(store, name)
    if stored is None:
        evals.create_run(store, name, settings)
        return {}
    changed = [key for key in SETTING_NAMES if stored.get(key) != settings.get(key)]
    if changed and not resume:
        said = "; ".join(f"{SETTING_NAMES[k]}: {_short(stored.get(k))} then, {_short(settings.get(k))} now" for k in changed)
        raise EvalError(f"a run named {name!r} exists with other settings ({said}). Pass --resume to go on with"
                        " these settings, or choose another --name")
    if changed:
        evals.update_settings(store, name, settings)
    return evals.finished(store, name)


def evaluate(store: Store, benchmark: Benchmark, name: str, backend: Backend, *, tools: Toolbox,
             backend_spec: str | None = None, mode: str = "cota", scorer: Scorer | None = None, concurrency: int = 1,
             resume: bool = False, limit: int | None = None, cancel: threading.Event | None = None,
             on_item: Callable[[ItemDone, Progress], None] | None = None,
             on_failure: Callable[[Failure, Progress], None] | None = None,
             on_start: Callable[[Progress], None] | None = None,
             max_replies: int = MAX_REPLIES, tool_timeout_s: float = DEFAULT_TOOL_TIMEOUT) -> Summary:
    """Run the benchmark's unfinished items (the first ``limit`` of them, counting finished ones) and return
    the summary. ``on_item``/``on_failure`` are called as items end, one at a time (never concurrently)."""
    if mode not in MODES:
        raise EvalError(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise EvalError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}, not {concurrency}")
    if limit is not None and limit < 1:
        raise EvalError(f"--limit must be 1 or more, not {limit}")
    if max_replies < 0:
        raise EvalError("--max-replies must be 0 or more")
    scorer = scorer or StandardScorer()
    settings = run_settings(benchmark, backend, backend_spec=backend_spec or backend.name, mode=mode, scorer=scorer,
                            max_replies=max_replies)
    finished = open_run(store, name, settings, resume=resume)
    chosen = benchmark.items[:limit] if limit else benchmark.items
    todo = [item for item in chosen if item.id not in finished]
    progress = Progress(name, total=len(chosen), resumed=sum(item.id in finished for item in chosen),
                        resumed_correct=sum(finished.get(item.id, False) for item in chosen))
    cancel = cancel or threading.Event()
    lock = threading.Lock()
    failures: list[Failure] = []
    if on_start:
        on_start(progress)

    def one(item: Item) -> None:
        if cancel.is_set():
            return
        outcome = _run_item(store, item, backend, tools=tools, mode=mode, scorer=scorer, cancel=cancel,
                            max_replies=max_replies, tool_timeout_s=tool_timeout_s)
        if outcome is None:  # stopped
            return
        with lock:
            if isinstance(outcome, Failure):
                progress.failed += 1
                failures.append(outcome)
                if on_failure:
                    on_failure(outcome, progress)
                return
            evals.record_item(store, name, item_id=item.id, session_id=outcome.session_id, category=item.category,
                              answers=outcome.answers, prediction=outcome.prediction, correct=outcome.correct,
                              how=outcome.how)
            progress.done_now += 1
            progress.correct_now += outcome.correct
            if on_item:
                on_item(outcome, progress)

    workers = min(concurrency, backend.max_sessions or concurrency, max(len(todo), 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="taco-eval") as pool:
        pending = {pool.submit(one, item) for item in todo}
        try:
            while pending:  # woken often, so Ctrl-C is seen at once, and replies a server holds are cut
                done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()  # an error in a worker (the store failing) surfaces here
                if cancel.is_set():
                    backend.abort()
        except BaseException:  # the run ends here: queued items do not start, running ones stop
            cancel.set()
            pool.shutdown(wait=False, cancel_futures=True)
            backend.abort()
            raise
    stored = evals.finished(store, name)
    return Summary(name=name, n=len(stored), correct=sum(stored.values()), settings=settings, failed=failures,
                   resumed=progress.resumed, skipped_rows=len(benchmark.problems), elapsed_s=progress.elapsed_s,
                   items_per_s=progress.items_per_s, cancelled=cancel.is_set())


def _run_item(store: Store, item: Item, backend: Backend, *, tools: Toolbox, mode: str, scorer: Scorer,
              cancel: threading.Event, max_replies: int, tool_timeout_s: float) -> ItemDone | Failure | None:
    """One item's session, recorded; its score, a failure, or None when it was stopped."""
    try:
        images = item.open_images()
    except (ImageLoadError, OSError) as err:
        return Failure(item.id, f"cannot open its image: {err}")
    end: ev.Finished | None = None
    error = ""
    events = run(item.prompt, images, backend, tools=tools, sink=store.images, cancel=cancel, max_replies=max_replies,
                 tool_timeout_s=tool_timeout_s, mode=mode)
    for event in store.record(events):
        if isinstance(event, ev.Error):
            error = event.message
        elif isinstance(event, ev.Finished):
            end = event
    if end is None or end.status == "cancelled" or (cancel.is_set() and end.status not in FINISHED):
        return None
    if end.status not in FINISHED:
        return Failure(item.id, error or end.message or f"the session ended {end.status}")
    prediction = end.answer if end.status == "finished" else None
    try:
        verdict = scorer.score(prediction, item)
    except Exception as err:  # a judge that cannot be reached: the item is retried next time
        return Failure(item.id, f"the {scorer.name} scorer failed: {err}")
    return ItemDone(item_id=item.id, session_id=end.session_id, category=item.category, status=end.status,
                    prediction=prediction, answers=list(item.answers), correct=verdict.correct, how=verdict.how,
                    total_s=end.total_s)


def _short(value: Any, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
