"""The Compare tab: two sessions on the same question and images, side by side, and which was better.

The two traces are aligned step by step (step k of A beside step k of B), each step with its overlay
picture (:func:`taco_app.ui.overlays.render_step`, as Review draws it); the first step where they
differ is marked, and their answers and ratings sit on top. A person then records a preference
("A is better", "B is better", "Tie", with an optional reason): :func:`taco_app.store.queries.prefer`,
which the exports pair into preference rows. Two sessions on different questions or images are
refused: their answers cannot be compared.

The view is one HTML table built here from the stored traces; everything in it that came from a
model, a tool or a person is HTML-escaped, and the pictures are small inline JPEGs (no file to serve).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
from PIL import Image

from taco_app.cota.prompt import OBSERVATION_PREFIX, OBSERVATION_SUFFIX
from taco_app.store import codec, queries
from taco_app.ui import overlays, render
from taco_app.ui.review import STEP_VERDICTS, ReviewPage, show_session
from taco_app.ui.studio import Studio

PICTURE_SIDE = 360  # pixels per side of a step's picture in the table
OBSERVATION_CHARS = 600  # of an observation shown in a cell; the rest is noted
CSS = """
#compare-view table.compare { width: 100%; border-collapse: collapse; table-layout: fixed; }
#compare-view .compare td, #compare-view .compare th { border: 1px solid #d4d4d8; padding: 0.4rem;
                                                      vertical-align: top; }
#compare-view .compare tr.differs td { background: #fff7ed; }
#compare-view .compare tr.first-difference td { background: #fee2e2; border-top: 3px solid #dc2626; }
#compare-view .compare .badge { background: #dc2626; color: white; border-radius: 4px; padding: 0 0.3rem;
                               font-size: 0.75rem; white-space: nowrap; }
#compare-view .compare pre { white-space: pre-wrap; word-break: break-word; font-size: 0.8rem; margin: 0.2rem 0; }
#compare-view .compare img { max-width: 100%; display: block; margin-top: 0.3rem; }
#compare-view .compare th.step { width: 7rem; }
"""


@dataclass
class ComparePage:
    a: gr.Textbox
    b: gr.Textbox
    run: gr.Button
    swap: gr.Button
    view: gr.HTML
    reason: gr.Textbox
    a_better: gr.Button
    b_better: gr.Button
    tie: gr.Button
    verdicts: gr.Markdown
    open_a: gr.Button
    open_b: gr.Button


def build(studio: Studio) -> ComparePage:
    """The Compare tab's components and events (call inside a ``gr.Tab``)."""
    gr.Markdown("Two sessions on the same question and images, step beside step. Open one in Review and press"
                " *Compare side by side* there, or give any two session ids.")
    with gr.Row():
        a = gr.Textbox(label="Session A", scale=3, elem_id="compare-a")
        b = gr.Textbox(label="Session B", scale=3, elem_id="compare-b")
        run = gr.Button("Compare", variant="primary", scale=1, elem_id="compare-run")
        swap = gr.Button("Swap A and B", scale=1)
    view = gr.HTML(elem_id="compare-view")
    with gr.Row():
        reason = gr.Textbox(label="Why (optional)", scale=3, elem_id="compare-reason")
        a_better = gr.Button("A is better", scale=1, elem_id="compare-a-better")
        b_better = gr.Button("B is better", scale=1, elem_id="compare-b-better")
        tie = gr.Button("Tie", scale=1, elem_id="compare-tie")
    verdicts = gr.Markdown(elem_id="compare-verdicts")
    with gr.Row():
        open_a = gr.Button("Open A in Review", elem_id="compare-open-a")
        open_b = gr.Button("Open B in Review", elem_id="compare-open-b")
    page = ComparePage(a, b, run, swap, view, reason, a_better, b_better, tie, verdicts, open_a, open_b)

    def compare_sessions(first, second):
        return comparison(studio, first, second)

    pair = [a, b]
    run.click(compare_sessions, pair, [view, verdicts], api_name="compare_sessions")
    swap.click(lambda x, y: (y, x), pair, pair, api_name=False).then(compare_sessions, pair, [view, verdicts],
                                                                      api_name=False)

    def record(first, second, why, verdict):
        return record_preference(studio, first, second, why, verdict)

    for button, verdict, name in ((a_better, "a", "prefer_a"), (b_better, "b", "prefer_b"), (tie, "tie", "prefer_tie")):
        button.click(lambda x, y, why, v=verdict: record(x, y, why, v), [a, b, reason], [verdicts, reason],
                     api_name=name)
    return page


def wire_review(studio: Studio, tabs: gr.Tabs, review: ReviewPage, page: ComparePage) -> None:
    """Review's *Compare side by side* (the open session as A) and Compare's *Open in Review*."""

    def from_review(identifier, other):
        if not identifier:
            raise gr.Error("Open a session first (click a row of the table).")
        if not (other or "").strip():
            raise gr.Error("Choose a session to compare with: its parent, a fork, or type any session id.")
        view, verdicts = comparison(studio, identifier, other)
        return identifier, other.strip(), view, verdicts, gr.Tabs(selected="compare")

    review.compare.click(from_review, [review.session_id, review.compare_with],
                         [page.a, page.b, page.view, page.verdicts, tabs], api_name=False)

    def open_in_review(identifier):
        if not (identifier or "").strip():
            raise gr.Error("There is no session there to open.")
        return {**show_session(studio, review, identifier), tabs: gr.Tabs(selected="review")}

    for button, box in ((page.open_a, page.a), (page.open_b, page.b)):
        button.click(open_in_review, box, [*review.opened(), tabs], api_name=False)


# --- checking and recording ---------------------------------------------------------------------


def _pair(studio: Studio, first: str | None, second: str | None) -> tuple[queries.Trace, queries.Trace]:
    """The two traces, or gr.Error: both given, stored, different, and on the same question and images."""
    first, second = (first or "").strip(), (second or "").strip()
    if not first or not second:
        raise gr.Error("Give two session ids to compare.")
    if first == second:
        raise gr.Error(f"Session {first} was given twice: pick two different sessions.")
    traces = []
    for identifier in (first, second):
        trace = queries.get_trace(studio.store, identifier)
        if trace is None:
            raise gr.Error(f"There is no session {identifier!r} in the store.")
        traces.append(trace)
    a, b = traces
    if not queries.same_task(studio.store, first, second):
        if a.session["question"] != b.session["question"]:
            raise gr.Error(f"These two sessions answer different questions ({_short(a.session['question'])!r} and"
                           f" {_short(b.session['question'])!r}): only sessions on the same question and images can"
                           " be compared.")
        raise gr.Error("These two sessions were given different images: only sessions on the same question and"
                       " images can be compared.")
    return a, b


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def comparison(studio: Studio, first: str | None, second: str | None) -> tuple[str, str]:
    """``(the side-by-side view, the preferences recorded between the two)``, or gr.Error."""
    a, b = _pair(studio, first, second)
    return comparison_html(a, b), verdicts_text(studio, a.session["id"], b.session["id"])


def record_preference(studio: Studio, first: str | None, second: str | None, reason: str | None,
                      verdict: str) -> tuple[str, str]:
    """Store "A is better" (``verdict`` "a"), "B is better" ("b") or "Tie"; the verdicts now, and an empty reason."""
    a, b = _pair(studio, first, second)
    a_id, b_id = a.session["id"], b.session["id"]
    winner, loser = (b_id, a_id) if verdict == "b" else (a_id, b_id)
    try:
        queries.prefer(studio.store, winner, loser, reason=(reason or "").strip() or None, tie=verdict == "tie")
    except ValueError as err:
        raise gr.Error(f"Not saved: {err}.")
    gr.Info("Saved: " + ("a tie." if verdict == "tie" else f"{'A' if verdict == 'a' else 'B'} is better."))
    return verdicts_text(studio, a_id, b_id), ""


def verdicts_text(studio: Studio, a_id: str, b_id: str) -> str:
    """The preferences recorded between A and B, oldest first, in words."""
    pair = {a_id, b_id}
    found = [p for p in queries.preferences(studio.store, a_id) if {p.chosen_id, p.rejected_id} == pair]
    if not found:
        return "No preference recorded between these two yet."
    name = {a_id: "A", b_id: "B"}
    lines = []
    for p in found:
        when = dt.datetime.fromtimestamp(p.created_at).strftime("%Y-%m-%d %H:%M")
        said = "a tie" if p.tie else f"{name[p.chosen_id]} is better"
        lines.append(f"- {when}: {said}" + (f" — {render.escape_text(p.reason)}" if p.reason else ""))
    return "**Preferences between A and B:**\n" + "\n".join(lines)


# --- the view -----------------------------------------------------------------------------------


def _step_key(trace: queries.Trace, row: dict[str, Any]) -> tuple[Any, ...]:
    """What a step was, to find where two traces part: the reply, the action, the observation and the
    content of the images it made."""
    content = {image.image_id: image.path.stem for image in trace.images}
    return (row.get("raw"), json.dumps(row.get("action"), sort_keys=True), row.get("observation"),
            [content.get(image_id) for image_id in row.get("image_ids") or []])


def first_difference(a: queries.Trace, b: queries.Trace) -> int | None:
    """The first step where ``a`` and ``b`` differ (one having it and the other not counts); None if none."""
    steps_a = {row["index"]: row for row in a.steps}
    steps_b = {row["index"]: row for row in b.steps}
    for k in range(1, max([*steps_a, *steps_b], default=0) + 1):
        x, y = steps_a.get(k), steps_b.get(k)
        if x is None or y is None or _step_key(a, x) != _step_key(b, y):
            return k
    return None


def inline_picture(image: Image.Image | None) -> str | None:
    """A picture as a ``data:`` URL of a small JPEG (None stays None)."""
    if image is None:
        return None
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def comparison_html(a: queries.Trace, b: queries.Trace,
                    picture: Callable[[list[Any], int], Image.Image | None] | None = None) -> str:
    """The side-by-side view of two traces: their answers and ratings, then one row per step."""
    picture = picture or (lambda events, k: overlays.render_step(events, k, max_side=PICTURE_SIDE)[0])
    events = {"a": codec.trace_events(a), "b": codec.trace_events(b)}
    first = first_difference(a, b)
    steps = {"a": {row["index"]: row for row in a.steps}, "b": {row["index"]: row for row in b.steps}}
    last = max([*steps["a"], *steps["b"]], default=0)
    out = ['<table class="compare">',
           '<tr><th class="step"></th><th>A</th><th>B</th></tr>',
           f'<tr class="summary"><th class="step">Answer</th><td>{_summary(a)}</td><td>{_summary(b)}</td></tr>']
    if first is None:
        out.append('<tr><td colspan="3"><b>The two sessions took the same steps.</b></td></tr>')
    for k in range(1, last + 1):
        differs = first is not None and k >= first and _differs(a, b, steps, k)
        classes = " ".join(c for c in ("differs" if differs else "", "first-difference" if k == first else "") if c)
        badge = '<br><span class="badge">first difference</span>' if k == first else ""
        cells = [_step_cell(trace, steps[side].get(k), events[side], k, picture)
                 for side, trace in (("a", a), ("b", b))]
        out.append(f'<tr class="{classes}" id="compare-step-{k}"><th class="step">Step {k}{badge}</th>'
                   f'<td>{cells[0]}</td><td>{cells[1]}</td></tr>')
    out.append("</table>")
    return "\n".join(out)


def _differs(a: queries.Trace, b: queries.Trace, steps: dict[str, dict[int, Any]], k: int) -> bool:
    x, y = steps["a"].get(k), steps["b"].get(k)
    return x is None or y is None or _step_key(a, x) != _step_key(b, y)


def _e(text: Any) -> str:
    return html.escape(render.displayable(str(text)), quote=True)


def _summary(trace: queries.Trace) -> str:
    session = trace.session
    answer = render.answer_text(session["answer"]) if session.get("answer") is not None else "(no answer)"
    lines = [f"<b>{_e(answer)}</b>",
             f"<code>{_e(session['id'])}</code> · {_e(session['status'])} · {len(trace.steps)} step(s)"
             f" · session rating: {_e(trace.rating or 'none')}"]
    if trace.corrected_answer is not None:
        lines.append(f"corrected answer: {_e(trace.corrected_answer)}")
    if session.get("parent_session_id"):
        lines.append(f"fork of <code>{_e(session['parent_session_id'])}</code> at step {_e(session.get('fork_step'))}")
    return "<br>".join(lines)


def _step_cell(trace: queries.Trace, row: dict[str, Any] | None, events: list[Any], k: int,
               picture: Callable[[list[Any], int], Image.Image | None]) -> str:
    if row is None:
        return "<i>(no such step)</i>"
    parts = []
    if row.get("parse_error_code"):
        parts.append(f"<b>Could not parse the reply:</b> {_e(row.get('parse_error') or '')}")
        parts.append(f"<pre>{_e(row.get('raw') or '')}</pre>")
    else:
        parts.append(_e(row.get("thought") or "(no thought)"))
        action = row.get("action")
        if action is not None:
            arguments = json.dumps(action.get("arguments"), ensure_ascii=False)
            parts.append(f"<b>{_e(action.get('name'))}</b> <code>{_e(arguments)}</code>")
    observation = row.get("observation")
    if observation:  # what the tool said, without the words every observation turn carries
        observation = observation.removeprefix(OBSERVATION_PREFIX).removesuffix(OBSERVATION_SUFFIX)
        shown = observation[:OBSERVATION_CHARS] + (f" … ({len(observation):,} characters)"
                                                    if len(observation) > OBSERVATION_CHARS else "")
        parts.append(f"<pre>{_e(shown)}</pre>")
    rating = trace.step_ratings.get(k)
    if rating is not None:
        parts.append(f"<i>judged {_e(STEP_VERDICTS.get((rating, trace.step_blame.get(k)), rating))}</i>")
    source = inline_picture(picture(events, k))
    if source is not None:
        parts.append(f'<img alt="step {k} overlay" src="{source}">')
    return "<br>".join(parts)
