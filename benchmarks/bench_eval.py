"""Eval throughput: items per second of ``python app.py eval`` one session at a time and eight at once.

Run as ``python -m benchmarks.bench_eval [--items 32] [--delay 0.3] [--concurrency 1,8]``; prints one
line per run, then one JSON line with every figure. Uses a throw-away TACO_HOME and fresh run names.

The model is the fake TACO of the tests (tests/eval_bench.py) behind an OpenAI-compatible API on
127.0.0.1, taking ``--delay`` seconds per reply as a served checkpoint would (300 ms: a short TACO
step on a busy vLLM). The benchmark is the tests' generated one: 32 items, 55 replies, real tools
(Calculate, SolveMathEquation, Crop, ZoomIn), every step stored. Each run is the real command in a
subprocess; its items/s is what its last line reports (from the first item to the last, without the
start-up), and the wall time is the whole command. The goal: 8 at once is at least 5x one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.eval_bench import FakeTACO, Truth, make_benchmark

ROOT = Path(__file__).resolve().parent.parent

MAX_REPLIES = 2
GOAL = 5.0


def run_eval(truth: Truth, fake: FakeTACO, home: str, concurrency: int) -> dict:
    name = f"bench-c{concurrency}-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "app.py", "eval", "--data", str(truth.data), "--name", name, *fake.cli_args(),
               "--max-replies", str(MAX_REPLIES), "--concurrency", str(concurrency), "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TACO_HOME": home})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"eval --concurrency {concurrency} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    summary = json.loads(done.stdout.splitlines()[-1])
    expected = truth.run("taco-a", max_replies=MAX_REPLIES)
    if (summary["n"], summary["correct"]) != (expected.n, expected.correct):  # a fast wrong run is no figure
        raise SystemExit(f"eval --concurrency {concurrency}: {summary['correct']} of {summary['n']} right,"
                         f" expected {expected.correct} of {expected.n}")
    return {"concurrency": concurrency, "items": summary["n"], "elapsed_s": summary["elapsed_s"],
            "items_per_s": summary["items_per_s"], "wall_s": round(wall, 3),
            "wall_items_per_s": round(summary["n"] / wall, 4)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.3, help="seconds per reply (default 0.3)")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated (default 1,8)")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.concurrency.split(",")]

    home = tempfile.mkdtemp(prefix="taco-bench-")
    truth = make_benchmark(Path(home) / "benchmark", n=args.items)
    replies = truth.run("taco-a", max_replies=MAX_REPLIES).steps
    print(f"benchmark: {args.items} items, {replies} replies of {args.delay * 1000:.0f} ms each"
          f" ({replies * args.delay:.1f} s of model time); TACO_HOME {home}")
    results = []
    with FakeTACO(truth, delay_s=args.delay, max_replies=MAX_REPLIES) as fake:
        for level in levels:
            result = run_eval(truth, fake, home, level)
            results.append(result)
            print(f"--concurrency {level}: {result['items']} items in {result['elapsed_s']:.2f} s,"
                  f" {result['items_per_s']:.2f} items/s (whole command {result['wall_s']:.2f} s,"
                  f" {result['wall_items_per_s']:.2f} items/s)")
    line = {"benchmark": "eval", "items": args.items, "replies": replies, "delay_s": args.delay, "runs": results}
    if len(results) > 1:
        speedup = results[-1]["items_per_s"] / results[0]["items_per_s"]
        line |= {"speedup": round(speedup, 2), "goal": GOAL, "met": speedup >= GOAL}
        print(f"speed-up of --concurrency {levels[-1]} over {levels[0]}: {speedup:.2f}x (goal {GOAL:g}x:"
              f" {'met' if speedup >= GOAL else 'not met'})")
    print(json.dumps(line))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
