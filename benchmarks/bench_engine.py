"""Benchmarks of the engine: the loop's own overhead per step, and OCR cold vs warm.

Run with `make bench` (or `python -m benchmarks.bench_engine`). Prints one line per figure.

Loop overhead = wall time of a session minus the time spent inside the backend and the tools,
divided by the number of steps: prompt building, parsing, event objects, image bookkeeping.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from PIL import Image

from taco_app.backends import ReplayBackend
from taco_app.cota import events as ev
from taco_app.cota.actions import Action, step_text
from taco_app.runner import run
from taco_app.store.files import ImageFiles
from taco_app.tools import default_tools


def step(name=None, thought="Thinking about the next step to take.", **arguments):
    return step_text(thought, Action(name, arguments) if name else None)


class TimedReplay(ReplayBackend):
    """Replay that records how long the loop spends inside it."""

    inside = 0.0

    def stream(self, prompt, images):
        t0 = time.perf_counter()
        chunks = list(super().stream(prompt, images))
        self.inside += time.perf_counter() - t0
        yield from chunks  # handing chunks on is the loop's own work, and counted as such


def loop_overhead(sessions: int = 30) -> list[float]:
    files = ImageFiles(tempfile.mkdtemp())
    photo = Image.new("RGB", (1024, 768), "gray")
    script = [step("Calculate", expression=f"{i} * 3.65 + 2") for i in range(9)] + [step(), step("Terminate", answer="42")]
    per_step = []
    for _ in range(sessions):
        backend = TimedReplay(script)
        t0 = time.perf_counter()
        events = list(run("How much is it?", [photo], backend, tools=default_tools(), sink=files))
        wall = time.perf_counter() - t0
        tool_s = sum(e.tool_s for e in events if isinstance(e, ev.Observation))
        steps = events[-1].steps
        per_step.append((wall - backend.inside - tool_s) / steps)
    return per_step


def ocr_cold_warm() -> dict[str, float]:
    from taco_app.examples import fuel_sign
    from taco_app.tools import default_tools

    tool = default_tools().get("OCR")
    sign = fuel_sign()
    other = fuel_sign({"Regular": "2.99", "Plus": "3.19", "Premium": "3.39", "Diesel": "3.59"})
    out = {}
    t0 = time.perf_counter()
    tool({"image": "image-0"}, lambda _: sign)
    out["first call (loads the models)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tool({"image": "image-0"}, lambda _: other)
    out["second call, another 1024x768 image (warm)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tool({"image": "image-0"}, lambda _: sign)
    out["repeat of the first image (result cache)"] = time.perf_counter() - t0
    return out


def main() -> None:
    os.environ.setdefault("TACO_HOME", tempfile.mkdtemp())
    per_step = loop_overhead()
    ms = sorted(x * 1000 for x in per_step)
    print(f"loop overhead per step: median {statistics.median(ms):.2f} ms, p95 {ms[int(len(ms) * 0.95) - 1]:.2f} ms, "
          f"max {ms[-1]:.2f} ms over {len(ms)} sessions of 11 steps (replay backend, Calculate)")
    for label, seconds in ocr_cold_warm().items():
        print(f"OCR {label}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
