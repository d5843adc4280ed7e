"""What the Evaluate tab shows, as words and tables: a run's progress, and the reports.

:func:`progress_text` is how far a run is (a :class:`Snapshot` of its progress). :func:`report_view` writes the report (:func:`taco_app.evaluation.report.write_report`: report.json and
the plots) into a folder the page serves, and turns it into the summary, the plots with their captions
and the table of flipped items; :func:`open_flipped` gives a flipped item's two sessions for Compare.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from taco_app.evaluation.data import Benchmark
from taco_app.evaluation.report import PLOTS, build_report, write_report
from taco_app.evaluation.runs import Failure
from taco_app.evaluation.stats import wilson
from taco_app.store import evals
from taco_app.ui import render
from taco_app.ui.compare import comparison
from taco_app.ui.studio import Studio

SKIPPED_SHOWN = 50  # rows the loader skipped, listed; the rest counted
FAILURES_SHOWN = 10
PLOT_CAPTIONS = {"accuracy": "Accuracy by category (95% CI)", "tools": "Tool use", "latency": "Latency"}


@dataclass(frozen=True)
class Snapshot:
    """How far a run is, copied at one moment (the run's own Progress keeps changing in its thread)."""

    name: str
    total: int
    done: int
    correct: int
    failed: int
    resumed: int
    done_now: int
    elapsed_s: float

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.done if self.done else None

    @property
    def items_per_s(self) -> float:
        return self.done_now / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.items_per_s
        return (self.total - self.done - self.failed) / rate if rate > 0 else None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_text(snap: Snapshot, state: str, failures: list[Failure] = (), *, stopping: bool = False,
                  cancelled: bool = False) -> str:
    """The progress area: where the run is (``state``: running, finished or failed), then its numbers,
    then the items not finished this time."""
    name = render.escape_text(snap.name)
    if state == "failed":
        head = (f"**{name}** · stopped by an error: the {snap.done} finished item(s) are kept;"
                " press Start again with the same name to go on")
    elif state != "finished":
        head = f"**{name}** · stopping: the items in flight end, every finished one is kept" if stopping \
            else f"**{name}** · running"
    elif cancelled:
        head = (f"**{name}** · stopped: the {snap.done} finished item(s) are kept; press Start again with the same"
                " name and settings to go on (finished items are not run again)")
    else:
        head = f"**{name}** · finished"
    lines = [head, f"**{snap.done} of {snap.total}** items done" + (
        f" ({snap.resumed} finished before, kept)" if snap.resumed else "")]
    if snap.done:
        lines.append(f"accuracy so far **{pct(snap.accuracy)}** (95% CI {ci(snap.correct, snap.done)}),"
                     f" {snap.correct} right")
    else:
        lines.append("accuracy so far: – (no item finished yet)")
    pace = f"{snap.items_per_s:.2f} items/s"
    if state == "running":
        pace += f" · about {_duration(snap.eta_s)} left" if snap.eta_s is not None else " · time left: –"
    else:
        pace += f" · took {_duration(snap.elapsed_s)}"
    lines.append(pace + f" · {snap.failed} failed")
    text = "  \n".join(lines)
    if failures:
        shown = "\n".join(f"- {render.escape_text(f.item_id)}: {render.escape_text(f.message)}"
                          for f in failures[:FAILURES_SHOWN])
        more = f"\n- … and {len(failures) - FAILURES_SHOWN} more" if len(failures) > FAILURES_SHOWN else ""
        text += (f"\n\n**{len(failures)} item(s) not finished** (the model or its images failed); press Start"
                 f" again with the same name to retry them:\n{shown}{more}")
    return text


def latest_rows(items: Any) -> list[list[str]]:
    """The latest finished items, newest first: id, answer, accepted answers, right or wrong (and why)."""
    rows = []
    for done in items:
        if done.prediction is None:
            answer = "(no answer: stopped at the step limit)" if done.status == "max_steps" else "(no answer)"
        else:
            answer = render.answer_text(done.prediction)
        accepted = " / ".join(render.answer_text(a) for a in done.answers)
        result = ("right" if done.correct else "wrong") + (f" ({done.how})" if done.how else "")
        rows.append([render.displayable(str(cell)) for cell in (done.item_id, answer, accepted, result)])
    return rows


def skipped_text(benchmark: Benchmark) -> str:
    """The rows the loader skipped, one line each (as ``eval`` prints them), the rest counted."""
    problems = benchmark.problems
    if not problems:
        return ""
    lines = [f"- skipped {render.escape_text(problem)}" for problem in problems[:SKIPPED_SHOWN]]
    if len(problems) > SKIPPED_SHOWN:
        lines.append(f"- … and {len(problems) - SKIPPED_SHOWN} more")
    return (f"**{len(problems)} row(s) of {render.escape_text(benchmark.path.name)} skipped** (the other"
            f" {len(benchmark.items)} run):\n" + "\n".join(lines))


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def ci(k: int, n: int) -> str:
    if n == 0:
        return "–"
    lo, hi = wilson(k, n)
    return f"{100 * lo:.1f}–{100 * hi:.1f}%"



def run_choices(studio: Studio) -> list[tuple[str, str]]:
    """Every stored run, newest first, as (label, name) for a dropdown."""
    out = []
    for info in evals.list_runs(studio.store):
        model = info.settings.get("model") or info.settings.get("backend") or "?"
        out.append((f"{info.name} · {info.correct}/{info.n} right · {info.settings.get('mode', '?')} · {model}",
                    info.name))
    return out


@dataclass
class ReportView:
    summary: str
    plots: list[tuple[str, str]]  # (PNG path, caption)
    flips: list[list[str]]
    pairs: dict[str, tuple[str, str]]  # flipped item id -> (its session in A, in B)


def _run(studio: Studio, name: str) -> evals.RunData:
    try:
        return evals.run_data(studio.store, name)
    except KeyError:
        raise gr.Error(f"There is no eval run named {name!r} (press Refresh to list the runs again).") from None


def report_view(studio: Studio, name: str | None, other: str | None, folder: Path) -> ReportView:
    """One run's report, or two runs' side by side with the items that flipped; plots written to ``folder``."""
    name, other = (name or "").strip(), (other or "").strip()
    if not name:
        raise gr.Error("Pick a run (and, to compare, a second one).")
    if other == name:
        raise gr.Error(f"{name!r} was picked twice: pick two different runs, or none to compare with.")
    run = _run(studio, name)
    vs = _run(studio, other) if other else None
    paths = write_report(run, folder, vs)
    report = json.loads(paths[0].read_text(encoding="utf-8"))
    captions = {file: PLOT_CAPTIONS.get(key, key) for key, file in PLOTS.items()}
    plots = [(str(path), captions.get(path.name, path.stem)) for path in paths if path.suffix == ".png"]
    if vs is None:
        return ReportView(one_run_summary(report), plots, [], {})
    flips = report["vs"]["flips"]
    rows = [[render.displayable(str(cell)) for cell in (
        f["item_id"], f["category"], f"right in {name}, wrong in {other}" if f["direction"] == "right"
        else f"wrong in {name}, right in {other}", f["question"], _answer(f["prediction"]),
        _answer(f["other_prediction"]), " / ".join(render.answer_text(a) for a in f["answers"]))] for f in flips]
    pairs = {f["item_id"]: (f["session_id"], f["other_session_id"]) for f in flips}
    return ReportView(two_run_summary(report, build_report(vs)), plots, rows, pairs)


def _answer(prediction: Any) -> str:
    return "(no answer)" if prediction is None else render.answer_text(prediction)


def _settings_line(report: dict[str, Any]) -> str:
    s = report["settings"]
    parts = [f"mode {s.get('mode', '?')}", f"model {s.get('model') or '?'} ({s.get('backend', '?')})",
             f"scorer {s.get('scorer', '?')}", f"max replies {s.get('max_replies', '?')}",
             f"data {s.get('data', '?')}"]
    return render.escape_text(" · ".join(parts))


def _headline(report: dict[str, Any]) -> str:
    n = report["n"]
    if n == 0:
        return f"**{render.escape_text(report['run'])}**: no finished item yet"
    return (f"**{render.escape_text(report['run'])}**: **{pct(report['accuracy'])}** right"
            f" (95% CI {ci(report['correct'], n)}), {report['correct']} of {n}")


def one_run_summary(report: dict[str, Any]) -> str:
    """One run: its accuracy, settings, by category, validity, latency and tokens."""
    out = [_headline(report), "", _settings_line(report), ""]
    cats = report["by_category"]
    if cats:
        out += ["| category | n | right | accuracy | 95% CI |", "|---|---|---|---|---|"]
        out += [f"| {render.escape_text(cat)} | {c['n']} | {c['correct']} | {pct(c['accuracy'])} |"
                f" {ci(c['correct'], c['n'])} |" for cat, c in cats.items()]
        out.append("")
    v, lat, tok = report["validity"], report["latency_s"], report["tokens"]
    mean = "–" if v["mean_steps"] is None else f"{v['mean_steps']:.1f}"
    out.append(f"{v['steps']} steps ({mean} per item) · parse errors: {v['parse_errors']['steps']} step(s) in"
               f" {v['parse_errors']['sessions']} session(s) · unknown actions {v['unknown_actions']} · bad"
               f" arguments {v['bad_arguments']} · timeouts {v['timeouts']} · tool failures {v['tool_failures']} ·"
               f" stopped at the step limit {v['max_steps']}")
    out.append("")
    seconds = " · ".join(f"{key} {lat[key]:.2f} s" for key in ("p50", "p95", "mean") if lat[key] is not None)
    out.append(f"Latency per item: {seconds or '–'} · tokens: {tok['prompt']} prompt, {tok['output']} output")
    return "\n".join(out)


def two_run_summary(report: dict[str, Any], other: dict[str, Any]) -> str:
    """Two runs: each one's accuracy and settings, the items both finished (the 2×2 table, McNemar's
    test), and accuracy by category side by side."""
    a, b = render.escape_text(report["run"]), render.escape_text(other["run"])
    vs = report["vs"]
    out = [f"A: {_headline(report)}  \n{_settings_line(report)}", "",
           f"B (the baseline): {_headline(other)}  \n{_settings_line(other)}", ""]
    if vs["common"] == 0:
        out.append("The two runs have no finished item in common: nothing to compare item by item.")
    else:
        acc = vs["accuracy"]
        flipped = vs["flipped_right"] + vs["flipped_wrong"]
        out += [f"On the **{vs['common']}** items both finished: {a} {pct(acc.get(report['run']))},"
                f" {b} {pct(acc.get(other['run']))}. **{flipped} flipped**: {vs['flipped_right']} right in A and"
                f" wrong in B, {vs['flipped_wrong']} the other way (McNemar's exact p = {vs['mcnemar_p']:.3g}).", "",
                f"| | {b} right | {b} wrong |", "|---|---|---|",
                f"| {a} right | {vs['both_right']} | {vs['flipped_right']} |",
                f"| {a} wrong | {vs['flipped_wrong']} | {vs['both_wrong']} |"]
    cats = sorted(set(report["by_category"]) | set(other["by_category"]))
    if cats:
        out += ["", f"| category | {a} | {b} |", "|---|---|---|"]
        for cat in cats:
            cells = []
            for r in (report, other):
                c = r["by_category"].get(cat)
                cells.append("–" if c is None else
                             f"{pct(c['accuracy'])} ({c['correct']}/{c['n']}, CI {ci(c['correct'], c['n'])})")
            out.append(f"| {render.escape_text(cat)} | {cells[0]} | {cells[1]} |")
    return "\n".join(out)


def open_flipped(studio: Studio, pairs: dict[str, Any] | None, item_id: str | None) -> tuple[str, str, str, str]:
    """``(session A, session B, the side-by-side view, the preferences)`` of a flipped item, or gr.Error."""
    found = (pairs or {}).get(item_id or "")
    if not found:
        raise gr.Error("Show a report of two runs first, then click one of its flipped items.")
    a, b = found
    view, verdicts = comparison(studio, a, b)
    return a, b, view, verdicts
