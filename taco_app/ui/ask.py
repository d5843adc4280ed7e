"""The Ask tab: images and a question in, the chain of thought-and-action streamed out.

The Run handler is the one streaming loop: it runs the agent, records every event in the store,
and turns events into component updates with :mod:`taco_app.ui.render` and
:mod:`taco_app.ui.overlays`. Stop, Approve and Submit step reach the run through its
:class:`~taco_app.ui.live.LiveRun`.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator

import gradio as gr

from taco_app.cota.backend import BackendError
from taco_app.cota import events as ev
from taco_app.cota.actions import Action
from taco_app.runner import InputImage, run
from taco_app.cota.prompt import check_question
from taco_app.cota.registry import action_names
from taco_app.media import ImageLoadError
from taco_app.store.files import ImageFiles
from taco_app.ui import overlays, render
from taco_app.ui.errors import inform, warn
from taco_app.ui.live import Owner, Registry, owner
from taco_app.ui.studio import MANUAL, Studio

STREAM_INTERVAL_S = 0.05  # at most ~20 updates a second while text streams; every other event at once


def build(studio: Studio, registry: Registry) -> None:
    """The Ask tab's components and events (call inside a ``gr.Tab``)."""
    status = gr.Markdown(studio.status_line(), elem_id="model-status")
    gr.Markdown(studio.banner(), visible=bool(studio.banner()), elem_id="no-model-banner")
    with gr.Row():
        with gr.Column(scale=5):
            files = gr.File(label="Images", file_count="multiple", file_types=["image"], elem_id="ask-images")
            preview = gr.Gallery(label="What the model will see (image-0, image-1, …)", columns=4, height=160,
                                 elem_id="ask-preview")
            question = gr.Textbox(label="Question", lines=2, placeholder="e.g. How much gas can I buy with $50?",
                                  elem_id="ask-question")
            with gr.Row():
                choice = gr.Dropdown(studio.choices(), value=studio.default_choice(), label="Model", scale=3,
                                     elem_id="ask-model")
                pause = gr.Checkbox(label="Pause before each tool call", value=False, scale=2, elem_id="ask-pause")
            with gr.Row():
                run_button = gr.Button("Run", variant="primary", elem_id="ask-run")
                stop_button = gr.Button("Stop", variant="stop", elem_id="ask-stop")
            chat = gr.Chatbot(label="Chain of thought and action", height=620, elem_id="ask-chat",
                              group_consecutive_messages=False,
                              latex_delimiters=[])  # no LaTeX: "$$" in a tool's output is text (render.py)
            info = gr.Markdown(elem_id="ask-info")
            with gr.Group(visible=False, elem_id="review-panel") as review_box:
                review_text = gr.Markdown()
                review_name = gr.Dropdown(action_names(), label="Action", allow_custom_value=True)
                review_args = gr.Code(label="Arguments (JSON)", language="json")
                with gr.Row():
                    approve = gr.Button("Run this action", variant="primary", elem_id="review-approve")
                    reject = gr.Button("Stop here", elem_id="review-stop")
            with gr.Group(visible=False, elem_id="manual-panel") as manual_box:
                gr.Markdown("**Your step.** Write what the model would: a thought and one action. The tool runs live.")
                manual_thought = gr.Textbox(label="Thought", lines=2)
                manual_name = gr.Dropdown(action_names(), label="Action", value="OCR")
                manual_args = gr.Code(label="Arguments (JSON)", language="json", value='{"image": "image-0"}')
                manual_submit = gr.Button("Submit step", variant="primary", elem_id="manual-submit")
        with gr.Column(scale=4):
            step = gr.Dropdown(label="Step to show", choices=[], interactive=True, elem_id="overlay-step")
            picture = gr.Image(label="What the tool saw", type="filepath", interactive=False, height=420,
                               elem_id="overlay-image")  # a file that never changes: see Scratch.picture
            caption = gr.Markdown(elem_id="overlay-caption")
            seen = gr.Gallery(label="Every image the model saw", columns=3, height=260, elem_id="ask-seen")
    gr.Examples(
        [[[str(e.image)], e.question, e.label] for e in studio.examples],
        inputs=[files, question, choice], label="Examples (a recorded TACO reply per step; the tools run live)",
        example_labels=[e.label.removeprefix("Replay example: ").replace("_", " ") for e in studio.examples],
    )

    files.change(show_inputs, files, preview)
    outputs = [chat, step, picture, caption, seen, info, review_box, review_text, review_name, review_args, manual_box]

    def ask(paths, text, label, paused, request: gr.Request):
        yield from run_session(studio, registry, owner(request), paths, text, label, paused)

    # After a run, the status line again: a first run has loaded the model (device, memory).
    run_button.click(ask, [files, question, choice, pause], outputs, api_name="ask", concurrency_limit=None
                     ).then(studio.status_line, None, status, api_name=False)
    question.submit(ask, [files, question, choice, pause], outputs, api_name=False, concurrency_limit=None
                    ).then(studio.status_line, None, status, api_name=False)

    def stop(request: gr.Request):
        live = registry.get(owner(request))
        if live is not None:
            live.stop()

    stop_button.click(stop, None, None, api_name="stop", concurrency_limit=None)

    def show_step(number, request: gr.Request):
        live = registry.get(owner(request))
        if live is None or number is None:
            return None, ""
        image, text = overlays.render_step(live.events, int(number))
        return studio.picture(image), render.escape_text(text)

    step.change(show_step, step, [picture, caption], concurrency_limit=None)

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

    approve.click(approve_action, [review_name, review_args], review_box, concurrency_limit=None)

    def reject_action(request: gr.Request):
        live = registry.get(owner(request))
        if live is not None:
            live.decide(None)
        return gr.update(visible=False)

    reject.click(reject_action, None, review_box, concurrency_limit=None)

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

    manual_submit.click(submit_step, [manual_thought, manual_name, manual_args], manual_box, concurrency_limit=None)


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
        raise gr.Error("Add at least one image (or pick an example below), then press Run.")
    if not (question or "").strip():
        raise gr.Error("Type a question about the image(s), then press Run.")
    try:
        check_question(question)
    except ValueError as err:
        raise gr.Error(f"{str(err)[0].upper()}{str(err)[1:]}.")
    images = []
    for path in paths:
        try:
            images.append(InputImage.open(path))
        except ImageLoadError as err:
            raise gr.Error(f"{err}. Remove it from the images and press Run again.")
    return images


def run_session(studio: Studio, registry: Registry, key: Owner, paths: list[str] | None, question: str | None,
                label: str, paused: bool) -> Iterator[tuple[Any, ...]]:
    """The Run handler: validate, then stream the session's events as component updates."""
    images = _inputs(paths, question)
    live = registry.start(key)
    try:
        backend = studio.backend(label, cancel=live.cancel)
    except BackendError as err:
        raise gr.Error(str(err))
    if backend.name == "manual":
        live.manual = backend
    if getattr(backend, "loaded", True) is False:  # the local checkpoint's first use: load it, showing progress
        yield from _load(backend)
    view = render.ChatView()
    started = time.perf_counter()
    first_update: float | None = None
    last_yield = 0.0
    session = run(question.strip(), images, backend, cancel=live.cancel, review=live.review if paused else None,
                  files=ImageFiles(studio.store.images_root))  # where the store (and the page) finds them
    for event in studio.store.record(session):
        live.events.append(event)
        view.add(event)
        streaming = isinstance(event, ev.ThoughtDelta)
        now = time.perf_counter()
        if streaming and now - last_yield < STREAM_INTERVAL_S:
            continue
        last_yield = now
        if first_update is None:
            first_update = now - started
        yield _updates(studio, live, view, event, first_update)
    yield _updates(studio, live, view, None, first_update)


def _load(backend: Any) -> Iterator[tuple[Any, ...]]:
    """Load the checkpoint in a thread, yielding its progress as the run's info line."""
    errors: list[BaseException] = []

    def load() -> None:
        try:
            backend.load()
        except BaseException as err:  # reported below, in the page
            errors.append(err)

    loader = threading.Thread(target=load, name="taco-model-load", daemon=True)
    loader.start()
    skip = gr.skip()
    while loader.is_alive():
        status = backend.status
        bar = "█" * int(status.progress * 20) + "░" * (20 - int(status.progress * 20))
        yield (skip,) * 5 + (f"Loading the model: `{bar}` {status.progress:.0%} · {render.escape_text(status.stage)}",) + (skip,) * 5
        loader.join(timeout=0.25)
    if errors:
        raise gr.Error(f"The model could not be loaded: {errors[0]}")


def _updates(studio: Studio, live: Any, view: render.ChatView, event: ev.Event | None, first_update: float | None) -> tuple[Any, ...]:
    """One tuple for the Run handler's outputs. Components that did not change are skipped: a
    component update (a dropdown's choices, a panel's visibility) costs the server a config rebuild."""
    skip = gr.skip()
    chat = view.messages()
    step, picture, caption, seen = skip, skip, skip, skip
    if event is None or isinstance(event, (ev.Observation, ev.ParseError, ev.SessionStarted, ev.Finished)):
        choices = render.step_choices(live.events)
        latest, picture, text = None, None, ""
        for _label, number in reversed(choices):  # the latest step with something to draw (not Terminate)
            image, words = overlays.render_step(live.events, number)
            if latest is None or image is not None:
                latest, picture, text = number, image, words
            if image is not None:
                break
        if (choices, latest) != live.shown_steps:
            step = gr.update(choices=choices, value=latest)
            live.shown_steps = (choices, latest)
        picture = studio.picture(picture)
        caption = render.escape_text(text)
        seen = render.images_seen(live.events)
    review = (skip, skip, skip, skip)
    if isinstance(event, ev.ActionReview):
        action = event.action
        review = (gr.update(visible=True), f"**Step {event.step}: the model proposes this action.** Edit it or run it as is.",
                  gr.update(value=action.name), json.dumps(action.arguments, indent=1, ensure_ascii=False))
        live.panels["review"] = True
    elif live.panels.get("review"):
        review = (gr.update(visible=False), skip, skip, skip)
        live.panels["review"] = False
    manual = skip
    wants_manual = isinstance(event, ev.StepStarted) and live.manual is not None
    if wants_manual != live.panels.get("manual", False):
        manual = gr.update(visible=wants_manual)
        live.panels["manual"] = wants_manual
    finished = next((e for e in reversed(live.events) if isinstance(e, ev.Finished)), None)
    info = skip
    if finished is not None and event is None:
        info = (f"Session `{finished.session_id}` · {finished.status} · {finished.steps} step(s) · {finished.total_s:.2f} s"
                + (f" · first update after {first_update * 1000:.0f} ms" if first_update is not None else "")
                + (" · saved; open it in the Review tab." if _stored(live.events)
                   else f" · **not saved:** {render.escape_text(finished.message)}"))
    return (chat, step, picture, caption, seen, info, *review, manual)


def _stored(events: list[ev.Event]) -> bool:
    """False when the store could not keep the session (the database or the disk failed)."""
    return not any(isinstance(e, ev.Error) and e.code == "store" for e in events)
