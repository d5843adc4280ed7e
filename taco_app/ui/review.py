"""The Review and Export tabs: find a stored session, step through it, judge it, export the good ones.

A stored session is turned back into events (:func:`taco_app.ui.render.trace_events`) and shown by
the same functions as a live run. Every rating, correction and note is saved as it is given.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr

from taco_app.store import queries
from taco_app.store.export import FORMATS, export
from taco_app.ui import overlays, render
from taco_app.ui.live import Owner, owner
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
             render._answer_text(s.answer)[:80] if s.answer is not None else "", s.status, s.steps, s.rating or "",
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


def build_review(studio: Studio) -> None:
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

    filters = [search, status, rating, tool, page]

    def search_sessions(*values):
        return _table(studio, *values)

    refresh.click(search_sessions, filters, [table, total], api_name="search_sessions")
    search.submit(search_sessions, filters, [table, total], api_name=False)

    def open_session(event: gr.SelectData, rows):
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return rows.iloc[row, 0] if hasattr(rows, "iloc") else rows[row][0]

    def load(identifier, upto=None):
        trace = queries.get_trace(studio.store, identifier) if identifier else None
        if trace is None:
            return [], gr.update(), None, "Pick a session in the table.", "", ""
        events = render.trace_events(trace)
        steps = [n for _label, n in render.step_choices(events)] or [1]
        last = steps[-1]
        upto = last if upto is None else max(1, min(int(upto), last))
        shown = [e for e in events if e.step <= upto] if upto < last else events
        image, text = overlays.render_step(events, upto)
        for earlier in range(upto - 1, 0, -1):  # e.g. at Terminate: show the last step that drew something
            if image is not None:
                break
            found, words = overlays.render_step(events, earlier)
            if found is not None:
                image, text = found, f"{text}\nShowing step {earlier}: {words}"
        text = render.escape_text(text)
        corrected = trace.corrected_steps.get(upto)
        step_json = _step_json(trace, upto, corrected)
        return (render.chat_messages(shown), gr.update(minimum=1, maximum=max(last, 1), value=upto),
                studio.picture(image), text, _feedback_text(trace), step_json)

    shown_outputs = [chat, slider, picture, caption, feedback, step_text]
    table.select(open_session, table, session_id).then(load, session_id, shown_outputs)
    slider.release(load, [session_id, slider], shown_outputs, api_name="show_stored_step")
    previous.click(lambda s, k: load(s, (k or 1) - 1), [session_id, slider], shown_outputs)
    following.click(lambda s, k: load(s, (k or 1) + 1), [session_id, slider], shown_outputs)

    def saved(identifier, message):
        gr.Info(message)
        trace = queries.get_trace(studio.store, identifier)
        return _feedback_text(trace) if trace else ""

    def need(identifier):
        if not identifier:
            raise gr.Error("Open a session first (click a row of the table).")

    def rate(identifier, upto, value, on_step):
        need(identifier)
        queries.rate(studio.store, identifier, value, step=int(upto) if on_step else None)
        return saved(identifier, f"Rated {'step ' + str(int(upto)) if on_step else 'the session'} {value}.")

    up.click(lambda s, k: rate(s, k, "up", False), [session_id, slider], feedback, api_name="rate_up")
    down.click(lambda s, k: rate(s, k, "down", False), [session_id, slider], feedback)
    step_up.click(lambda s, k: rate(s, k, "up", True), [session_id, slider], feedback)
    step_down.click(lambda s, k: rate(s, k, "down", True), [session_id, slider], feedback)

    def fix_answer(identifier, upto, text):
        need(identifier)
        if not (text or "").strip():
            raise gr.Error("Type the answer the session should have given.")
        queries.correct_answer(studio.store, identifier, text.strip())
        return saved(identifier, "Corrected answer saved.")

    save_answer.click(fix_answer, [session_id, slider, answer], feedback)

    def fix_step(identifier, upto, text):
        need(identifier)
        try:
            queries.correct_step(studio.store, identifier, int(upto), text or "")
        except ValueError as err:
            raise gr.Error(f"Step {int(upto)} was not saved: {err}")
        return saved(identifier, f"Corrected step {int(upto)} saved.")

    save_step.click(fix_step, [session_id, slider, step_text], feedback)

    def keep_note(identifier, upto, text):
        need(identifier)
        if not (text or "").strip():
            raise gr.Error("The note is empty.")
        queries.add_note(studio.store, identifier, text.strip())
        return saved(identifier, "Note saved.")

    save_note.click(keep_note, [session_id, slider, note], feedback)


def _step_json(trace: queries.Trace, upto: int, corrected: Any) -> str:
    if corrected is not None:
        return json.dumps(corrected, ensure_ascii=False, indent=1)
    row = next((s for s in trace.steps if s["index"] == upto), None)
    if row is None:
        return ""
    if row.get("action") is not None or row.get("thought"):
        return json.dumps({"thought": row.get("thought") or "", "actions": [row["action"]] if row.get("action") else []},
                          ensure_ascii=False, indent=1)
    return row.get("raw") or ""


def build_export(studio: Studio) -> None:
    with gr.Row():
        fmt = gr.Radio(list(FORMATS), value=list(FORMATS)[0], label="Format", elem_id="export-format")
        rating = gr.Radio(["any", "up"], value="any", label="Rating")
        corrected = gr.Checkbox(label="Only corrected sessions")
        since = gr.Textbox(label="Since (YYYY-MM-DD)", placeholder="any date")
    count = gr.Markdown(elem_id="export-count")
    go = gr.Button("Export", variant="primary", elem_id="export-run")
    download = gr.File(label="Download", interactive=False, elem_id="export-file")
    inputs = [fmt, rating, corrected, since]

    def options(fmt_, rating_, corrected_, since_):
        return dict(fmt=fmt_, rating=None if rating_ == "any" else rating_, corrected_only=bool(corrected_),
                    since=(since_ or "").strip() or None)

    def counted(*values):
        try:
            result = export(studio.store, None, dry_run=True, **options(*values))
        except ValueError as err:
            return f"**Cannot count:** {render.escape_text(err)}"
        skipped = f" ({len(result.skipped)} cannot be exported)" if result.skipped else ""
        return f"**{result.count}** session(s) match{skipped}."

    for component in inputs:
        component.change(counted, inputs, count)

    def zip_export(work: Path, *values):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = work / f"taco-{values[0]}-{stamp}"
        try:
            result = export(studio.store, folder, **options(*values))
        except ValueError as err:
            raise gr.Error(str(err))
        if result.count == 0:
            raise gr.Error("No session matches these filters: nothing to export.")
        # Into Gradio's cache (the app's private temporary folder): served as it is, with no second copy.
        Path(download.GRADIO_CACHE).mkdir(parents=True, exist_ok=True)
        served = Path(tempfile.mkdtemp(prefix="export-", dir=download.GRADIO_CACHE))
        archive = shutil.make_archive(str(served / folder.name), "zip", root_dir=folder)
        gr.Info(f"Exported {result.count} session(s).")
        return archive, counted(*values)

    zips: dict[Owner, Path] = {}  # each browser tab's latest zip, removed when its next export replaces it
    zips_lock = threading.Lock()

    def run_export(fmt_, rating_, corrected_, since_, request: gr.Request):
        work = Path(tempfile.mkdtemp(dir=studio.scratch.exports))  # the exported files, until they are zipped
        try:
            archive, count = zip_export(work, fmt_, rating_, corrected_, since_)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        previous, key = None, owner(request)  # not the session hash alone: another client could name it
        if request.session_hash:
            with zips_lock:
                previous, zips[key] = zips.get(key), Path(archive).parent
        if previous is not None:  # that download was replaced by this one
            shutil.rmtree(previous, ignore_errors=True)
        return archive, count

    go.click(run_export, inputs, [download, count], api_name="export")
