"""The Review tab: find a stored session, step through it, judge it, correct it, see its forks.

A stored session is turned back into events (:func:`taco_app.store.codec.trace_events`) and shown by
the same functions as a live run. Every rating, correction and note is saved as it is given; a bad
step says whose fault it was (the model's, or the tool's observation). The session's parent and
forks are listed, each opened with a click. Forking from a step is :mod:`taco_app.ui.forking`;
comparing two sessions side by side, :mod:`taco_app.ui.compare`. The good sessions leave through the
Export tab (:mod:`taco_app.ui.export_tab`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from taco_app.cota.actions import Action
from taco_app.store import codec, queries
from taco_app.store.export.rebuild import keeps_observation
from taco_app.ui import boxes, overlays, render
from taco_app.ui.ask import ManualPanel, manual_panel
from taco_app.ui.studio import Studio

COLUMNS = ["id", "when", "question", "answer", "status", "steps", "rating", "model"]
FAMILY_COLUMNS = ["relation", "fork step", "id", "answer", "status", "steps", "rating"]
STATUSES = ["any", "finished", "failed", "cancelled", "max_steps", "interrupted", "running"]


def _search_page(page: Any) -> int:
    """The page asked for, or gr.Error: a whole number from 1 to the store's last possible page."""
    if page is None or page == "":
        return 1
    if isinstance(page, bool) or not isinstance(page, (int, float)) or page != page or page % 1 \
            or not 1 <= page <= queries.MAX_PAGE:
        raise gr.Error(f"Page must be a whole number from 1 to {queries.MAX_PAGE:,}.")
    return int(page)


def _search_text(label: str, text: str | None) -> str | None:
    """A search field's text, or gr.Error when it is longer than the store searches."""
    text = text or ""
    if len(text) > queries.MAX_SEARCH_CHARS:
        raise gr.Error(f"The {label} is {len(text):,} characters long; the limit is {queries.MAX_SEARCH_CHARS:,}:"
                       " shorten it.")
    return text or None


def _table(studio: Studio, text: str, status: str, rating: str, tool: str, page: int,
           eval_run: str | None = None) -> tuple[list[list[Any]], str]:
    flt = queries.SessionFilter(text=_search_text("search text", text), status=None if status == "any" else status,
                                rating=None if rating == "any" else rating, tool=_search_text("tool name", tool),
                                eval_run=_search_text("eval run", (eval_run or "").strip()),
                                page=_search_page(page), page_size=20)
    try:
        result = queries.list_sessions(studio.store, flt)
    except ValueError as err:  # a filter the store refuses (in words, e.g. an unknown rating)
        raise gr.Error(f"{str(err)[:1].upper()}{str(err)[1:]}.")
    rows = [[s.id, dt.datetime.fromtimestamp(s.created_at).strftime("%Y-%m-%d %H:%M"), s.question[:120],
             render.answer_text(s.answer)[:80] if s.answer is not None else "", s.status, s.steps, s.rating or "",
             s.model or ""] for s in result.items]
    return rows, f"{result.total} session(s) · page {result.page} of {result.pages}"


STEP_VERDICTS = {("up", None): "good", ("down", None): "bad", ("down", "model"): "bad: the model's",
                 ("down", "tool"): "bad: the tool's"}


def _feedback_text(trace: queries.Trace) -> str:
    lines = [f"**Session rating:** {trace.rating or 'none'}"]
    if trace.corrected_answer is not None:
        lines.append(f"**Corrected answer:** {render.escape_text(trace.corrected_answer)}")
    if trace.step_ratings:
        verdicts = (f"step {k}: {STEP_VERDICTS.get((v, trace.step_blame.get(k)), v)}"
                    for k, v in sorted(trace.step_ratings.items()))
        lines.append("**Steps:** " + ", ".join(verdicts))
    if trace.corrected_steps:
        lines.append("**Corrected steps:** " + ", ".join(str(k) for k in sorted(trace.corrected_steps)))
    notes = [f for f in trace.feedback if f.note]
    for note in notes[-5:]:
        where = f"step {note.step}" if note.step is not None else "session"
        lines.append(f"- note on {where}: {render.escape_text(note.note)}")
    return "\n\n".join(lines)


@dataclass
class ReviewPage:
    """The Review tab's components, by name."""

    search: gr.Textbox
    status: gr.Dropdown
    rating: gr.Dropdown
    tool: gr.Textbox
    eval_run: gr.Textbox
    page: gr.Number
    refresh: gr.Button
    total: gr.Markdown
    table: gr.Dataframe
    session_id: gr.Textbox
    lineage: gr.Markdown  # the session's parent and forks, in words
    family: gr.Dataframe  # the same, one row each: a click opens it
    slider: gr.Slider
    previous: gr.Button
    following: gr.Button
    chat: gr.Chatbot
    picture: gr.Image
    caption: gr.Markdown
    feedback: gr.Markdown
    up: gr.Button
    down: gr.Button
    step_good: gr.Button
    step_model: gr.Button  # a bad step, the model's fault: it misused a correct observation
    step_tool: gr.Button  # a bad step, the tool's fault: its observation was wrong
    answer: gr.Textbox
    save_answer: gr.Button
    step_text: gr.Code
    save_step: gr.Button
    fork: gr.Button
    run_again: gr.Button
    fork_stop: gr.Button
    fork_info: gr.Markdown
    manual: ManualPanel  # a manual fork waits here for the person's next step
    compare_with: gr.Dropdown
    compare: gr.Button
    note: gr.Textbox
    save_note: gr.Button

    def filters(self) -> list[Any]:
        return [self.search, self.status, self.rating, self.tool, self.page, self.eval_run]

    def shown(self) -> list[Any]:
        """What showing a stored step updates, in the order its API (show_stored_step) returns them."""
        return [self.chat, self.slider, self.picture, self.caption, self.feedback, self.step_text, self.fork]

    def opened(self) -> list[Any]:
        """What opening a session updates, in the order its API (open_session) returns them."""
        return [self.session_id, *self.shown(), self.lineage, self.family, self.compare_with]


def build_review(studio: Studio) -> ReviewPage:
    """The Review tab's components and events (call inside a ``gr.Tab``); forks and comparisons are
    wired by their modules, which need other tabs' components too."""
    page = _layout()
    _wire_search(studio, page)
    _wire_steps(studio, page)
    _wire_feedback(studio, page)
    boxes.wire(studio, page)
    return page


def _layout() -> ReviewPage:
    with gr.Row():
        search = gr.Textbox(label="Search question or answer", scale=3, elem_id="review-search")
        status = gr.Dropdown(STATUSES, value="any", label="Status", scale=1)
        rating = gr.Dropdown(["any", "up", "down"], value="any", label="Rating", scale=1)
        tool = gr.Textbox(label="Used the tool", placeholder="e.g. OCR", scale=1)
        eval_run = gr.Textbox(label="Eval run", placeholder="a run's name", scale=1, elem_id="review-eval-run")
        page = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=1)
        refresh = gr.Button("Search", scale=1, elem_id="review-refresh")
    total = gr.Markdown()
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, elem_id="review-table", max_height=320)
    session_id = gr.Textbox(label="Session", interactive=False, elem_id="review-session")
    with gr.Row(equal_height=True):
        lineage = gr.Markdown(elem_id="review-lineage")
        compare_with = gr.Dropdown([], label="Compare with: its parent, a fork, or any session id", scale=2,
                                   allow_custom_value=True, elem_id="review-compare-with")
        compare = gr.Button("Compare side by side", scale=1, elem_id="review-compare")
    family = gr.Dataframe(headers=FAMILY_COLUMNS, interactive=False, wrap=True, visible=False, max_height=200,
                          elem_id="review-family", label="Parent and forks: click one to open it")
    with gr.Row():
        with gr.Column(scale=5):
            slider = gr.Slider(1, 11, step=1, value=1, label="Show steps up to", elem_id="review-slider")
            with gr.Row():
                previous = gr.Button("◀ Previous step")
                following = gr.Button("Next step ▶")
            chat = gr.Chatbot(label="The session", height=520, elem_id="review-chat", group_consecutive_messages=False,
                              latex_delimiters=[])  # no LaTeX: "$$" in a tool's output is text (render.py)
        with gr.Column(scale=4):
            picture = gr.Image(label="The step's overlay", type="filepath", interactive=False, height=380,
                               elem_id="review-image")  # a file that never changes: see Scratch.picture
            boxes.build(picture)  # box editor: drag the step's box to fix it (taco_app.ui.boxes)
            caption = gr.Markdown()
            feedback = gr.Markdown(elem_id="review-feedback")
            with gr.Row():
                up = gr.Button("▲ Session", elem_id="rate-up")
                down = gr.Button("▼ Session", elem_id="rate-down")
            with gr.Row():
                step_good = gr.Button("Good step", elem_id="rate-step-up")
                step_model = gr.Button("Bad step: model", elem_id="rate-step-model")
                step_tool = gr.Button("Bad step: tool", elem_id="rate-step-tool")
            gr.Markdown("*Bad step: model* — the model misused a correct observation. *Bad step: tool* — the"
                        " tool's observation was wrong (an OCR misread, a wrong box).")
            answer = gr.Textbox(label="Correct the answer", lines=1)
            save_answer = gr.Button("Save answer")
            step_text = gr.Code(label="The shown step (CoTA JSON): correct it, or edit it and fork", language="json",
                                elem_id="review-step-text")
            with gr.Row():
                save_step = gr.Button("Save step", min_width=80)
                fork = gr.Button("Fork from step 1", variant="primary", min_width=80, elem_id="review-fork")
                run_again = gr.Button("Run again", min_width=80, elem_id="review-run-again")
                fork_stop = gr.Button("Stop", variant="stop", min_width=60, elem_id="review-fork-stop")
            fork_info = gr.Markdown("A fork keeps the steps before the shown one, runs the edited step with the real"
                                    " tools, and lets the Ask tab's model write the rest.", elem_id="review-fork-info")
            manual = manual_panel("review-")
            note = gr.Textbox(label="Note", lines=2)
            save_note = gr.Button("Save note")
    return ReviewPage(search=search, status=status, rating=rating, tool=tool, eval_run=eval_run, page=page, refresh=refresh, total=total,
                      table=table, session_id=session_id, lineage=lineage, family=family, slider=slider,
                      previous=previous, following=following, chat=chat, picture=picture, caption=caption,
                      feedback=feedback, up=up, down=down, step_good=step_good, step_model=step_model,
                      step_tool=step_tool, answer=answer, save_answer=save_answer, step_text=step_text,
                      save_step=save_step, fork=fork, run_again=run_again, fork_stop=fork_stop, fork_info=fork_info,
                      manual=manual, compare_with=compare_with, compare=compare, note=note, save_note=save_note)


def _wire_search(studio: Studio, page: ReviewPage) -> None:
    def search_sessions(text, status, rating, tool, number, eval_run=""):
        return _table(studio, text, status, rating, tool, number, eval_run)

    page.refresh.click(search_sessions, page.filters(), [page.table, page.total], api_name="search_sessions")
    page.search.submit(search_sessions, page.filters(), [page.table, page.total], api_name=False)


def _wire_steps(studio: Studio, page: ReviewPage) -> None:
    """Opening a session (from the table, or its parent or a fork from the lineage table), and stepping
    through it with the slider and the buttons."""

    def pick_row(event: gr.SelectData, rows):
        return _picked(event, rows, 0)

    def pick_relative(event: gr.SelectData, rows):
        return _picked(event, rows, FAMILY_COLUMNS.index("id"))

    def open_session(identifier):
        return show_session(studio, page, identifier)

    def load(identifier, upto=None):
        return _show_stored(studio, page, identifier, upto)

    shown, at = page.shown(), [page.session_id, page.slider]
    page.table.select(pick_row, page.table, page.session_id, api_name=False).then(
        open_session, page.session_id, page.opened(), api_name=False)
    page.family.select(pick_relative, page.family, page.session_id, api_name=False).then(
        open_session, page.session_id, page.opened(), api_name=False)
    # For API clients (and the tests): open any session by its id.
    page.session_id.submit(open_session, page.session_id, page.opened(), api_name="open_session")
    page.slider.release(load, at, shown, api_name="show_stored_step")
    page.previous.click(lambda s, k: load(s, (k or 1) - 1), at, shown)
    page.following.click(lambda s, k: load(s, (k or 1) + 1), at, shown)


def _picked(event: Any, rows: Any, column: int) -> str:
    row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
    return rows.iloc[row, column] if hasattr(rows, "iloc") else rows[row][column]


def show_session(studio: Studio, page: ReviewPage, identifier: str | None) -> dict[Any, Any]:
    """The page with session ``identifier`` open at its last step: its steps, lineage and comparisons."""
    identifier = (identifier or "").strip()
    if identifier and queries.get_trace(studio.store, identifier) is None:
        raise gr.Error(f"There is no session {identifier!r} in the store.")
    updates = _show_stored(studio, page, identifier or None, None)
    words, rows, choices = _lineage(studio, identifier) if identifier else ("", [], [])
    updates.update({page.session_id: identifier, page.lineage: words,
                    page.family: gr.update(value=rows, visible=bool(rows)),
                    page.compare_with: gr.update(choices=choices, value=choices[0][1] if choices else None)})
    return updates


def _lineage(studio: Studio, identifier: str) -> tuple[str, list[list[Any]], list[tuple[str, str]]]:
    """The session's parent and forks: in words, as table rows, and as choices to compare with."""
    family = queries.lineage(studio.store, identifier)
    rows: list[list[Any]] = []
    choices: list[tuple[str, str]] = []
    words = []
    if family.parent is not None:
        words.append(f"**Forked from** `{family.parent.id}` at step {family.fork_step}.")
        rows.append(["parent", family.fork_step, *_family_row(family.parent)])
        choices.append((f"its parent, {family.parent.id} (forked at step {family.fork_step})", family.parent.id))
    elif family.parent_id is not None:
        words.append(f"**Forked from** `{family.parent_id}` at step {family.fork_step}, no longer stored.")
    for child, step in family.children:
        rows.append(["fork", step, *_family_row(child)])
        choices.append((f"its fork {child.id} (from step {step})", child.id))
    if family.children:
        words.append(f"**Forks:** {len(family.children)} (listed below).")
    return " ".join(words) or "Not a fork, and not forked yet.", rows, choices


def _family_row(summary: queries.SessionSummary) -> list[Any]:
    answer = render.answer_text(summary.answer)[:80] if summary.answer is not None else ""
    return [summary.id, answer, summary.status, summary.steps, summary.rating or ""]


def _show_stored(studio: Studio, page: ReviewPage, identifier: str | None, upto: Any) -> dict[Any, Any]:
    """The page showing a stored session up to step ``upto`` (default: its last), by component."""
    trace = queries.get_trace(studio.store, identifier) if identifier else None
    if trace is None:
        return {page.chat: [], page.slider: gr.update(), page.picture: None,
                page.caption: "Pick a session in the table.", page.feedback: "", page.step_text: "",
                page.fork: gr.update()}
    events = codec.trace_events(trace)
    steps = [n for _label, n in render.step_choices(events)] or [1]
    last = steps[-1]
    upto = last if upto is None else max(1, min(int(upto), last))
    shown = [e for e in events if e.step <= upto] if upto < last else events
    image, text = _step_picture(events, upto)
    return {page.chat: render.chat_messages(shown),
            # A slider needs two values: a one-step session gets 1 to 2 (2 shows step 1 too).
            page.slider: gr.update(minimum=1, maximum=max(last, 2), value=upto),
            page.picture: studio.picture(image),
            page.caption: render.escape_text(text),
            page.feedback: _feedback_text(trace),
            page.step_text: step_json(trace, upto, trace.corrected_steps.get(upto)),
            page.fork: gr.update(value=f"Fork from step {upto}")}


def _step_picture(events: list[Any], upto: int) -> tuple[Any, str]:
    """Step ``upto``'s picture and caption; at a step with none (e.g. Terminate), the last earlier one's."""
    image, text = overlays.render_step(events, upto)
    for earlier in range(upto - 1, 0, -1):
        if image is not None:
            break
        found, words = overlays.render_step(events, earlier)
        if found is not None:
            image, text = found, f"{text}\nShowing step {earlier}: {words}"
    return image, text


def _wire_feedback(studio: Studio, page: ReviewPage) -> None:
    """Ratings, corrections and notes: each saved at once, then the feedback summary shown again."""
    at = [page.session_id, page.slider]

    def rate(identifier, upto, value, on_step, blame=None):
        _need(identifier)
        step = int(upto) if on_step else None
        try:
            queries.rate(studio.store, identifier, value, step=step, blame=blame)
        except ValueError as err:  # e.g. the session was deleted meanwhile
            raise gr.Error(f"Not saved: {err}.")
        if step is None:
            return _saved(studio, identifier, f"Rated the session {value}.")
        return _saved(studio, identifier, f"Step {step} saved as {STEP_VERDICTS[value, blame]}.")

    page.up.click(lambda s, k: rate(s, k, "up", False), at, page.feedback, api_name="rate_up")
    page.down.click(lambda s, k: rate(s, k, "down", False), at, page.feedback, api_name="rate_down")
    page.step_good.click(lambda s, k: rate(s, k, "up", True), at, page.feedback, api_name="good_step")
    page.step_model.click(lambda s, k: rate(s, k, "down", True, "model"), at, page.feedback, api_name="bad_step_model")
    page.step_tool.click(lambda s, k: rate(s, k, "down", True, "tool"), at, page.feedback, api_name="bad_step_tool")

    def fix_answer(identifier, upto, text):
        _need(identifier)
        if not (text or "").strip():
            raise gr.Error("Type the answer the session should have given.")
        queries.correct_answer(studio.store, identifier, text.strip())
        return _saved(studio, identifier, "Corrected answer saved.")

    page.save_answer.click(fix_answer, [*at, page.answer], page.feedback)

    def fix_step(identifier, upto, text):
        _need(identifier)
        try:
            corrected = queries.correct_step(studio.store, identifier, int(upto), text or "")
        except ValueError as err:
            raise gr.Error(f"Step {int(upto)} was not saved: {err}")
        return _saved(studio, identifier, f"Corrected step {int(upto)} saved." + _stale_warning(studio, identifier, int(upto), corrected))

    page.save_step.click(fix_step, [*at, page.step_text], page.feedback)

    def keep_note(identifier, upto, text):
        _need(identifier)
        if not (text or "").strip():
            raise gr.Error("The note is empty.")
        queries.add_note(studio.store, identifier, text.strip())
        return _saved(studio, identifier, "Note saved.")

    page.save_note.click(keep_note, [*at, page.note], page.feedback)


def _stale_warning(studio: Studio, identifier: str, step: int, corrected: dict[str, Any]) -> str:
    """What a saved correction means for the exports, when its action is not the one that ran."""
    trace = queries.get_trace(studio.store, identifier)
    row = next((s for s in trace.steps if s["index"] == step), None) if trace else None
    actions = corrected.get("actions") or []
    action = Action.from_dict(actions[0]) if actions else None
    if row is None or keeps_observation(action, row["action"], ran=not row["parse_error_code"]):
        return ""
    return (f" Its action is not the one that ran, so the observation after it belongs to the old action: "
            f"exports leave this session out until it is run again from step {step}.")


def _need(identifier: str | None) -> None:
    if not identifier:
        raise gr.Error("Open a session first (click a row of the table).")


def _saved(studio: Studio, identifier: str, message: str) -> str:
    """Say it was saved; the session's feedback summary, as it now stands."""
    gr.Info(message)
    trace = queries.get_trace(studio.store, identifier)
    return _feedback_text(trace) if trace else ""


def step_json(trace: queries.Trace, upto: int, corrected: Any) -> str:
    if corrected is not None:
        return json.dumps(corrected, ensure_ascii=False, indent=1)
    row = next((s for s in trace.steps if s["index"] == upto), None)
    if row is None:
        return ""
    if row.get("action") is not None or row.get("thought"):
        actions = [row["action"]] if row.get("action") else []
        return json.dumps({"thought": row.get("thought") or "", "actions": actions}, ensure_ascii=False, indent=1)
    return row.get("raw") or ""
