"""The Review tab: find a stored session, step through it, judge it, correct it.

A stored session is turned back into events (:func:`taco_app.store.codec.trace_events`) and shown by
the same functions as a live run. Every rating, correction and note is saved as it is given. The
good sessions leave through the Export tab (:mod:`taco_app.ui.export_tab`).
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
from taco_app.ui import overlays, render
from taco_app.ui.studio import Studio

COLUMNS = ["id", "when", "question", "answer", "status", "steps", "rating", "model"]
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


def _table(studio: Studio, text: str, status: str, rating: str, tool: str, page: int) -> tuple[list[list[Any]], str]:
    flt = queries.SessionFilter(text=_search_text("search text", text), status=None if status == "any" else status,
                                rating=None if rating == "any" else rating, tool=_search_text("tool name", tool),
                                page=_search_page(page), page_size=20)
    try:
        result = queries.list_sessions(studio.store, flt)
    except ValueError as err:  # a filter the store refuses (in words, e.g. an unknown rating)
        raise gr.Error(f"{str(err)[:1].upper()}{str(err)[1:]}.")
    rows = [[s.id, dt.datetime.fromtimestamp(s.created_at).strftime("%Y-%m-%d %H:%M"), s.question[:120],
             render.answer_text(s.answer)[:80] if s.answer is not None else "", s.status, s.steps, s.rating or "",
             s.model or ""] for s in result.items]
    return rows, f"{result.total} session(s) · page {result.page} of {result.pages}"


def _feedback_text(trace: queries.Trace) -> str:
    lines = [f"**Session rating:** {trace.rating or 'none'}"]
    if trace.corrected_answer is not None:
        lines.append(f"**Corrected answer:** {render.escape_text(trace.corrected_answer)}")
    if trace.step_ratings:
        lines.append("**Step ratings:** " + ", ".join(f"step {k}: {v}" for k, v in sorted(trace.step_ratings.items())))
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
    page: gr.Number
    refresh: gr.Button
    total: gr.Markdown
    table: gr.Dataframe
    session_id: gr.Textbox
    slider: gr.Slider
    previous: gr.Button
    following: gr.Button
    chat: gr.Chatbot
    picture: gr.Image
    caption: gr.Markdown
    feedback: gr.Markdown
    up: gr.Button
    down: gr.Button
    step_up: gr.Button
    step_down: gr.Button
    answer: gr.Textbox
    save_answer: gr.Button
    step_text: gr.Code
    save_step: gr.Button
    note: gr.Textbox
    save_note: gr.Button

    def filters(self) -> list[Any]:
        return [self.search, self.status, self.rating, self.tool, self.page]

    def shown(self) -> list[Any]:
        """What showing a stored step updates, in the order its API (show_stored_step) returns them."""
        return [self.chat, self.slider, self.picture, self.caption, self.feedback, self.step_text]


def build_review(studio: Studio) -> None:
    """The Review tab's components and events (call inside a ``gr.Tab``)."""
    page = _layout()
    _wire_search(studio, page)
    _wire_steps(studio, page)
    _wire_feedback(studio, page)


def _layout() -> ReviewPage:
    with gr.Row():
        search = gr.Textbox(label="Search question or answer", scale=3, elem_id="review-search")
        status = gr.Dropdown(STATUSES, value="any", label="Status", scale=1)
        rating = gr.Dropdown(["any", "up", "down"], value="any", label="Rating", scale=1)
        tool = gr.Textbox(label="Used the tool", placeholder="e.g. OCR", scale=1)
        page = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=1)
        refresh = gr.Button("Search", scale=1, elem_id="review-refresh")
    total = gr.Markdown()
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, elem_id="review-table", max_height=320)
    session_id = gr.Textbox(label="Session", interactive=False, elem_id="review-session")
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
            caption = gr.Markdown()
            feedback = gr.Markdown(elem_id="review-feedback")
            with gr.Row():
                up = gr.Button("▲ Session", elem_id="rate-up")
                down = gr.Button("▼ Session", elem_id="rate-down")
                step_up = gr.Button("▲ Step", elem_id="rate-step-up")
                step_down = gr.Button("▼ Step", elem_id="rate-step-down")
            answer = gr.Textbox(label="Correct the answer", lines=1)
            save_answer = gr.Button("Save answer")
            step_text = gr.Code(label="Correct the shown step (CoTA JSON)", language="json")
            save_step = gr.Button("Save step")
            note = gr.Textbox(label="Note", lines=2)
            save_note = gr.Button("Save note")
    return ReviewPage(search, status, rating, tool, page, refresh, total, table, session_id, slider, previous,
                      following, chat, picture, caption, feedback, up, down, step_up, step_down, answer, save_answer,
                      step_text, save_step, note, save_note)


def _wire_search(studio: Studio, page: ReviewPage) -> None:
    def search_sessions(text, status, rating, tool, number):
        return _table(studio, text, status, rating, tool, number)

    page.refresh.click(search_sessions, page.filters(), [page.table, page.total], api_name="search_sessions")
    page.search.submit(search_sessions, page.filters(), [page.table, page.total], api_name=False)


def _wire_steps(studio: Studio, page: ReviewPage) -> None:
    """Opening a session from the table, and stepping through it with the slider and the buttons."""

    def open_session(event: gr.SelectData, rows):
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return rows.iloc[row, 0] if hasattr(rows, "iloc") else rows[row][0]

    def load(identifier, upto=None):
        return _show_stored(studio, page, identifier, upto)

    shown, at = page.shown(), [page.session_id, page.slider]
    page.table.select(open_session, page.table, page.session_id).then(load, page.session_id, shown)
    page.slider.release(load, at, shown, api_name="show_stored_step")
    page.previous.click(lambda s, k: load(s, (k or 1) - 1), at, shown)
    page.following.click(lambda s, k: load(s, (k or 1) + 1), at, shown)


def _show_stored(studio: Studio, page: ReviewPage, identifier: str | None, upto: Any) -> dict[Any, Any]:
    """The page showing a stored session up to step ``upto`` (default: its last), by component."""
    trace = queries.get_trace(studio.store, identifier) if identifier else None
    if trace is None:
        return {page.chat: [], page.slider: gr.update(), page.picture: None,
                page.caption: "Pick a session in the table.", page.feedback: "", page.step_text: ""}
    events = codec.trace_events(trace)
    steps = [n for _label, n in render.step_choices(events)] or [1]
    last = steps[-1]
    upto = last if upto is None else max(1, min(int(upto), last))
    shown = [e for e in events if e.step <= upto] if upto < last else events
    image, text = _step_picture(events, upto)
    return {page.chat: render.chat_messages(shown),
            page.slider: gr.update(minimum=1, maximum=max(last, 1), value=upto),
            page.picture: studio.picture(image),
            page.caption: render.escape_text(text),
            page.feedback: _feedback_text(trace),
            page.step_text: _step_json(trace, upto, trace.corrected_steps.get(upto))}


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

    def rate(identifier, upto, value, on_step):
        _need(identifier)
        queries.rate(studio.store, identifier, value, step=int(upto) if on_step else None)
        return _saved(studio, identifier, f"Rated {'step ' + str(int(upto)) if on_step else 'the session'} {value}.")

    page.up.click(lambda s, k: rate(s, k, "up", False), at, page.feedback, api_name="rate_up")
    page.down.click(lambda s, k: rate(s, k, "down", False), at, page.feedback)
    page.step_up.click(lambda s, k: rate(s, k, "up", True), at, page.feedback)
    page.step_down.click(lambda s, k: rate(s, k, "down", True), at, page.feedback)

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


def _step_json(trace: queries.Trace, upto: int, corrected: Any) -> str:
    if corrected is not None:
        return json.dumps(corrected, ensure_ascii=False, indent=1)
    row = next((s for s in trace.steps if s["index"] == upto), None)
    if row is None:
        return ""
    if row.get("action") is not None or row.get("thought"):
        actions = [row["action"]] if row.get("action") else []
        return json.dumps({"thought": row.get("thought") or "", "actions": actions}, ensure_ascii=False, indent=1)
    return row.get("raw") or ""
