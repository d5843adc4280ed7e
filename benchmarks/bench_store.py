"""Store benchmark: the cost of logging steps, and of listing sessions from a 10,000-session store.

Run as ``python -m benchmarks.bench_store``; prints one line per figure. Uses a throw-away TACO_HOME.
(a) 1,000 sessions x 10 steps of hand-built events through ``Store.record`` — no model, no tools,
no image files — so the figure is the store's own cost (one transaction per step, as in real runs).
(b) bulk-fills to 10,000 sessions, then times ``list_sessions`` (median of 5 runs).
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
import uuid
from typing import Any, Callable, Iterator

from taco_app.cota import events as ev
from taco_app.cota.actions import Action, step_text
from taco_app.cota.prompt import OBSERVATION_SUFFIX

SESSIONS, STEPS, TOTAL = 1_000, 10, 10_000
TOOLS = ["Calculate", "Crop", "OCR", "ZoomIn", "GetObjects"]
STATUSES = ["finished"] * 8 + ["failed", "max_steps"]


def raw_step(thought: str, action: Action) -> str:
    """What a TACO checkpoint emits for one step (compact JSON)."""
    return step_text(thought, action)


def observation(result: Any) -> str:
    return f"OBSERVATION:\n{{'result': {result!r}}}" + OBSERVATION_SUFFIX


def session_events(n: int) -> Iterator[ev.Event]:
    """The events of one session as the step loop would yield them (Calculate steps, then Terminate)."""
    sid = uuid.uuid4().hex
    yield ev.SessionStarted(session_id=sid, question=f"benchmark question {n}: what is {n}+{n}?",
                            backend="replay", model="bench", family="mantis", started_at=time.time())
    for step in range(1, STEPS):
        action = Action("Calculate", {"expression": f"{n}+{step}"})
        yield ev.ActionParsed(step=step, raw=raw_step("add", action), thought="add", action=action, generation_s=0.01)
        yield ev.Observation(step=step, action=action, observation=observation(n + step),
                             output={"result": n + step}, tool_s=0.001)
    done = Action("Terminate", {"answer": str(2 * n)})
    yield ev.ActionParsed(step=STEPS, raw=raw_step("done", done), thought="done", action=done, generation_s=0.01)
    yield ev.Finished(step=STEPS, session_id=sid, status="finished", answer=str(2 * n), steps=STEPS, total_s=0.1)


def bulk_fill(store: Any, count: int, rng: random.Random) -> None:
    """Insert sessions, steps and feedback rows directly, in batches (ORM bulk insert of dicts)."""
    from sqlalchemy import insert

    from taco_app.store.schema import FeedbackRow, SessionRow, StepRow

    now = time.time()
    for start in range(0, count, 1_000):
        sessions, steps, feedback = [], [], []
        for n in range(start, min(start + 1_000, count)):
            sid = uuid.uuid4().hex
            status = rng.choice(STATUSES)
            sessions.append(dict(id=sid, created_at=now - rng.uniform(0, 365 * 86400), question=f"filler question {n} about a {rng.choice(['cat', 'dog', 'receipt', 'chart'])}",
                                 backend="replay", model=rng.choice(["taco-8b", "taco-2b", "mantis"]), family="mantis",
                                 tool_versions={}, status=status, answer=str(n) if status == "finished" else None))
            for step in range(1, STEPS + 1):
                name = "Terminate" if step == STEPS else rng.choice(TOOLS)
                action = Action(name, {"answer": str(n)} if name == "Terminate" else {"x": step})
                steps.append(dict(session_id=sid, index=step, raw=raw_step("t", action), thought="t", action=action.as_dict(),
                                  action_name=name, observation=None if name == "Terminate" else observation(step),
                                  image_ids=[], overlays={}))
            if n % 7 == 0:
                feedback.append(dict(session_id=sid, rating=rng.choice(["up", "down"]), created_at=now))
        with store.writing() as db:
            db.execute(insert(SessionRow), sessions)
            db.execute(insert(StepRow), steps)
            if feedback:
                db.execute(insert(FeedbackRow), feedback)


def median_ms(fn: Callable[[], Any], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    home = tempfile.mkdtemp(prefix="taco-bench-")
    os.environ["TACO_HOME"] = home
    os.environ.pop("TACO_DB_URL", None)
    from taco_app.store import queries as q
    from taco_app.store.db import Store

    store = Store.open()
    print(f"store: {store.url}")

    t0 = time.perf_counter()
    for n in range(SESSIONS):
        for _ in store.record(session_events(n)):
            pass
    elapsed = time.perf_counter() - t0
    steps = SESSIONS * STEPS
    print(f"log {steps} steps ({SESSIONS} sessions x {STEPS}) via Store.record: {elapsed:.2f} s, "
          f"{steps / elapsed:.0f} steps/s, {elapsed / steps * 1000:.3f} ms/step")

    t0 = time.perf_counter()
    bulk_fill(store, TOTAL - SESSIONS, random.Random(7))
    print(f"bulk fill to {TOTAL} sessions ({TOTAL * STEPS} steps): {time.perf_counter() - t0:.2f} s")

    cases = {
        "page 1, unfiltered": q.SessionFilter(),
        "page 1, text 'receipt'": q.SessionFilter(text="receipt"),
        "page 1, status 'failed'": q.SessionFilter(status="failed"),
        "page 1, tool 'OCR'": q.SessionFilter(tool="OCR"),
        "page 1, rating 'up'": q.SessionFilter(rating="up"),
        "page 100, unfiltered": q.SessionFilter(page=100),
    }
    for label, flt in cases.items():
        page = q.list_sessions(store, flt)  # warm-up, and the total to print
        print(f"list_sessions {label}: {median_ms(lambda: q.list_sessions(store, flt)):.1f} ms "
              f"(median of 5; {page.total} match, {len(page.items)} on the page)")
    print(f"dashboard: {median_ms(lambda: q.dashboard(store)):.1f} ms (median of 5)")
    trace_id = q.list_sessions(store).items[0].id
    print(f"get_trace: {median_ms(lambda: q.get_trace(store, trace_id)):.1f} ms (median of 5)")

    from taco_app.store.export import export

    from taco_app.store.export import FORMATS

    for fmt in FORMATS:
        out = Path(tempfile.mkdtemp()) / fmt
        t0 = time.perf_counter()
        result = export(store, out, fmt)
        print(f"export {fmt}: {result.count} sessions in {time.perf_counter() - t0:.2f} s "
              f"({len(result.skipped)} left out: {result.reasons}), "
              f"{(out / FORMATS[fmt].data_file).stat().st_size / 1e6:.1f} MB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
