"""An eval run's report: report.json (the numbers), report.md (the same, to read) and plots.

What each number means (report.md repeats it under "Definitions"):

- **accuracy**: correct / n over the run's finished items (a session the backend broke is not
  finished and not counted); **ci95** is the Wilson score interval at 95%.
- **by_category**: the same per category, categories sorted by name; an item without one is "(none)".
- **validity**: ``steps`` counts every step of every item's session, ``mean_steps`` is that per item.
  Parse errors are counted per step (``parse_errors.steps``) and per session (``parse_errors.sessions``:
  sessions with at least one). ``unknown_actions``, ``bad_arguments``, ``timeouts`` and
  ``tool_failures`` count the steps whose error code is ``unknown_action``, ``bad_arguments``,
  ``timeout`` and ``tool``. ``max_steps`` counts the items whose session stopped at the step limit.
  ``tools``: per action the model called (Terminate left out, and a step naming an unknown action too:
  that is no tool), ``uses`` = its steps, calls whose arguments were refused included, ``sessions`` = the items whose session used it at least once,
  ``correct`` = how many of those were right, ``accuracy`` = correct / sessions (accuracy when used).
- **latency_s**: each item's session wall time; p50 and p95 interpolate linearly, items without a
  time are left out.
- **tokens**: prompt and output tokens summed over the run, and per item (a backend that reports no
  usage counts 0).
- **vs** (``--vs OTHER``, the baseline): the items both runs finished, paired by item id.
  ``flipped_right`` = right in RUN and wrong in OTHER, ``flipped_wrong`` = the reverse; ``mcnemar_p``
  is McNemar's exact two-sided test on those two counts; ``accuracy`` is each run's on the common
  items; ``flips`` lists the flipped items in RUN's order.

A number that cannot be computed (no items, no times) is None, never NaN. The same run gives the same
report.json and report.md bytes. matplotlib is imported only when plots are drawn.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from taco_app.evaluation.stats import mcnemar_exact, percentile, wilson
from taco_app.store.evals import ItemRecord, RunData

NO_CATEGORY = "(none)"
TERMINATE = "Terminate"
ERROR_COUNTS = {"unknown_actions": "unknown_action", "bad_arguments": "bad_arguments",
                "timeouts": "timeout", "tool_failures": "tool"}
PLOTS = {"accuracy": "accuracy_by_category.png", "tools": "tools.png", "latency": "latency.png"}


def build_report(run: RunData, vs: RunData | None = None) -> dict[str, Any]:
    """What report.json holds (see the module docstring for each number)."""
    items = run.items
    n, correct = len(items), sum(item.correct for item in items)
    report: dict[str, Any] = {
        "run": run.name,
        "settings": {key: run.settings[key] for key in sorted(run.settings)},
        "n": n,
        "correct": correct,
        "accuracy": _ratio(correct, n),
        "ci95": list(wilson(correct, n)),
        "by_category": _by_category(items),
        "validity": _validity(items),
        "latency_s": _latency(items),
        "tokens": _tokens(items),
        "vs": _versus(run, vs) if vs is not None else None,
    }
    return _json_safe(report)


def _ratio(k: int | float, n: int) -> float | None:
    return k / n if n else None


def _category(item: ItemRecord) -> str:
    return item.category if item.category is not None else NO_CATEGORY


def _by_category(items: tuple[ItemRecord, ...] | list[ItemRecord]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[bool]] = {}
    for item in items:
        groups.setdefault(_category(item), []).append(item.correct)
    out = {}
    for name in sorted(groups):
        n, k = len(groups[name]), sum(groups[name])
        out[name] = {"n": n, "correct": k, "accuracy": _ratio(k, n), "ci95": list(wilson(k, n))}
    return out


def _validity(items: tuple[ItemRecord, ...]) -> dict[str, Any]:
    steps = [step for item in items for step in item.steps]
    out: dict[str, Any] = {
        "steps": len(steps),
        "mean_steps": _ratio(len(steps), len(items)),
        "parse_errors": {"steps": sum(step.parse_error for step in steps),
                         "sessions": sum(any(step.parse_error for step in item.steps) for item in items)},
    }
    for key, code in ERROR_COUNTS.items():
        out[key] = sum(step.error_code == code for step in steps)
    out["max_steps"] = sum(item.status == "max_steps" for item in items)
    uses: dict[str, int] = {}
    sessions: dict[str, list[bool]] = {}
    for item in items:
        used = set()
        for step in item.steps:
            if step.action is None or step.action == TERMINATE or step.error_code == "unknown_action":
                continue
            uses[step.action] = uses.get(step.action, 0) + 1
            used.add(step.action)
        for name in used:
            sessions.setdefault(name, []).append(item.correct)
    out["tools"] = {name: {"uses": uses[name], "sessions": len(sessions[name]), "correct": sum(sessions[name]),
                           "accuracy": _ratio(sum(sessions[name]), len(sessions[name]))} for name in sorted(uses)}
    return out


def _latency(items: tuple[ItemRecord, ...]) -> dict[str, float | None]:
    times = [item.total_s for item in items if item.total_s is not None and math.isfinite(item.total_s)]
    return {"p50": percentile(times, 50), "p95": percentile(times, 95),
            "mean": sum(times) / len(times) if times else None}


def _tokens(items: tuple[ItemRecord, ...]) -> dict[str, Any]:
    prompt, output = sum(item.prompt_tokens for item in items), sum(item.output_tokens for item in items)
    return {"prompt": prompt, "output": output,
            "prompt_per_item": _ratio(prompt, len(items)), "output_per_item": _ratio(output, len(items))}


def _common(run: RunData, other: RunData) -> list[tuple[ItemRecord, ItemRecord]]:
    """The items both runs finished, as (RUN's, OTHER's) pairs in RUN's order."""
    theirs: dict[str, ItemRecord] = {}
    for item in other.items:
        theirs.setdefault(item.item_id, item)
    return [(item, theirs[item.item_id]) for item in run.items if item.item_id in theirs]


def _versus(run: RunData, other: RunData) -> dict[str, Any]:
    pairs = _common(run, other)
    cells = {"both_right": 0, "both_wrong": 0, "flipped_right": 0, "flipped_wrong": 0}
    flips = []
    for mine, theirs in pairs:
        if mine.correct == theirs.correct:
            cells["both_right" if mine.correct else "both_wrong"] += 1
            continue
        cells["flipped_right" if mine.correct else "flipped_wrong"] += 1
        flips.append({"item_id": mine.item_id, "category": _category(mine), "question": mine.question,
                      "direction": "right" if mine.correct else "wrong", "session_id": mine.session_id,
                      "other_session_id": theirs.session_id, "prediction": mine.prediction,
                      "other_prediction": theirs.prediction, "answers": list(mine.answers)})
    n = len(pairs)
    accuracy = {run.name: _ratio(sum(m.correct for m, _ in pairs), n),
                other.name: _ratio(sum(t.correct for _, t in pairs), n)}
    return {"other": other.name, "common": n, **cells,
            "mcnemar_p": mcnemar_exact(cells["flipped_right"], cells["flipped_wrong"]),
            "accuracy": accuracy, "flips": flips}


def _json_safe(value: Any) -> Any:
    """A copy that json.dumps(allow_nan=False) accepts: NaN and infinities become None (a model's
    prediction can hold them), tuples lists, keys strings, anything else its text."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


# --- report.md -------------------------------------------------------------------------------------

DEFINITIONS = """\
## Definitions

- **Accuracy**: correct / finished items of the run (an item whose backend failed is not finished and
  is not counted; running the same name again retries it). **95% CI**: Wilson score interval.
- **Steps**: every step of every item's session; mean steps is that per item.
- **Parse errors**: replies that did not parse, per step and per session (sessions with at least one).
- **Unknown actions, bad arguments, timeouts, tool failures**: steps whose action named no tool, whose
  arguments were refused, whose tool ran out of time, or whose tool failed.
- **Stopped at the step limit**: items whose session reached the most replies allowed (status max_steps).
- **Tools**: uses = steps that called the tool (calls with refused arguments included); sessions = items whose session used it at least once;
  accuracy when used = correct among those sessions. Terminate and unknown actions are left out.
- **Latency**: each item's session wall time; p50 and p95 interpolate linearly; items without a time
  are left out.
- **Tokens**: summed over all steps of the run, and per item (a backend that reports no usage counts 0).
- **Compared with OTHER** (the baseline): the items both runs finished, paired by item id. Flipped to
  right = right here and wrong in OTHER; flipped to wrong = the reverse. McNemar's exact test
  (two-sided binomial on the two flip counts) says how likely flips this lopsided are by chance.
"""


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _ci(ci: list[float | None]) -> str:
    lo, hi = ci
    if lo is None or hi is None:
        return "–"
    return f"{100 * lo:.1f}–{100 * hi:.1f}%"


def _num(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _cell(value: Any, width: int = 80) -> str:
    """One table cell: one line, shortened, pipes and tags escaped (a model's answer is shown as text)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    if len(text) > width:
        text = text[: width - 1].rstrip() + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;") or " "


def _answers(answers: list[Any]) -> str:
    return " / ".join(a if isinstance(a, str) else json.dumps(a, ensure_ascii=False) for a in answers)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(report: dict[str, Any]) -> str:
    """report.md: the headline, then each section of report.json as a table, then the definitions."""
    name, n = report["run"], report["n"]
    out = [f"# Eval report: {_cell(name)}", ""]
    if n == 0:
        out += ["**No finished items**: this run has nothing to report yet. Run `python app.py eval "
                f"--data FILE --name {name}` (again) to finish its items.", ""]
    else:
        out += [f"**accuracy {_pct(report['accuracy'])} (95% CI {_ci(report['ci95'])}), "
                f"{report['correct']} of {n}**", ""]
    settings = report["settings"]
    if settings:
        shown = (f"{key} `{_cell(value, 60).replace('`', chr(39))}`" for key, value in settings.items())
        out += ["Settings: " + ", ".join(shown), ""]
    if n:
        out += ["![accuracy by category](" + PLOTS["accuracy"] + ")", ""]
    out += ["## By category", ""]
    cats = report["by_category"]
    out += _table(["category", "n", "correct", "accuracy", "95% CI"],
                  [[_cell(cat), str(c["n"]), str(c["correct"]), _pct(c["accuracy"]), _ci(c["ci95"])]
                   for cat, c in cats.items()]) if cats else ["No items."]
    v = report["validity"]
    out += ["", "## Validity", ""]
    out += _table(["what", "count"], [
        ["steps", str(v["steps"])], ["mean steps per item", _num(v["mean_steps"])],
        ["parse errors (steps)", str(v["parse_errors"]["steps"])],
        ["sessions with a parse error", str(v["parse_errors"]["sessions"])],
        ["unknown actions", str(v["unknown_actions"])], ["bad arguments", str(v["bad_arguments"])],
        ["timeouts", str(v["timeouts"])], ["tool failures", str(v["tool_failures"])],
        ["stopped at the step limit", str(v["max_steps"])]])
    out += ["", "## Tools", ""]
    tools = v["tools"]
    out += _table(["tool", "uses", "sessions", "correct", "accuracy when used"],
                  [[_cell(t), str(s["uses"]), str(s["sessions"]), str(s["correct"]), _pct(s["accuracy"])]
                   for t, s in tools.items()]) if tools else ["No tool was used."]
    if n:
        out += ["", "![tool use](" + PLOTS["tools"] + ")"]
    lat, tok = report["latency_s"], report["tokens"]
    out += ["", "## Latency and tokens", ""]
    out += _table(["", "p50", "p95", "mean"], [["seconds per item", _num(lat["p50"]), _num(lat["p95"]),
                                                _num(lat["mean"])]])
    out += [""] + _table(["tokens", "total", "per item"], [
        ["prompt", str(tok["prompt"]), _num(tok["prompt_per_item"], 1)],
        ["output", str(tok["output"]), _num(tok["output_per_item"], 1)]])
    if n:
        out += ["", "![latency](" + PLOTS["latency"] + ")"]
    if report.get("vs") is not None:
        out += [""] + _versus_markdown(name, report["vs"])
    out += ["", DEFINITIONS]
    return "\n".join(out)


def _versus_markdown(name: str, vs: dict[str, Any]) -> list[str]:
    other, common = vs["other"], vs["common"]
    out = [f"## Compared with {_cell(other)}", ""]
    if common == 0:
        return out + ["The two runs have no finished item in common."]
    acc = vs["accuracy"]
    out += [f"On the {common} items both runs finished: {_cell(name)} {_pct(acc.get(name))}, "
            f"{_cell(other)} {_pct(acc.get(other))}.", ""]
    out += _table(["", f"{_cell(other)} right", f"{_cell(other)} wrong"], [
        [f"{_cell(name)} right", str(vs["both_right"]), str(vs["flipped_right"])],
        [f"{_cell(name)} wrong", str(vs["flipped_wrong"]), str(vs["both_wrong"])]])
    out += ["", f"McNemar's exact p = {_p(vs['mcnemar_p'])} ({vs['flipped_right']} flipped to right, "
            f"{vs['flipped_wrong']} flipped to wrong).", "", "### Flips", ""]
    if not vs["flips"]:
        return out + ["No item flipped."]
    return out + _table(["item", "category", "flipped to", "question", _cell(name), _cell(other), "answers"],
                        [[_cell(f["item_id"]), _cell(f["category"]), f["direction"], _cell(f["question"], 70),
                          _cell(f["prediction"], 40), _cell(f["other_prediction"], 40),
                          _cell(_answers(f["answers"]), 40)] for f in vs["flips"]])


# --- files and plots -------------------------------------------------------------------------------

def write_report(run: RunData, out: Path, vs: RunData | None = None) -> list[Path]:
    """report.json, report.md and the plots in ``out`` (made if missing; earlier report files are
    overwritten). Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(run, vs)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown(report), encoding="utf-8")
    return [json_path, md_path, *_plots(run, vs, report, out)]


def _short(label: str, width: int = 24) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def _plots(run: RunData, vs: RunData | None, report: dict[str, Any], out: Path) -> list[Path]:
    # The figure's own canvas (Agg), no pyplot: nothing global, no display needed.
    from matplotlib.figure import Figure

    paths = []
    for key, draw in (("accuracy", _plot_accuracy), ("tools", _plot_tools), ("latency", _plot_latency)):
        fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
        draw(fig, run, vs, report)
        path = out / PLOTS[key]
        fig.savefig(path, format="png", metadata={"Software": None})
        paths.append(path)
    return paths


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _plot_accuracy(fig, run: RunData, vs: RunData | None, report: dict[str, Any]) -> None:
    ax = fig.subplots()
    if vs is None:
        series = [(run.name, report["by_category"])]
        ax.set_title(f"{_short(run.name, 40)}: accuracy by category (95% CI)")
    else:
        pairs = _common(run, vs)
        series = [(run.name, _by_category([m for m, _ in pairs])), (vs.name, _by_category([t for _, t in pairs]))]
        ax.set_title(f"Accuracy by category on the {len(pairs)} items both runs finished (95% CI)")
    cats = sorted({cat for _, by in series for cat in by})
    if not cats:
        _empty(ax, "no finished items")
        return
    fig.set_size_inches(max(8.0, 0.7 * len(cats) * len(series) + 2), 4.5)
    width = 0.8 / len(series)
    for s, (label, by) in enumerate(series):
        xs = [i - 0.4 + width * (s + 0.5) for i, cat in enumerate(cats) if cat in by]
        rows = [by[cat] for cat in cats if cat in by]
        acc = [r["accuracy"] for r in rows]
        err = [[a - r["ci95"][0] for a, r in zip(acc, rows)], [r["ci95"][1] - a for a, r in zip(acc, rows)]]
        ax.bar(xs, acc, width, yerr=err, capsize=3, label=_short(label, 30))
    tilt = len(cats) > 6
    ax.set_xticks(range(len(cats)), [f"{_short(c)}\n(n={series[0][1].get(c, {}).get('n', 0)})" for c in cats],
                  rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_ylim(0, 1.15 if vs is not None else 1.05)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("accuracy")
    if vs is not None:
        ax.legend(loc="upper center", ncols=2)


def _plot_tools(fig, run: RunData, vs: RunData | None, report: dict[str, Any]) -> None:
    from matplotlib.ticker import MaxNLocator

    tools = report["validity"]["tools"]
    left, right = fig.subplots(1, 2, sharey=True)
    if not tools:
        _empty(left, "no tool was used")
        right.set_axis_off()
        return
    fig.set_size_inches(9.0, max(4.5, 0.4 * len(tools) + 1.5))
    names = list(tools)[::-1]  # by name, top to bottom
    ys = list(range(len(names)))
    uses = [tools[t]["uses"] for t in names]
    left.barh(ys, uses)
    for y, t in zip(ys, names):
        left.text(tools[t]["uses"], y, f" {tools[t]['sessions']} sessions", va="center", fontsize=8)
    left.set_xlim(0, max(uses) * 1.35)
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_yticks(ys, [_short(t, 28) for t in names])
    left.set_xlabel("uses (steps)")
    left.set_title("Tool use")
    acc = [tools[t]["accuracy"] for t in names]
    cis = [wilson(tools[t]["correct"], tools[t]["sessions"]) for t in names]
    right.barh(ys, acc, xerr=[[a - lo for a, (lo, _) in zip(acc, cis)], [hi - a for a, (_, hi) in zip(acc, cis)]],
               capsize=3, color="tab:green")
    for y, t, (_, hi) in zip(ys, names, cis):
        right.text(hi + 0.02, y, f"{tools[t]['correct']} of {tools[t]['sessions']}", va="center", fontsize=8)
    label = "correct / sessions using it"
    if report["accuracy"] is not None:
        right.axvline(report["accuracy"], color="gray", linestyle="--")
        label += f"\ndashed: the whole run, {_pct(report['accuracy'])}"
    right.set_xlim(0, 1.25)
    right.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    right.set_xlabel(label)
    right.set_title("Accuracy when used (95% CI)")


def _plot_latency(fig, run: RunData, vs: RunData | None, report: dict[str, Any]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax = fig.subplots()
    times = [item.total_s for item in run.items if item.total_s is not None and math.isfinite(item.total_s)]
    if not times:
        _empty(ax, "no item has a time")
        return
    ax.hist(times, bins=max(5, min(30, round(math.sqrt(len(times))))))
    lat = report["latency_s"]
    for key, style in (("p50", "--"), ("p95", ":")):
        if lat[key] is not None:
            ax.axvline(lat[key], color="black", linestyle=style, label=f"{key} {lat[key]:.2f} s")
    ax.legend(loc="upper right")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("seconds per item (session wall time)")
    ax.set_ylabel("items")
    ax.set_title(f"{_short(run.name, 40)}: latency of {len(times)} items")
