"""The loop's own cost per step stays small next to any model (budget: 5 ms)."""

import statistics

from benchmarks.bench_engine import loop_overhead


def test_loop_overhead_under_5_ms_per_step():
    per_step = loop_overhead(sessions=10)
    assert statistics.median(per_step) < 0.005, [f"{x * 1000:.2f} ms" for x in per_step]
