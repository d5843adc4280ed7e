"""The Ask tab: images and a question in, the chain of thought-and-action streamed out.

The Run handler is the one streaming loop: it runs the agent, records every event in the store,
and turns events into component updates with :mod:`taco_app.ui.render` and
:mod:`taco_app.ui.overlays`. Stop, Approve and Submit step reach the run through its
:class:`~taco_app.ui.live.LiveRun`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import gradio as gr

from taco_app.cota.backend import BackendError
from taco_app.cota import events as ev
from taco_app.cota.actions import Action
from taco_app.runner import InputImage, run
from taco_app.cota.prompt import check_question
from taco_app.cota.registry import action_names
from taco_app.media import ImageLoadError
from taco_app.settings import current
from taco_app.tools import default_tools
from taco_app.ui import overlays, render
from taco_app.ui.controls import collapse_all
from taco_app.ui.errors import inform, refusal, warn
from taco_app.ui.live import (LiveRun, ModelLoadError, Owner, Registry, finished, follow, latest_picture, loading,
                              owner, redraws, stored)
from taco_app.ui.studio import Studio

@dataclass
class ReviewPanel:
    """Shown while a paused run waits for a person to approve, edit or stop the next action."""

    box: gr.Group
    text: gr.Markdown
    name: gr.Dropdown
    arguments: gr.Code
    approve: gr.Button
    reject: gr.Button


@dataclass
class ManualPanel:
    """Shown while a manual run waits for the person to write the next step."""

    box: gr.Group
    thought: gr.Textbox
    name: gr.Dropdown
    arguments: gr.Code
    submit: gr.Button


@dataclass
class AskPage:
    """The Ask tab's components, by name."""

    status: gr.Markdown
    files: gr.File
    preview: gr.Gallery
    question: gr.Textbox
    choice: gr.Dropdown
    pause: gr.Checkbox
    run_button: gr.Button
    stop_button: gr.Button
    chat: gr.Chatbot
    info: gr.Markdown
    review: ReviewPanel
    manual: ManualPanel
    step: gr.Dropdown
    picture: gr.Image
    caption: gr.Markdown
    seen: gr.Gallery
    # The events that fire once a run has ended (answered, stopped, failed or refused), one of them per run:
    # chain ``.then(...)`` on each.
    ended: list[Any] = field(default_factory=list)

    def run_inputs(self) -> list[Any]:
        return [self.files, self.question, self.choice, self.pause]

    def run_outputs(self) -> list[Any]:
        """What the Run handler updates, in the order its API (``/ask``) returns them."""
        return [self.chat, self.step, self.picture, self.caption, self.seen, self.info, self.review.box,
                self.review.text, self.review.name, self.review.arguments, self.manual.box]


def build(studio: Studio, registry: Registry) -> AskPage:
    """The Ask tab's components and events (call inside a ``gr.Tab``)."""
    page = _layout(studio)
    _wire_run(studio, registry, page)
    _wire_hand_offs(registry, page)
    return page


def _layout(studio: Studio) -> AskPage:
    status = gr.Markdown(studio.status_line, elem_id="model-status")  # read again at each page load
    gr.Markdown(studio.banner(), visible=bool(studio.banner()), elem_id="no-model-banner")
    # The examples first: they fill in the images, the question and the model, drawn just below them.
    files = gr.File(label="Images", file_count="multiple", file_types=["image"], elem_id="ask-images", render=False)
    question = gr.Textbox(label="Question", lines=2, placeholder="e.g. How much gas can I buy with $50?",
                          elem_id="ask-question", render=False)
    choice = gr.Dropdown(studio.choices(), value=studio.default_choice(), label="Model", elem_id="ask-model",
                         render=False)
    gr.Examples(
        [[[str(e.image)], e.question, e.label] for e in studio.examples],
        inputs=[files, question, choice], label="Examples (a recorded TACO reply per step; the tools run live)",
        example_labels=[e.label.removeprefix("Replay example: ").replace("_", " ") for e in studio.examples],
    )
    # Side by side on a wide screen; each column wraps under the other on a phone (min_width).
    with gr.Row(equal_height=False, elem_id="ask-inputs"):
        with gr.Column(scale=5, min_width=280):
            files.render()
            question.render()
        with gr.Column(scale=4, min_width=280):
            preview = gr.Gallery(label="What the model will see (image-0, image-1, …)", columns=4, height=160,
                                 elem_id="ask-preview")
            choice.render()
            pause = gr.Checkbox(label="Pause before each tool call", value=False, elem_id="ask-pause")
            with gr.Row(elem_id="ask-buttons"):
                run_button = gr.Button("Run", variant="primary", elem_id="ask-run")
                # Enabled only while a run is going (see _wire_run).
                stop_button = gr.Button("Stop", variant="secondary", size="sm", interactive=False, scale=0,
                                        min_width=80, elem_id="ask-stop")
    with gr.Row(equal_height=False, elem_id="ask-main"):
        with gr.Column(scale=5, min_width=280):
            chat = gr.Chatbot(label="Chain of thought and action", height=620, elem_id="ask-chat",
                              group_consecutive_messages=False, render=False,
                              latex_delimiters=[])  # no LaTeX: "$$" in a tool's output is text (render.py)
            collapse_all(chat)  # above the chat: every step is open once it has run
            chat.render()
            info = gr.Markdown(elem_id="ask-info")
            review, manual = _review_panel(), manual_panel()
        with gr.Column(scale=4, min_width=280):
            step = gr.Dropdown(label="Step to show", choices=[], interactive=True, elem_id="overlay-step")
            picture = gr.Image(label="What the tool saw", type="filepath", interactive=False, height=420,
                               elem_id="overlay-image")  # a file that never changes: see Scratch.picture
            caption = gr.Markdown(elem_id="overlay-caption")
            seen = gr.Gallery(label="Every image the model saw", columns=3, height=260, elem_id="ask-seen")
    _follow_tools(studio, status)
    return AskPage(status, files, preview, question, choice, pause, run_button, stop_button, chat, info, review,
                   manual, step, picture, caption, seen)


def _follow_tools(studio: Studio, status: gr.Markdown) -> None:
    """The status line again every second while the tool models load (Studio.warm_tools), then no more."""
    if not studio.warm:
        return
    timer = gr.Timer(1.0)

    def tick():
        return studio.status_line(), gr.Timer(active=not studio.tools_settled())

    timer.tick(tick, None, [status, timer], api_name=False, show_progress="hidden", concurrency_limit=None)


def _review_panel() -> ReviewPanel:
    with gr.Group(visible=False, elem_id="review-panel") as box:
        text = gr.Markdown()
        name = gr.Dropdown(action_names(), label="Action", allow_custom_value=True)
        arguments = gr.Code(label="Arguments (JSON)", language="json")
        with gr.Row():
            approve = gr.Button("Run this action", variant="primary", elem_id="review-approve")
            reject = gr.Button("Stop here", elem_id="review-stop")
    return ReviewPanel(box, text, name, arguments, approve, reject)


def manual_panel(prefix: str = "") -> ManualPanel:
    """The form a manual run waits on (``prefix``: for its element ids, when a second tab has one)."""
    with gr.Group(visible=False, elem_id=f"{prefix}manual-panel") as box:
        gr.Markdown("**Your step.** Write what the model would: a thought and one action. The tool runs live.")
        thought = gr.Textbox(label="Thought", lines=2, elem_id=f"{prefix}manual-thought")
        name = gr.Dropdown(action_names(), label="Action", value="OCR", elem_id=f"{prefix}manual-action")
        arguments = gr.Code(label="Arguments (JSON)", language="json", value='{"image": "image-0"}',
                            elem_id=f"{prefix}manual-arguments")
        submit = gr.Button("Submit step", variant="primary", elem_id=f"{prefix}manual-submit")
    return ManualPanel(box, thought, name, arguments, submit)


def _wire_run(studio: Studio, registry: Registry, page: AskPage) -> None:
    """Run (the streaming handler), Stop, and the step selector beside the chat."""
    page.files.change(show_inputs, page.files, page.preview)

    def ask(paths, text, label, paused, request: gr.Request):
        yield from run_session(studio, registry, page, owner(request), paths, text, label, paused)

    def going():  # Stop, as soon as Run is pressed
        return gr.update(interactive=True, variant="stop")

    def ended(request: gr.Request):
        """After a run (answered, failed, stopped or refused): Stop again only if another run of this
        browser session is still going; the status line again (a first run has loaded the model)."""
        live = registry.get(owner(request))
        busy = live is not None and live.running
        return gr.update(interactive=busy, variant="stop" if busy else "secondary"), studio.status_line()

    page.ended = []
    for trigger, api_name in ((page.run_button.click, "ask"), (page.question.submit, False)):
        started = trigger(going, None, page.stop_button, api_name=False, queue=False)
        ran = started.then(ask, page.run_inputs(), page.run_outputs(), api_name=api_name, concurrency_limit=None)
        # Gradio 6.31's page starts a .then after a success only: .failure covers a run that raised.
        for after in (ran.then, ran.failure):
            page.ended.append(after(ended, None, [page.stop_button, page.status], api_name=False,
                                    concurrency_limit=None))

    def stop(request: gr.Request):
        live = registry.get(owner(request))
        if live is not None:
            live.stop()

    page.stop_button.click(stop, None, None, api_name="stop", concurrency_limit=None)

    def show_step(number, request: gr.Request):
        live = registry.get(owner(request))
        if live is None or number is None:
            return None, ""
        image, text = overlays.render_step(live.events, int(number))
        return studio.picture(image), render.escape_text(text)

    page.step.change(show_step, page.step, [page.picture, page.caption], concurrency_limit=None)


def _wire_hand_offs(registry: Registry, page: AskPage) -> None:
    """The buttons a waiting run listens to: approve, edit or stop an action; submit a manual step."""
    review, manual = page.review, page.manual

    def approve_action(name, arguments, request: gr.Request):
        live = registry.get(owner(request))
        try:
            parsed = json.loads(arguments or "{}")
        except json.JSONDecodeError as err:
            raise gr.Error(f"The arguments are not valid JSON ({err}). Fix them, then run the action.")
        if not isinstance(parsed, dict):
            raise gr.Error('The arguments must be a JSON object, e.g. {"image": "image-0"}.')
        if live is None or not live.decide(Action(name, parsed)):
            gr.Warning("No action is waiting for review.")
        return gr.update(visible=False)

    review.approve.click(approve_action, [review.name, review.arguments], review.box, concurrency_limit=None)

    def reject_action(request: gr.Request):
        live = registry.get(owner(request))
        if live is not None:
            live.decide(None)
        return gr.update(visible=False)

    review.reject.click(reject_action, None, review.box, concurrency_limit=None)

    wire_manual(registry, manual)


def wire_manual(registry: Registry, manual: ManualPanel, api_name: str | bool | None = None) -> None:
    """A manual panel's Submit step: hands the step to this browser session's waiting manual run
    (``api_name``: Gradio's, None for the handler's name, False for none)."""

    def submit_step(thought, name, arguments, request: gr.Request):
        from taco_app.backends.manual import compose_step

        live = registry.get(owner(request))
        if live is None or live.manual is None or not live.manual.waiting:
            raise gr.Error("No manual session is waiting for a step: choose the manual model and press Run.")
        try:
            live.manual.submit(compose_step(thought or "", name or "", arguments or ""))
        except ValueError as err:
            raise gr.Error(str(err))
        return gr.update(visible=False)

    manual.submit.click(submit_step, [manual.thought, manual.name, manual.arguments], manual.box,
                        concurrency_limit=None, api_name=api_name)


def show_inputs(paths: list[str] | None) -> list[tuple[str, str]]:
    """The uploaded images with the ids the model will know them by; a bad file is named, not shown."""
    shown = []
    for path in paths or []:
        try:
            image = InputImage.open(path)
        except ImageLoadError as err:
            warn(err)  # it names the file: shown as text
            continue
        for note in image.notes:  # e.g. an animation: only its first frame is used
            inform(f"image-{len(shown)}: {note}")
        shown.append((path, f"image-{len(shown)}"))
    return shown


def _inputs(paths: list[str] | None, question: str | None) -> list[InputImage]:
    """The run's images, or gr.Error with what to fix (nothing has started yet)."""
    if not paths:
        raise gr.Error("Add at least one image (or pick an example above), then press Run.")
    if not (question or "").strip():
        raise gr.Error("Type a question about the image(s), then press Run.")
    try:
        check_question(question)
    except ValueError as err:
        raise refusal(err)
    images = []
    for path in paths:
        try:
            images.append(InputImage.open(path))
        except ImageLoadError as err:
            raise gr.Error(f"{err}. Remove it from the images and press Run again.")
    return images


def run_session(studio: Studio, registry: Registry, page: AskPage, key: Owner, paths: list[str] | None,
                question: str | None, label: str, paused: bool) -> Iterator[dict[Any, Any]]:
    """The Run handler: validate, then stream the session's events as component updates."""
    images = _inputs(paths, question)
    live = registry.start(key)
    live.running = True
    try:
        yield from _stream(studio, page, live, images, question.strip(), label, paused)
    finally:  # answered, failed, stopped, or the page went away
        live.running = False


def _stream(studio: Studio, page: AskPage, live: LiveRun, images: list[InputImage], question: str, label: str,
            paused: bool) -> Iterator[dict[Any, Any]]:
    try:
        backend = studio.backend(label, cancel=live.cancel)
    except BackendError as err:
        raise gr.Error(str(err))
    if backend.name == "manual":
        live.manual = backend
    if not backend.loaded:  # the local checkpoint's first use: load it, showing progress
        try:
            for line in loading(backend):
                yield {page.info: line}
        except ModelLoadError as err:
            raise gr.Error(str(err))
    started = time.perf_counter()
    first_update: float | None = None
    session = run(question, images, backend, tools=default_tools(), cancel=live.cancel,
                  review=live.review if paused else None, tool_timeout_s=current().tool_timeout,
                  sink=studio.store.images)  # where the store (and the page) finds them
    for event, view in follow(studio.store, live, session):
        if first_update is None:
            first_update = time.perf_counter() - started
        yield _updates(page, studio, live, view, event, first_update)


def _updates(page: AskPage, studio: Studio, live: LiveRun, view: render.ChatView, event: ev.Event | None,
             first_update: float | None) -> dict[Any, Any]:
    """The Run handler's update after ``event`` (None: the run has ended), by component.

    Components left out are not sent (Gradio skips them): a component update (a dropdown's choices,
    a panel's visibility) costs the server a config rebuild, so only what changed is included.
    """
    updates: dict[Any, Any] = {page.chat: view.messages()}
    if redraws(event):
        updates.update(_overlay_updates(page, studio, live))
    updates.update(_panel_updates(page, live, event))
    ended = finished(live.events)
    if ended is not None and event is None:
        updates[page.info] = (
            f"Session `{ended.session_id}` · {ended.status} · {ended.steps} step(s) · {ended.total_s:.2f} s"
            + (f" · first update after {first_update * 1000:.0f} ms" if first_update is not None else "")
            + (" · saved; open it in the Review tab." if stored(live.events)
               else f" · **not saved:** {render.escape_text(ended.message)}"))
    return updates


def _overlay_updates(page: AskPage, studio: Studio, live: LiveRun) -> dict[Any, Any]:
    """The step selector, the picture of the latest step that drew something, and the images seen."""
    choices, latest, picture, text = latest_picture(live.events)
    updates: dict[Any, Any] = {}
    if (choices, latest) != live.shown_steps:
        updates[page.step] = gr.update(choices=choices, value=latest)
        live.shown_steps = (choices, latest)
    updates[page.picture] = studio.picture(picture)
    updates[page.caption] = render.escape_text(text)
    updates[page.seen] = render.images_seen(live.events)
    return updates


def _panel_updates(page: AskPage, live: LiveRun, event: ev.Event | None) -> dict[Any, Any]:
    """Open the review panel at an action to review, the manual panel when a manual step is due; close them after."""
    updates: dict[Any, Any] = {}
    review = page.review
    if isinstance(event, ev.ActionReview):
        action = event.action
        updates[review.box] = gr.update(visible=True)
        updates[review.text] = f"**Step {event.step}: the model proposes this action.** Edit it or run it as is."
        updates[review.name] = gr.update(value=action.name)
        updates[review.arguments] = json.dumps(action.arguments, indent=1, ensure_ascii=False)
        live.panels["review"] = True
    elif live.panels.get("review"):
        updates[review.box] = gr.update(visible=False)
        live.panels["review"] = False
    wants_manual = isinstance(event, ev.StepStarted) and live.manual is not None
    if wants_manual != live.panels.get("manual", False):
        updates[page.manual.box] = gr.update(visible=wants_manual)
        live.panels["manual"] = wants_manual
    return updates

