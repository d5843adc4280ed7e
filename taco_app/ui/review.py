"""The Review tab: find a stored session, step through it, judge it, correct it, see its forks.

A stored session is turned back into events (:func:`taco_app.store.codec.trace_events`) and shown by
the same functions as a live run. Every rating, correction and note is saved as it is given; a bad
step says whose fault it was (the model's, or the tool's observation). The session's parent and
forks are listed, each opened with a click. Forking from a step is :mod:`taco_app.ui.forking`;
comparing two sessions side by side, :mod:`taco_app.ui.compare`. The good sessions leave through the
Export tab (:mod:`taco_app.ui.export_tab`).

Reviewing many sessions: "Next to review" opens the oldest session the filters match that nobody has
rated, and holds it for this reviewer for a while (:mod:`taco_app.store.review_queue`), so that people
reviewing from one store never get the same session at once; "k of n reviewed" counts the sessions
those filters match that have a session rating. Every judgment records who gave it: the login with
``--auth``, else the name typed in "Your name" (kept in the browser). The keys of
:mod:`taco_app.ui.keyboard` press the same buttons.
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
from taco_app.ui.controls import collapse_all
from taco_app.ui.errors import refusal
from taco_app.ui.keyboard import keys_html
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


def _filter(text: str | None, status: str | None, rating: str | None, tool: str | None, eval_run: str | None,
            page: Any = 1) -> queries.SessionFilter:
    """The Review filters as the store takes them, or gr.Error when one is out of bounds."""
    return queries.SessionFilter(text=_search_text("search text", text),
                                 status=None if status in (None, "any") else status,
                                 rating=None if rating in (None, "any") else rating, tool=_search_text("tool name", tool),
                                 eval_run=_search_text("eval run", (eval_run or "").strip()),
                                 page=_search_page(page), page_size=20)


def _table(studio: Studio, text: str, status: str, rating: str, tool: str, page: int,
           eval_run: str | None = None) -> tuple[list[list[Any]], str]:
    flt = _filter(text, status, rating, tool, eval_run, page)
    try:
        result = queries.list_sessions(studio.store, flt)
    except ValueError as err:  # a filter the store refuses (in words, e.g. an unknown rating)
        raise refusal(err)
    rows = [[s.id, dt.datetime.fromtimestamp(s.created_at).strftime("%Y-%m-%d %H:%M"), s.question[:120],
             render.answer_text(s.answer)[:80] if s.answer is not None else "", s.status, s.steps, s.rating or "",
             s.model or ""] for s in result.items]
    return rows, f"{result.total} session(s) · page {result.page} of {result.pages}"


STEP_VERDICTS = {("up", None): "good", ("down", None): "bad", ("down", "model"): "bad: the model's",
                 ("down", "tool"): "bad: the tool's"}
SESSION_VERDICTS = {"up": "good", "down": "bad"}
NO_NAME = ("Type your name first, in \u201cYour name\u201d above the table: each judgment records who gave it.")


def _reviewer(name: str | None, request: Any, *, optional: bool = False) -> str | None:
    """Who gives a judgment: the login with --auth, else the name typed in the page; gr.Error when there is
    none. ``optional``: an API call that leaves the name out (as calls did before names were kept) gives None."""
    from taco_app.store import review_queue

    login = getattr(request, "username", None) if request is not None else None
    if login:
        name = login
    elif name is None and optional:
        return None
    elif not (name or "").strip():
        raise gr.Error(NO_NAME)
    try:
        return review_queue.check_reviewer(name)
    except ValueError as err:
        raise refusal(err)


def _progress(studio: Studio, flt: queries.SessionFilter) -> str:
    """"k of n reviewed": of the sessions ``flt`` matches, how many have a session rating."""
    from taco_app.store import review_queue

    try:
        done = review_queue.progress(studio.store, flt)
    except ValueError as err:
        raise refusal(err)
    return f"**{done.reviewed:,} of {done.total:,} reviewed** (the sessions these filters match)"


def _marks(page: ReviewPage, trace: queries.Trace | None, step: int | None) -> dict[Any, Any]:
    """The session's and the shown step's ratings as they stand: the chosen button highlighted, and in words."""
    session = trace.rating if trace is not None else None
    rating = trace.step_ratings.get(step) if trace is not None and step is not None else None
    blame = trace.step_blame.get(step) if rating is not None else None
    chosen = {page.up: session == "up", page.down: session == "down", page.step_good: rating == "up",
              page.step_model: rating == "down" and blame != "tool", page.step_tool: rating == "down" and blame == "tool"}
    updates: dict[Any, Any] = {button: gr.update(variant="primary" if on else "secondary") for button, on in chosen.items()}
    if trace is None:
        updates[page.session_rated], updates[page.step_rated] = "", ""
        return updates
    answer = trace.session.get("answer")
    shown = render.escape_text(render.answer_text(answer)[:300]) if answer is not None else "none (it did not finish)"
    said = f"Rated: {SESSION_VERDICTS.get(session, session)}" if session else "not rated yet"
    updates[page.session_rated] = f"**Answer:** {shown}\n\nThe session: **{said}**"
    said = f"Rated: {STEP_VERDICTS.get((rating, blame), rating)}" if rating else "not rated yet"
    updates[page.step_rated] = f"Step {step}: **{said}**"
    return updates


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
    if trace.corrected_outputs:  # regions fixed in the box editor (taco_app.ui.boxes)
        lines.append("**Corrected regions:** " + ", ".join(
            f"step {k} ({len(v.get('regions') or [])})" for k, v in sorted(trace.corrected_outputs.items())))
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
    reviewer: gr.Textbox  # "Your name": who gives the judgments (the login instead, with --auth)
    remembered: Any  # gr.BrowserState: the name, kept in this browser between visits
    history: gr.State  # the sessions "Next to review" opened in this page, in order
    next_session: gr.Button  # "Next to review"
    back: gr.Button  # the session opened before this one
    progress: gr.Markdown  # "k of n reviewed"
    session_rated: gr.Markdown  # the answer, and the session's rating in words
    step_rated: gr.Markdown  # the shown step's rating in words
    keys: gr.HTML  # the keyboard shortcuts, shown by "?"
    collapse: gr.Button  # folds or unfolds every thought of the chat

    def filters(self) -> list[Any]:
        return [self.search, self.status, self.rating, self.tool, self.page, self.eval_run]

    def queue_filters(self) -> list[Any]:
        """The filters the review queue and its progress use (all but the page)."""
        return [self.search, self.status, self.rating, self.tool, self.eval_run]

    def marks(self) -> list[Any]:
        """The ratings as they stand: the buttons (highlighted when chosen), then the same in words."""
        return [self.up, self.down, self.step_good, self.step_model, self.step_tool, self.session_rated,
                self.step_rated]

    def _step(self) -> list[Any]:
        return [self.chat, self.slider, self.picture, self.caption, self.feedback, self.step_text, self.fork]

    def shown(self) -> list[Any]:
        """What showing a stored step updates, in the order its API (show_stored_step) returns them
        (buttons are not part of an API's values)."""
        return [*self._step(), *self.marks()]

    def opened(self) -> list[Any]:
        """What opening a session updates, in the order its API (open_session) returns them."""
        return [self.session_id, *self._step(), self.lineage, self.family, self.compare_with, *self.marks()]


def build_review(studio: Studio) -> ReviewPage:
    """The Review tab's components and events (call inside a ``gr.Tab``); forks and comparisons are
    wired by their modules, which need other tabs' components too."""
    page = _layout()
    _wire_search(studio, page)
    _wire_steps(studio, page)
    _wire_feedback(studio, page)
    _wire_queue(studio, page)
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
    with gr.Row(equal_height=True):
        reviewer = gr.Textbox(None, label="Your name", placeholder="saved with each rating", scale=1, max_length=64,
                              elem_id="review-name")
        back = gr.Button("\u25c0 Previous session", scale=1, elem_id="review-back")
        next_session = gr.Button("Next to review \u25b6", variant="primary", scale=1, elem_id="review-next")
        progress = gr.Markdown(elem_id="review-progress")
    gr.Markdown("Keys on this tab (outside text boxes): **J** next to review, **j**/**k** step, **+**/**-** rate the"
                " step, **Shift +**/**Shift -** rate the answer, **?** all keys.", elem_id="review-keys-hint")
    keys = gr.HTML(keys_html(), elem_id="review-keys")
    remembered = gr.BrowserState("", storage_key="taco-studio-reviewer")
    history = gr.State([])
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
                previous = gr.Button("◀ Previous step", elem_id="review-previous-step")
                following = gr.Button("Next step ▶", elem_id="review-next-step")
            # Made first, drawn below its "Collapse all" button.
            chat = gr.Chatbot(label="The session", height=520, elem_id="review-chat", group_consecutive_messages=False,
                              latex_delimiters=[], render=False)  # no LaTeX: "$$" in a tool's output is text (render.py)
            collapse = collapse_all(chat)
            chat.render()
        with gr.Column(scale=4):
            picture = gr.Image(label="The step's overlay", type="filepath", interactive=False, height=380,
                               elem_id="review-image")  # a file that never changes: see Scratch.picture
            boxes.build(picture)  # box editor: drag the step's box to fix it (taco_app.ui.boxes)
            caption = gr.Markdown()
            feedback = gr.Markdown(elem_id="review-feedback")
            session_rated = gr.Markdown(elem_id="review-session-rated")
            with gr.Row():
                up = gr.Button("Good answer", elem_id="rate-up")
                down = gr.Button("Bad answer", elem_id="rate-down")
            step_rated = gr.Markdown(elem_id="review-step-rated")
            with gr.Row():
                step_good = gr.Button("Good step", elem_id="rate-step-up")
                step_model = gr.Button("Bad step", elem_id="rate-step-model")
                step_tool = gr.Button("Tool wrong", elem_id="rate-step-tool")
            gr.Markdown("*Bad step*: the model misused a correct observation. *Tool wrong*: the tool's observation"
                        " was wrong (an OCR misread, a wrong box).")
            answer = gr.Textbox(label="Correct the answer", lines=1)
            save_answer = gr.Button("Save answer")
            step_text = gr.Code(label="The shown step (CoTA JSON): correct it, or edit it and fork", language="json",
                                elem_id="review-step-text")
            with gr.Row():
                save_step = gr.Button("Save step", min_width=80)
                fork = gr.Button("Fork from step 1", variant="primary", min_width=80, elem_id="review-fork")
                run_again = gr.Button("Run again", min_width=80, elem_id="review-run-again")
                fork_stop = gr.Button("Stop", variant="stop", min_width=60, elem_id="review-fork-stop",
                                      interactive=False)  # while a fork runs: see fork_started
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
                      manual=manual, compare_with=compare_with, compare=compare, note=note, save_note=save_note,
                      reviewer=reviewer, remembered=remembered, history=history, next_session=next_session,
                      back=back, progress=progress, session_rated=session_rated, step_rated=step_rated, keys=keys,
                      collapse=collapse)


def _wire_search(studio: Studio, page: ReviewPage) -> None:
    def search_sessions(text, status, rating, tool, number, eval_run=""):
        return _table(studio, text, status, rating, tool, number, eval_run)

    def progress(text, status, rating, tool, eval_run):
        return _progress(studio, _filter(text, status, rating, tool, eval_run))

    for searched in (page.refresh.click(search_sessions, page.filters(), [page.table, page.total],
                                        api_name="search_sessions"),
                     page.search.submit(search_sessions, page.filters(), [page.table, page.total], api_name=False)):
        searched.success(progress, page.queue_filters(), page.progress, api_name=False, show_progress="hidden")


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


def show_session(studio: Studio, page: ReviewPage, identifier: str | None, upto: Any = None) -> dict[Any, Any]:
    """The page with session ``identifier`` open at step ``upto`` (default: its last): its steps, lineage
    and comparisons."""
    identifier = (identifier or "").strip()
    trace = queries.get_trace(studio.store, identifier) if identifier else None
    if identifier and trace is None:
        raise gr.Error(f"There is no session {identifier!r} in the store.")
    updates = _show_stored(studio, page, identifier or None, upto, trace)
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


def _show_stored(studio: Studio, page: ReviewPage, identifier: str | None, upto: Any,
                 trace: queries.Trace | None = None) -> dict[Any, Any]:
    """The page showing a stored session up to step ``upto`` (default: its last), by component;
    ``trace``: the session, when the caller has just read it."""
    if trace is None and identifier:
        trace = queries.get_trace(studio.store, identifier)
    if trace is None:
        return {page.chat: [], page.slider: gr.update(), page.picture: None,
                page.caption: "Pick a session in the table.", page.feedback: "", page.step_text: "",
                page.fork: gr.update(), **_marks(page, None, None)}
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
            page.fork: gr.update(value=f"Fork from step {upto}"),
            **_marks(page, trace, upto)}


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

    def rater(value: str, on_step: bool, blame: str | None = None) -> Any:
        # ``name`` last and optional: API calls that leave it out keep working (see _reviewer).
        def rate(identifier, upto, name=None, request: gr.Request = None):
            _need(identifier)
            reviewer = _reviewer(name, request, optional=True)
            step = int(upto) if on_step else None
            try:
                queries.rate(studio.store, identifier, value, step=step, blame=blame, reviewer=reviewer)
            except ValueError as err:  # e.g. the session was deleted meanwhile
                raise gr.Error(f"Not saved: {err}.")
            if step is None:
                return _saved(studio, identifier, f"Rated the session {SESSION_VERDICTS[value]}.")
            return _saved(studio, identifier, f"Step {step} saved as {STEP_VERDICTS[value, blame]}.")

        return rate

    def marks(identifier, upto, *filters):
        """After a rating: the ratings as they now stand, and the progress."""
        trace = queries.get_trace(studio.store, identifier) if identifier else None
        updates = _marks(page, trace, int(upto or 1) if trace is not None else None)
        try:
            updates[page.progress] = _progress(studio, _filter(*filters))
        except gr.Error:  # filters the store refuses: the search says so when it is pressed
            pass
        return updates

    judged = [*at, page.reviewer]
    for button, (value, on_step, blame), api in (
            (page.up, ("up", False, None), "rate_up"), (page.down, ("down", False, None), "rate_down"),
            (page.step_good, ("up", True, None), "good_step"), (page.step_model, ("down", True, "model"), "bad_step_model"),
            (page.step_tool, ("down", True, "tool"), "bad_step_tool")):
        button.click(rater(value, on_step, blame), judged, page.feedback, api_name=api).success(
            marks, [*at, *page.queue_filters()], [*page.marks(), page.progress], api_name=False, show_progress="hidden")

    def fix_answer(identifier, upto, text, name=None, request: gr.Request = None):
        _need(identifier)
        if not (text or "").strip():
            raise gr.Error("Type the answer the session should have given.")
        queries.correct_answer(studio.store, identifier, text.strip(), reviewer=_reviewer(name, request, optional=True))
        return _saved(studio, identifier, "Corrected answer saved.")

    page.save_answer.click(fix_answer, [*at, page.answer, page.reviewer], page.feedback)

    def fix_step(identifier, upto, text, name=None, request: gr.Request = None):
        _need(identifier)
        reviewer = _reviewer(name, request, optional=True)
        try:
            corrected = queries.correct_step(studio.store, identifier, int(upto), text or "", reviewer=reviewer)
        except ValueError as err:
            raise gr.Error(f"Step {int(upto)} was not saved: {err}")
        return _saved(studio, identifier, f"Corrected step {int(upto)} saved." + _stale_warning(studio, identifier, int(upto), corrected))

    page.save_step.click(fix_step, [*at, page.step_text, page.reviewer], page.feedback)

    def keep_note(identifier, upto, text, name=None, request: gr.Request = None):
        _need(identifier)
        if not (text or "").strip():
            raise gr.Error("The note is empty.")
        queries.add_note(studio.store, identifier, text.strip(), reviewer=_reviewer(name, request, optional=True))
        return _saved(studio, identifier, "Note saved.")

    page.save_note.click(keep_note, [*at, page.note, page.reviewer], page.feedback)


def _wire_queue(studio: Studio, page: ReviewPage) -> None:
    """Next to review (the queue, shared by every reviewer of the store), back to the session before,
    and the name kept in the browser."""
    outputs = [*page.opened(), page.progress, page.history]

    def next_to_review(name, text=None, status="any", rating="any", tool=None, eval_run=None, history=None,
                       request: gr.Request = None):
        from taco_app.store import review_queue

        reviewer = _reviewer(name, request)
        flt = _filter(text, status, rating, tool, eval_run)
        history = list(history or [])
        try:
            found = review_queue.next_to_review(studio.store, flt, reviewer, skip=history)
        except ValueError as err:
            raise refusal(err)
        progress = _progress(studio, flt)
        if found is None:
            gr.Info("Nothing left to review here: every session these filters match is rated, skipped in this page,"
                    " or open with another reviewer.")
            return {**show_session(studio, page, None), page.progress: progress, page.history: history}
        history.append(found.id)
        # Opened at step 1: a session is read from its start, step by step.
        return {**show_session(studio, page, found.id, upto=1), page.progress: progress, page.history: history}

    page.next_session.click(next_to_review, [page.reviewer, *page.queue_filters(), page.history], outputs,
                            api_name="next_to_review", show_progress="hidden")

    def previous_session(identifier, history, text, status, rating, tool, eval_run):
        history = list(history or [])
        here = history.index(identifier) if identifier in history else len(history)
        if here == 0:
            raise gr.Error("There is no session before this one: Next to review opens the sessions this page goes"
                           " back to.")
        return {**show_session(studio, page, history[here - 1], upto=1),
                page.progress: _progress(studio, _filter(text, status, rating, tool, eval_run))}

    page.back.click(previous_session, [page.session_id, page.history, *page.queue_filters()],
                    [*page.opened(), page.progress], api_name=False, show_progress="hidden")

    def remember(name):
        return (name or "").strip()

    page.reviewer.blur(remember, page.reviewer, page.remembered, api_name=False, queue=False)
    page.reviewer.submit(remember, page.reviewer, page.remembered, api_name=False, queue=False)

    def fork_started():
        return gr.update(interactive=True)

    for button in (page.fork, page.run_again):  # Stop is pressable while a fork runs (see fork_ended)
        button.click(fork_started, None, page.fork_stop, api_name=False, queue=False, show_progress="hidden")


def wire_page(studio: Studio, page: ReviewPage, app: gr.Blocks, tab: gr.Tab, finished: list[Any],
              forks: list[Any]) -> None:
    """The list loads with the page and with the tab, and again after a run (``finished``) or a fork
    (``forks``) has ended; the name comes back from the browser (or is the login)."""
    outputs = [page.table, page.total, page.progress]

    def list_sessions(text, status, rating, tool, number, eval_run):
        rows, total = _table(studio, text, status, rating, tool, number, eval_run)
        return rows, total, _progress(studio, _filter(text, status, rating, tool, eval_run))

    for event in (app.load, tab.select):
        event(list_sessions, page.filters(), outputs, api_name=False, show_progress="hidden")
    for ended in finished:
        ended.then(list_sessions, page.filters(), outputs, api_name=False, show_progress="hidden")

    def fork_ended(*filters):
        return (*list_sessions(*filters), gr.update(interactive=False))

    def fork_refused():
        return gr.update(interactive=False)

    for ended in forks:
        ended.then(fork_ended, page.filters(), [*outputs, page.fork_stop], api_name=False, show_progress="hidden")
        # A refused or failed fork is not followed by .then: Stop is turned off there too.
        ended.failure(fork_refused, None, page.fork_stop, api_name=False, queue=False, show_progress="hidden")

    def name(kept, request: gr.Request):
        login = getattr(request, "username", None)
        if login:
            return gr.update(value=login, interactive=False, label="Your name (your login)")
        return kept or ""

    app.load(name, page.remembered, page.reviewer, api_name=False)


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
