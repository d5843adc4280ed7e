"""Forking from the Review tab: edit the shown step, then run the session again from it, live.

"Fork from step k" keeps the open session's steps 1..k-1 exactly as they were, runs step k as the
step editor now holds it (with the real tools), and lets the Ask tab's model write the steps after
it; "Run again" is a fork at step 1 where the model writes every step. The fork is checked by
:func:`taco_app.fork.plan_fork` before anything is stored (a bad edit, a step past the end, images
gone from disk: one sentence, nothing stored), then streamed into the Review tab's chat by the same
machinery as the Ask tab's runs (:func:`taco_app.ui.live.follow`), recorded, and opened.

Which model writes the rest: the Ask tab's choice. A replayed example continues its recording from
the fork point when it is the example of this very question; otherwise, no model can run for this
question here, and the person writes the steps after the fork (manual mode, in the panel below the
step editor).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import gradio as gr

from taco_app.cota import events as ev
from taco_app.cota.backend import BackendError
from taco_app.fork import ForkError, ForkPlan, fork, plan_fork
from taco_app.settings import current
from taco_app.store import queries
from taco_app.tools import default_tools
from taco_app.ui import render
from taco_app.ui.ask import wire_manual
from taco_app.ui.live import (ModelLoadError, Owner, Registry, finished, follow, latest_picture, loading, owner,
                              redraws, stored)
from taco_app.ui.review import ReviewPage, show_session, step_json
from taco_app.ui.studio import LOCAL, MANUAL, OPENAI, Studio


def wire(studio: Studio, registry: Registry, page: ReviewPage, model: gr.Dropdown) -> list[Any]:
    """Fork, Run again, Stop and the manual panel of the Review tab; ``model``: the Ask tab's choice.
    Returns the Fork and Run again events, to chain what follows a fork's end on."""
    outputs = [*page.opened(), page.fork_info, page.manual.box]

    def fork_session(identifier, upto, text, label, request: gr.Request):
        yield from run_fork(studio, registry, page, owner(request), identifier, upto, text, label)

    def run_again(identifier, label, request: gr.Request):
        yield from run_fork(studio, registry, page, owner(request), identifier, 1, None, label)

    # No progress overlays: the chat streams, and the line under the buttons says what runs.
    forks = [page.fork.click(fork_session, [page.session_id, page.slider, page.step_text, model], outputs,
                             api_name="fork_session", concurrency_limit=None, show_progress="hidden"),
             page.run_again.click(run_again, [page.session_id, model], outputs, api_name="run_again",
                                  concurrency_limit=None, show_progress="hidden")]

    def stop(request: gr.Request):
        live = registry.get(owner(request))
        if live is not None:
            live.stop()

    page.fork_stop.click(stop, None, None, api_name=False, concurrency_limit=None)
    wire_manual(registry, page.manual, api_name=False)
    return forks


def edited_step(text: str | None, stored_text: str, step: int) -> tuple[str | None, Any]:
    """``(thought, action)`` of the step editor's text, or ``(None, None)`` when it is the stored step
    unchanged (or empty): then the model writes step ``step`` again. gr.Error says what is wrong."""
    text = (text or "").strip()
    if not text or text == stored_text.strip():
        return None, None
    try:
        step_obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise gr.Error(f"Step {step} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}):"
                       " fix it, then fork.")
    if not isinstance(step_obj, dict) or not isinstance(step_obj.get("actions"), list):
        raise gr.Error(f'Step {step} must be a CoTA step: {{"thought": "…", "actions": [{{"name": "…", '
                       '"arguments": {…}}]}.')
    if len(step_obj["actions"]) != 1:
        raise gr.Error(f"Step {step} must have exactly one action to fork with; it has {len(step_obj['actions'])}.")
    thought = step_obj.get("thought")
    if thought is not None and not isinstance(thought, str):
        raise gr.Error(f"Step {step}'s thought must be text.")
    return thought, step_obj["actions"][0]


def fork_backend(studio: Studio, label: str | None, plan: ForkPlan, edited: bool) -> tuple[str, int, str]:
    """``(model choice, replies the replay skips, words for the page)``: who writes the fork's next steps."""
    first = plan.step + 1 if edited else plan.step  # the first step the backend writes
    if label in (LOCAL, OPENAI, MANUAL):
        return label, 0, "" if label != MANUAL else f"Manual mode: write step {first} and the steps after it below."
    example = studio.example(label or "")
    if example is not None and example.question == plan.question:
        return label, first - 1, f"{render.escape_text(label)} continues its recorded replies from step {first}."
    return MANUAL, 0, (f"No model can run here for this question: write step {first} and the steps after it"
                       " yourself, below (manual mode; the tools run live).")


def run_fork(studio: Studio, registry: Registry, page: ReviewPage, key: Owner, identifier: str | None, upto: Any,
             text: str | None, label: str | None) -> Iterator[dict[Any, Any]]:
    """The Fork handler: check the fork, then stream the new session into the Review tab and open it."""
    if not identifier:
        raise gr.Error("Open a session first (click a row of the table).")
    step = int(upto or 1)
    thought, action = (None, None)
    if text is not None:
        trace = queries.get_trace(studio.store, identifier)
        if trace is None:
            raise gr.Error(f"There is no session {identifier!r} in the store.")
        thought, action = edited_step(text, step_json(trace, step, None), step)
    try:
        plan = plan_fork(studio.store, identifier, step, thought=thought, action=action)
    except ForkError as err:
        raise gr.Error(f"Cannot fork: {err}.")
    edited = thought is not None or action is not None
    choice, replayed, words = fork_backend(studio, label, plan, edited)
    live = registry.start(key)
    try:
        backend = studio.backend(choice, cancel=live.cancel, replayed=replayed)
    except BackendError as err:
        raise gr.Error(str(err))
    if backend.name == "manual":
        live.manual = backend
    what = (f"Forking `{identifier}` at step {step}" + (", edited" if edited else "") if step > 1 or edited
            else f"Running `{identifier}` again")
    if not backend.loaded:
        try:
            for line in loading(backend):
                yield {page.fork_info: f"{what}. {line}"}
        except ModelLoadError as err:
            raise gr.Error(str(err))
    session = fork(plan, backend, tools=default_tools(), sink=studio.store.images, cancel=live.cancel,
                   tool_timeout_s=current().tool_timeout)
    manual_shown = False
    for event, view in follow(studio.store, live, session):
        updates: dict[Any, Any] = {page.chat: view.messages()}
        if isinstance(event, ev.SessionStarted):
            updates[page.fork_info] = f"{what} → `{event.session_id}` … {words}"
        if redraws(event):
            _choices, _latest, picture, caption = latest_picture(live.events)
            updates[page.picture], updates[page.caption] = studio.picture(picture), render.escape_text(caption)
        waiting = isinstance(event, ev.StepStarted) and live.manual is not None
        if waiting != manual_shown:
            updates[page.manual.box] = gr.update(visible=waiting)
            manual_shown = waiting
        if event is None:
            updates.update(_opened(studio, page, live.events, what))
        yield updates


def _opened(studio: Studio, page: ReviewPage, events: list[Any], what: str) -> dict[Any, Any]:
    """The fork has ended: open it in the Review tab (when it was stored), and say how it went."""
    ended = finished(events)
    updates: dict[Any, Any] = {page.manual.box: gr.update(visible=False)}
    if ended is None:
        return updates
    summary = f"{what} → `{ended.session_id}` · {ended.status} · {ended.steps} step(s) · {ended.total_s:.2f} s"
    if not stored(events):
        updates[page.fork_info] = f"{summary} · **not saved:** {render.escape_text(ended.message)}"
        return updates
    updates.update(show_session(studio, page, ended.session_id))
    updates[page.fork_info] = f"{summary} · saved, and open above."
    return updates
