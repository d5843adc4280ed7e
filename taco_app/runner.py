"""The CoTA step loop: a generator of typed events.

Each step: build TACO's prompt, stream the model's reply, parse it, run the first action, and
feed the observation back, until the model calls ``Terminate`` or the reply limit is reached.
Errors the model caused (bad JSON, unknown action, bad arguments, a failing tool) become the turn
TACO would have fed back and the session goes on; a broken backend ends the session with an
``error`` event. The loop checks ``cancel`` between chunks, so a Stop button ends it promptly.

A tool runs in a worker thread with a time limit (``Tool.timeout_s``, else ``TACO_TOOL_TIMEOUT``,
else 120 s); past it, or on Stop, the session stops waiting and discards whatever the tool returns
later. A tool that runs out of GPU memory frees the tool models; an oversized image it makes is
downscaled before it is stored. None of these ends the session.

With ``review``, a person sees every parsed action before it runs (``Terminate`` included, so a
wrong final answer can be corrected too) and may approve it, edit it or stop the session. An edited
action is what runs, and what the model reads in its history from then on; the model's own text
stays on :class:`events.ActionParsed`.
"""

from __future__ import annotations

import copy
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from PIL import Image

from taco_app.cota.actions import Action, step_text
from taco_app.cota.backend import Backend
from taco_app.cota import events as ev
from taco_app.cota.parser import ParseFailure, parse
from taco_app.cota.prompt import (
    NO_ACTION_MESSAGE,
    ImagePart,
    Turn,
    assistant_turn,
    build_prompt,
    describe_error,
    failed_execution_turn,
    no_action_turn,
    observation_turn,
    parse_error_turn,
    user_request,
)
from taco_app.drawing import fit_within
from taco_app.media import load_image_info
from taco_app.store.files import ImageFiles
from taco_app.tools import ProducedImage, Tool, Toolbox, ToolResult, default_tools
from taco_app.tools.base import image_id
from taco_app.tools.imageops import MAX_SIDE

MAX_REPLIES = 10  # replies after the first, as in TACO
# A TACO step is a few hundred characters; 2000 tokens (TACO's cap) are under 10,000. A backend that
# streams far more (a runaway server, a hostile replay) is cut here: the rest is never read, stored or
# fed back to the model, whose next prompt would otherwise grow without bound.
MAX_REPLY_CHARS = 32_000
DEFAULT_TOOL_TIMEOUT = 120.0  # seconds a tool call may take; TACO_TOOL_TIMEOUT or a tool's timeout_s overrides it
STOP_POLL_S = 0.05  # while a tool runs, how often the loop looks at ``cancel``

# review(step, action) -> the action to run (the same, or edited; an Action or its JSON dict), or None to stop.
Review = Callable[[int, Action], "Action | dict[str, Any] | None"]


@dataclass
class InputImage:
    """An input image: its pixels, and the file it came from if any (stored with its bytes)."""

    image: Image.Image
    path: Path | None = None
    notes: tuple[str, ...] = ()  # what was done to the file, for the person (e.g. "first of 3 frames")

    @classmethod
    def open(cls, path: str | Path) -> "InputImage":
        image, notes = load_image_info(path)
        return cls(image, Path(path), tuple(notes))


class Session:
    """The state of one run: its images by id and the conversation so far."""

    def __init__(self, session_id: str, question: str, files: ImageFiles):
        self.id = session_id
        self.question = question
        self.files = files
        self.images: dict[str, tuple[ev.ImageInfo, Image.Image]] = {}
        self.turns: list[Turn] = []

    def add_image(self, image: Image.Image, *, source: Path | None = None, **info: Any) -> ev.ImageInfo:
        image_id = f"image-{len(self.images)}"
        sha256, path = self.files.save_file(source) if source else self.files.save(image)
        record = ev.ImageInfo(image_id=image_id, sha256=sha256, path=str(path), width=image.width, height=image.height, **info)
        self.images[image_id] = (record, image)
        return record

    def lookup(self, image_id: str) -> Image.Image:
        if image_id not in self.images:
            known = list(self.images)
            have = f"{known[0]} to {known[-1]}" if len(known) > 1 else (known[0] if known else "none")
            raise ValueError(f"{image_id} does not exist; the images in this session are {have}")
        return self.images[image_id][1]


def run(
    question: str,
    images: Sequence[InputImage | Image.Image | str | Path],
    backend: Backend,
    *,
    tools: Toolbox | None = None,
    files: ImageFiles | None = None,
    max_replies: int = MAX_REPLIES,
    cancel: threading.Event | None = None,
    session_id: str | None = None,
    review: Review | None = None,
) -> Iterator[ev.Event]:
    """Run one CoTA session and yield its events; the last one is always :class:`events.Finished`.

    ``review(step, action)``, when given, is called after each action is parsed and before it runs
    (not for parse errors or an empty actions list, which have no action to review). It may block
    while a person decides; an :class:`events.ActionReview` is yielded first, so the UI can show
    the action and wait. It returns the action to run (a ``{"name", "arguments"}`` dict, edited or
    not) or None to stop the session (``cancelled``). It gets a copy, so editing it in place is fine.
    A changed action yields :class:`events.ActionEdited`. An edited action that is wrong (unknown
    name, bad arguments) gets TACO's failed-execution turn like a model's mistake; a review that
    raises, or returns something other than a dict or None, is a program error and propagates.
    The review should return None when ``cancel`` is set while it waits; the loop checks ``cancel``
    again as soon as it returns.
    """
    from taco_app.settings import Settings

    tools = tools or default_tools()
    files = files or ImageFiles(Settings.load().images_dir)
    cancel = cancel or threading.Event()
    session = Session(session_id or uuid.uuid4().hex, question, files)
    started = time.time()
    clock = time.perf_counter()

    inputs = [img if isinstance(img, InputImage) else (InputImage(img) if isinstance(img, Image.Image) else InputImage.open(img)) for img in images]
    infos = [session.add_image(item.image, source=item.path, role="input") for item in inputs]
    yield ev.SessionStarted(
        step=0, session_id=session.id, question=question, images=infos, backend=backend.name,
        model=backend.model_id, family=backend.family, max_replies=max_replies, started_at=started,
        revision=getattr(backend, "revision", None), quantisation=getattr(backend, "quantisation", None),
    )
    session.turns.append(user_request(question, [info.image_id for info in infos]))

    def finish(status: str, answer: Any, step: int, message: str = "") -> ev.Finished:
        return ev.Finished(step=step, session_id=session.id, status=status, answer=answer, steps=step,
                           total_s=round(time.perf_counter() - clock, 4), message=message)

    last_step = max_replies + 1
    for step in range(1, last_step + 1):
        if cancel.is_set():
            yield finish("cancelled", None, step - 1, "Stopped before the model replied.")
            return
        prompt = build_prompt(session.turns, backend.family)
        yield ev.StepStarted(step=step, prompt_chars=len(prompt.text), image_ids=list(prompt.image_ids))

        # --- generate -------------------------------------------------------------------------
        t0 = time.perf_counter()
        pieces: list[str] = []
        usage: dict[str, int] | None = None
        try:
            stream = backend.stream(prompt, [session.images[i][1] for i in prompt.image_ids])
            try:
                received = 0
                for chunk in stream:
                    if isinstance(chunk, ev.Usage):
                        usage = chunk.as_dict()
                        continue
                    chunk = chunk[: MAX_REPLY_CHARS - received]
                    received += len(chunk)
                    pieces.append(chunk)
                    yield ev.ThoughtDelta(step=step, text=chunk)
                    if cancel.is_set() or received >= MAX_REPLY_CHARS:
                        break
            finally:
                getattr(stream, "close", lambda: None)()  # stops a generation cut short (Stop, or an error)
        except Exception as err:  # a broken backend ends the session; the person sees why
            if cancel.is_set():  # it broke because it was stopped (e.g. manual mode's wait ended)
                yield finish("cancelled", None, step, "Stopped while the model was replying.")
                return
            yield ev.Error(step=step, code="backend", message=f"The model backend failed: {err}")
            yield finish("failed", None, step, str(err))
            return
        if cancel.is_set():
            yield finish("cancelled", None, step, "Stopped while the model was replying.")
            return
        raw = "".join(pieces)
        generation_s = round(time.perf_counter() - t0, 4)
        session.turns.append(assistant_turn(raw))

        # --- parse ----------------------------------------------------------------------------
        parsed = parse(raw)
        if isinstance(parsed, ParseFailure):
            feedback = parse_error_turn(parsed.code, parsed.message)
            yield ev.ParseError(step=step, raw=raw, code=parsed.code, message=parsed.message,
                                observation=feedback.text, generation_s=generation_s, usage=usage)
        else:
            yield ev.ActionParsed(step=step, raw=raw, thought=parsed.thought, action=parsed.action, generation_s=generation_s, usage=usage)
            action = parsed.action
            if action is not None and review is not None:
                yield ev.ActionReview(step=step, action=action)
                reviewed = review(step, copy.deepcopy(action))  # may block: a person is deciding
                if reviewed is None or cancel.is_set():
                    yield finish("cancelled", None, step, f"Stopped at the review of step {step}.")
                    return
                reviewed = _as_action(reviewed)
                if reviewed != action:
                    text = step_text(parsed.thought, reviewed)
                    session.turns[-1] = assistant_turn(text)  # the model reads the step that ran
                    yield ev.ActionEdited(step=step, original=action, action=reviewed, text=text)
                    action = reviewed
            if action is None:
                feedback = no_action_turn()
                yield ev.Observation(step=step, action=None, observation=feedback.text,
                                     output={"message": NO_ACTION_MESSAGE})
            elif action.is_final:
                yield ev.FinalAnswer(step=step, answer=ev.json_safe(action.answer))
                yield finish("finished", ev.json_safe(action.answer), step)
                return
            elif step == last_step:
                break  # no observation would reach the model: do not run the tool
            else:
                feedback = yield from _execute(session, tools, step, action, getattr(backend, "generate_text", None), cancel)
                if feedback is None:
                    yield finish("cancelled", None, step, f"Stopped while {action.name} was running.")
                    return
        if step == last_step:
            break
        session.turns.append(feedback)

    message = f"No answer within {last_step} steps: the model did not call Terminate."
    yield ev.Error(step=last_step, code="max_steps", message=message)
    yield finish("max_steps", None, last_step, message)


def _as_action(value: Any) -> Action:
    """A reviewed action as an :class:`Action`; its contents are checked when it runs."""
    if not isinstance(value, (Action, dict)):
        raise TypeError(f"review must return an action dict or None, not {type(value).__name__}")
    return Action.from_dict(value)


def tool_timeout(tool: Tool) -> float:
    """Seconds one call of ``tool`` may take: its own ``timeout_s``, else ``TACO_TOOL_TIMEOUT``, else 120."""
    from taco_app.settings import seconds

    own = getattr(tool, "timeout_s", None)
    if own is not None:
        return float(own)
    return seconds("TACO_TOOL_TIMEOUT", DEFAULT_TOOL_TIMEOUT)


_idle: list[queue.SimpleQueue] = []  # tool workers waiting for a call (reused: a new thread costs ~10x more)


def _worker(jobs: queue.SimpleQueue) -> None:
    while True:
        jobs.get()()
        _idle.append(jobs)  # a call abandoned by the loop rejoins only once it has ended on its own


def _in_worker(job: Callable[[], None]) -> None:
    try:
        jobs = _idle.pop()
    except IndexError:
        jobs = queue.SimpleQueue()
        threading.Thread(target=_worker, args=(jobs,), name="taco-tool", daemon=True).start()
    jobs.put(job)


def _call_tool(tool: Tool, arguments: dict[str, Any], session: Session, language_model: Any,
               cancel: threading.Event) -> ToolResult | None:
    """``tool(arguments)`` in a worker thread, waited on for at most :func:`tool_timeout` seconds.

    Returns the result, raises what the tool raised, raises ``TimeoutError`` past the limit, or
    returns None when ``cancel`` is set while it runs. Python cannot stop a thread: a tool that never
    returns keeps its worker thread (a daemon, so it does not hold up exit), and whatever it holds
    (a model lock, GPU memory), until it ends on its own. The session just stops waiting: the late
    result is dropped, and the abandoned call can no longer read the session's images or call its
    language model.
    """
    timeout = tool_timeout(tool)
    done, abandoned = threading.Event(), threading.Event()
    box: list[Any] = []

    def lookup(image: str) -> Image.Image:
        if abandoned.is_set():
            raise TimeoutError(f"{tool.name} was abandoned")
        return session.lookup(image)

    def ask(text: str) -> str:
        if abandoned.is_set():
            raise TimeoutError(f"{tool.name} was abandoned")
        return language_model(text)

    def work() -> None:
        try:
            box.append(tool(arguments, lookup, language_model=ask if language_model is not None else None))
        except BaseException as err:  # handed to the loop's thread, which decides
            box.append(err)
        finally:
            done.set()

    _in_worker(work)
    deadline = time.perf_counter() + timeout
    while not done.wait(min(STOP_POLL_S, max(0.0, deadline - time.perf_counter()))):
        if cancel.is_set():
            abandoned.set()
            return None
        if time.perf_counter() >= deadline:
            abandoned.set()
            raise TimeoutError(f"{tool.name} did not finish within {timeout:g} s")
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _out_of_memory(error: BaseException) -> bool:
    """torch's ``OutOfMemoryError`` (CUDA or otherwise), known by name so this module needs no torch."""
    return any(cls.__name__ == "OutOfMemoryError" for cls in type(error).__mro__)


def _execute(session: Session, tools: Toolbox, step: int, action: Action, language_model: Any,
             cancel: threading.Event | None = None) -> Iterator[ev.Event]:
    """Run one action; yields its events and returns the turn to feed back, or None if ``cancel`` stopped it."""
    yield ev.ToolStarted(step=step, action=action)
    t0 = time.perf_counter()
    try:
        action.check()  # the parser makes only well-formed actions; a person's edit (review) may not be one
        tool = tools.get(action.name)
        result = _call_tool(tool, action.arguments, session, language_model, cancel or threading.Event())
        if result is None:
            return None
    except Exception as err:  # a tool failure is the model's to handle, as in TACO
        if _out_of_memory(err):
            from taco_app.weights import MODELS

            MODELS.clear()  # the tool models filled the GPU; the next call loads only what it needs
            err = RuntimeError(f"{action.name} ran out of GPU memory; the app freed its tool models, try again")
        feedback = failed_execution_turn(err)
        yield ev.Observation(step=step, action=action, observation=feedback.text, output=None,
                             error=describe_error(err), tool_s=round(time.perf_counter() - t0, 4))
        return feedback
    tool_s = round(time.perf_counter() - t0, 4)

    # A tool's image is stored, kept in memory and fed to the model, so one with a side over ZoomIn's
    # bound (or over the largest input's, so crops of an input stay exact) is downscaled, aspect kept,
    # and the overlays say so. The observation text stays TACO's: the model sees an id, not a size.
    limit = max([MAX_SIDE] + [max(info.width, info.height) for info, _ in session.images.values() if info.role == "input"])
    output: dict[str, Any] = {}
    produced: list[str] = []
    downscaled: dict[str, list[int]] = {}
    for key, value in result.output.items():
        if isinstance(value, ProducedImage):
            picture = fit_within(value.image, limit, reducing_gap=3.0)
            info = session.add_image(picture, role="tool", parent=value.parent, bbox=value.bbox, step=step, action=action.name)
            if picture is not value.image:
                downscaled[info.image_id] = [value.image.width, value.image.height]
            yield ev.ImageProduced(step=step, image=info)
            produced.append(info.image_id)
            value = ImagePart(info.image_id)
        output[key] = value
    feedback = observation_turn(output)
    overlays = dict(result.overlays)
    if downscaled:
        overlays["downscaled_from"] = downscaled
    for name, picture in result.artifacts.items():  # for the UI only; the model never sees these
        sha256, path = session.files.save(fit_within(picture, limit, reducing_gap=3.0))
        overlays.setdefault("artifacts", {})[name] = {"sha256": sha256, "path": str(path)}
    if "regions" in overlays and "image" in action.arguments:
        overlays.setdefault("on", image_id(action.arguments["image"]))
    yield ev.Observation(
        step=step, action=action, observation=feedback.text,
        output=ev.json_safe({k: (v.image_id if isinstance(v, ImagePart) else v) for k, v in output.items()}),
        image_ids=produced, overlays=ev.json_safe(overlays), tool_s=tool_s,
    )
    return feedback
