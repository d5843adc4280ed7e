"""The CoTA step loop: a generator of typed events.

Each step: build TACO's prompt, stream the model's reply (:meth:`_Loop.generate`), parse it and let
a person review it (:meth:`_Loop.read`), run the first action (:meth:`_Loop.act`) and feed the
observation back, until the model calls ``Terminate`` or the reply limit is reached. Errors the model
caused (bad JSON, unknown action, bad arguments, a failing tool) become the turn TACO would have fed
back and the session goes on; a broken backend ends the session with an ``error`` event. The loop
checks ``cancel`` between chunks, so a Stop button ends it promptly.

Tools run through :mod:`taco_app.tools.execution`: in a worker thread, with a time limit, abandoned on
Stop, the tool models freed when the GPU is full. An oversized image a tool makes is downscaled before
it is stored. None of these ends the session.

With ``review``, a person sees every parsed action before it runs (``Terminate`` included, so a
wrong final answer can be corrected too) and may approve it, edit it or stop the session. An edited
action is what runs, and what the model reads in its history from then on; the model's own text
stays on :class:`events.ActionParsed`.

The loop reads no settings: its caller passes the toolbox, where images go and the tools' time limit.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from PIL import Image

from taco_app.cota import events as ev
from taco_app.cota.actions import Action, step_text
from taco_app.cota.backend import Backend, ImageSink
from taco_app.cota.parser import ParseFailure, parse
from taco_app.cota.prompt import (
    MAX_REPLIES,
    MODES,
    NO_ACTION_MESSAGE,
    ImagePart,
    Turn,
    assistant_turn,
    build_prompt,
    describe_error,
    direct_request,
    failed_execution_turn,
    no_action_turn,
    observation_turn,
    parse_error_turn,
    user_request,
)
from taco_app.drawing import fit_within
from taco_app.media import load_image_info
from taco_app.tools import ProducedImage, Toolbox, ToolResult
from taco_app.tools.base import image_id
from taco_app.tools.execution import DEFAULT_TOOL_TIMEOUT, error_code, execute
from taco_app.tools.imageops import MAX_SIDE

# A TACO step is a few hundred characters; 2000 tokens (TACO's cap) are under 10,000. A backend that
# streams far more (a runaway server, a hostile replay) is cut here: the rest is never read, stored or
# fed back to the model, whose next prompt would otherwise grow without bound.
MAX_REPLY_CHARS = 32_000

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


@dataclass
class History:
    """Steps a session starts with, taken before: a fork keeps its parent's first steps as they were.

    ``events`` are those steps' events, yielded again as the new session's own, so it is stored like
    any other; ``turns`` the conversation after them (everything after the user's request), exactly
    as the model read it, so the next prompt's prefix is byte-identical to the parent's;
    ``images`` the images those steps made, with their pixels, in id order after the inputs.
    ``reply``, when given, is the next step's output, written by a person instead of the backend.
    """

    parent_session_id: str
    events: list[ev.Event] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    images: list[tuple[ev.ImageInfo, Image.Image]] = field(default_factory=list)
    reply: str | None = None

    @property
    def next_step(self) -> int:
        return max((event.step for event in self.events), default=0) + 1


class Session:
    """The state of one run: its images by id and the conversation so far."""

    def __init__(self, session_id: str, question: str, sink: ImageSink):
        self.id = session_id
        self.question = question
        self.sink = sink
        self.images: dict[str, tuple[ev.ImageInfo, Image.Image]] = {}
        self.turns: list[Turn] = []

    def add_image(self, image: Image.Image, *, source: Path | None = None, **info: Any) -> ev.ImageInfo:
        image_id = f"image-{len(self.images)}"
        sha256, path = self.sink.save_file(source) if source else self.sink.save(image)
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
    tools: Toolbox,
    sink: ImageSink,
    max_replies: int = MAX_REPLIES,
    cancel: threading.Event | None = None,
    session_id: str | None = None,
    review: Review | None = None,
    tool_timeout_s: float = DEFAULT_TOOL_TIMEOUT,
    history: History | None = None,
    mode: str = "cota",
) -> Iterator[ev.Event]:
    """Run one CoTA session and yield its events; the last one is always :class:`events.Finished`.

    ``tools`` runs the actions, ``sink`` keeps the session's images (inputs and tool outputs), and a
    tool without its own limit may take ``tool_timeout_s`` seconds per call.

    ``review(step, action)``, when given, is called after each action is parsed and before it runs
    (not for parse errors or an empty actions list, which have no action to review). It may block
    while a person decides; an :class:`events.ActionReview` is yielded first, so the UI can show
    the action and wait. It returns the action to run (an :class:`Action` or its ``{"name",
    "arguments"}`` dict, edited or not) or None to stop the session (``cancelled``). It gets a copy,
    so editing it in place is fine. A changed action yields :class:`events.ActionEdited`. An edited
    action that is wrong (unknown name, bad arguments) gets TACO's failed-execution turn like a
    model's mistake; a review that raises, or returns something other than an action or None, is a
    program error and propagates. The review should return None when ``cancel`` is set while it
    waits; the loop checks ``cancel`` again as soon as it returns.

    ``history``, when given, holds the steps the session starts with (:class:`History`: a fork).

    ``mode="direct"`` is TACO's direct-answer baseline: its prompt, one reply, and that reply
    (stripped) is the answer; no tool runs.
    """
    session = Session(session_id or uuid.uuid4().hex, question, sink)
    loop = _Loop(session, backend, tools, cancel or threading.Event(), review, tool_timeout_s, mode)
    yield loop.start(images, max_replies, history)
    if mode == "direct":
        yield from loop.answer_directly()
        return
    first = 1
    if history is not None:
        yield from loop.resume(history)
        first = history.next_step
    last_step = max_replies + 1
    try:
        for step in range(first, last_step + 1):
            loop.stop_if_cancelled(step - 1, "Stopped before the model replied.")
            if history is not None and history.reply is not None and step == first:
                reply = yield from loop.written(step, history.reply)
            else:
                reply = yield from loop.generate(step)
            read = yield from loop.read(step, reply)  # the action to run, None (no action) or a repair turn
            if isinstance(read, Action) and read.is_final:
                answer = ev.json_safe(read.answer)
                yield ev.FinalAnswer(step=step, answer=answer)
                yield loop.finish("finished", step, answer=answer)
                return
            if isinstance(read, Turn):
                feedback = read  # the reply could not be parsed
            elif read is None:
                feedback = no_action_turn()
                yield ev.Observation(step=step, action=None, observation=feedback.text, output={"message": NO_ACTION_MESSAGE})
            elif step == last_step:
                break  # no observation would reach the model: do not run the tool
            else:
                feedback = yield from loop.act(step, read)
            if step == last_step:
                break
            session.turns.append(feedback)
    except _Ended as ended:
        yield from ended.events
        return
    message = f"No answer within {last_step} steps: the model did not call Terminate."
    yield ev.Error(step=last_step, code="max_steps", message=message)
    yield loop.finish("max_steps", last_step, message)


class _Ended(Exception):
    """The session ends here (stopped, or the backend failed): its last events, :class:`events.Finished` last."""

    def __init__(self, *events: ev.Event):
        super().__init__()
        self.events = events


@dataclass
class _Reply:
    text: str
    usage: dict[str, int] | None  # Usage.as_dict() when the backend reports tokens
    generation_s: float


class _Loop:
    """One session's phases; each yields its events. A phase that ends the session raises :class:`_Ended`."""

    def __init__(self, session: Session, backend: Backend, tools: Toolbox, cancel: threading.Event,
                 review: Review | None, tool_timeout_s: float, mode: str = "cota"):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        self.session, self.backend, self.tools, self.cancel = session, backend, tools, cancel
        self.review, self.tool_timeout_s, self.mode = review, tool_timeout_s, mode
        self.started, self.clock = time.time(), time.perf_counter()

    def start(self, images: Sequence[InputImage | Image.Image | str | Path], max_replies: int,
              history: History | None = None) -> ev.SessionStarted:
        """Keep the input images and ask the question."""
        inputs = [_as_input(image) for image in images]
        infos = [self.session.add_image(item.image, source=item.path, role="input") for item in inputs]
        request = direct_request if self.mode == "direct" else user_request
        self.session.turns.append(request(self.session.question, [info.image_id for info in infos]))
        backend = self.backend
        return ev.SessionStarted(
            step=0, session_id=self.session.id, question=self.session.question, images=infos, backend=backend.name,
            model=backend.model_id, family=backend.family, max_replies=max_replies, started_at=self.started,
            revision=backend.revision, quantisation=backend.quantisation,
            parent_session_id=history.parent_session_id if history else None,
            fork_step=history.next_step if history else None, mode=self.mode,
        )

    def answer_directly(self) -> Iterator[ev.Event]:
        """The direct-answer baseline's one step: the reply is the answer."""
        try:
            reply = yield from self.generate(1)
        except _Ended as ended:
            yield from ended.events
            return
        answer = reply.text.strip()
        yield ev.ActionParsed(step=1, raw=reply.text, thought="", action=None, generation_s=reply.generation_s,
                              usage=reply.usage)
        yield ev.FinalAnswer(step=1, answer=answer)
        yield self.finish("finished", 1, answer=answer)

    def resume(self, history: History) -> Iterator[ev.Event]:
        """Take the steps of ``history`` as this session's own: their images, turns and events."""
        for info, picture in history.images:
            self.session.images[info.image_id] = (info, picture)
        self.session.turns += history.turns
        yield from history.events

    def written(self, step: int, text: str) -> Iterator[ev.Event]:
        """A step a person wrote: the model's turn, as if it had streamed it."""
        prompt = build_prompt(self.session.turns, self.backend.family)
        yield ev.StepStarted(step=step, prompt_chars=len(prompt.text), image_ids=list(prompt.image_ids))
        yield ev.ThoughtDelta(step=step, text=text)
        self.session.turns.append(assistant_turn(text))
        return _Reply(text, None, 0.0)

    def finish(self, status: str, step: int, message: str = "", answer: Any = None) -> ev.Finished:
        return ev.Finished(step=step, session_id=self.session.id, status=status, answer=answer, steps=step,
                           total_s=round(time.perf_counter() - self.clock, 4), message=message)

    def stop_if_cancelled(self, step: int, message: str) -> None:
        if self.cancel.is_set():
            raise _Ended(self.finish("cancelled", step, message))

    # --- the phases of a step ------------------------------------------------------------------

    def generate(self, step: int) -> Iterator[ev.Event]:
        """Stream the model's reply to the conversation so far, and return it."""
        prompt = build_prompt(self.session.turns, self.backend.family, self.mode)
        yield ev.StepStarted(step=step, prompt_chars=len(prompt.text), image_ids=list(prompt.image_ids))
        started = time.perf_counter()
        pieces: list[str] = []
        usage: dict[str, int] | None = None
        try:
            stream = self.backend.stream(prompt, [self.session.images[i][1] for i in prompt.image_ids])
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
                    if self.cancel.is_set() or received >= MAX_REPLY_CHARS:
                        break
            finally:
                stream.close()  # stops a generation cut short (Stop, or an error)
        except Exception as err:  # a broken backend ends the session; the person sees why
            failure = err
        else:
            failure = None
        self.stop_if_cancelled(step, "Stopped while the model was replying.")  # e.g. manual mode's wait ended
        if failure is not None:
            raise _Ended(ev.Error(step=step, code="backend", message=f"The model backend failed: {failure}"),
                         self.finish("failed", step, str(failure)))
        reply = _Reply("".join(pieces), usage, round(time.perf_counter() - started, 4))
        self.session.turns.append(assistant_turn(reply.text))
        return reply

    def read(self, step: int, reply: _Reply) -> Iterator[ev.Event]:
        """Parse the reply and let a person review its action; returns the action to run, None when the
        model gave no action, or the repair turn for a reply that could not be parsed."""
        raw = reply.text
        parsed = parse(raw)
        if isinstance(parsed, ParseFailure):
            feedback = parse_error_turn(parsed.code, parsed.message)
            yield ev.ParseError(step=step, raw=raw, code=parsed.code, message=parsed.message,
                                observation=feedback.text, generation_s=reply.generation_s, usage=reply.usage)
            return feedback
        action = parsed.action
        yield ev.ActionParsed(step=step, raw=raw, thought=parsed.thought, action=action,
                              generation_s=reply.generation_s, usage=reply.usage)
        if action is None or self.review is None:
            return action
        yield ev.ActionReview(step=step, action=action)
        reviewed = self.review(step, copy.deepcopy(action))  # may block: a person is deciding
        if reviewed is None:
            raise _Ended(self.finish("cancelled", step, f"Stopped at the review of step {step}."))
        self.stop_if_cancelled(step, f"Stopped at the review of step {step}.")
        if not isinstance(reviewed, (Action, dict)):
            raise TypeError(f"review must return an action dict or None, not {type(reviewed).__name__}")
        reviewed = Action.from_dict(reviewed)  # its contents are checked when it runs
        if reviewed != action:
            text = step_text(parsed.thought, reviewed)
            self.session.turns[-1] = assistant_turn(text)  # the model reads the step that ran
            yield ev.ActionEdited(step=step, original=action, action=reviewed, text=text)
        return reviewed

    def act(self, step: int, action: Action) -> Iterator[ev.Event]:
        """Run the action's tool; yields what it did and returns the turn to feed back."""
        yield ev.ToolStarted(step=step, action=action)
        started = time.perf_counter()
        try:
            result = execute(self.tools, action, self.session.lookup, self.backend.language_model(),
                             timeout_s=self.tool_timeout_s, cancel=self.cancel)
        except Exception as err:  # a tool failure is the model's to handle, as in TACO
            feedback = failed_execution_turn(err)
            yield ev.Observation(step=step, action=action, observation=feedback.text, output=None,
                                 error=describe_error(err), error_code=error_code(err),
                                 tool_s=round(time.perf_counter() - started, 4))
            return feedback
        if result is None:
            raise _Ended(self.finish("cancelled", step, f"Stopped while {action.name} was running."))
        return (yield from self.observe(step, action, result, round(time.perf_counter() - started, 4)))

    def observe(self, step: int, action: Action, result: ToolResult, tool_s: float) -> Iterator[ev.Event]:
        """Keep the images a tool made and write its observation; returns the turn to feed back.

        A tool's image is stored, kept in memory and fed to the model, so one with a side over
        ZoomIn's bound (or over the largest input's, so crops of an input stay exact) is downscaled,
        aspect kept, and the overlays say so. The observation text stays TACO's: the model sees an
        id, not a size.
        """
        images = self.session.images.values()
        limit = max([MAX_SIDE] + [max(info.width, info.height) for info, _ in images if info.role == "input"])
        output: dict[str, Any] = {}
        produced: list[str] = []
        downscaled: dict[str, list[int]] = {}
        for key, value in result.output.items():
            if isinstance(value, ProducedImage):
                picture = fit_within(value.image, limit, reducing_gap=3.0)
                info = self.session.add_image(picture, role="tool", parent=value.parent, bbox=value.bbox, step=step,
                                              action=action.name)
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
            sha256, path = self.session.sink.save(fit_within(picture, limit, reducing_gap=3.0))
            overlays.setdefault("artifacts", {})[name] = {"sha256": sha256, "path": str(path)}
        if "regions" in overlays and "image" in action.arguments:
            overlays.setdefault("on", image_id(action.arguments["image"]))
        yield ev.Observation(
            step=step, action=action, observation=feedback.text,
            output=ev.json_safe({k: (v.image_id if isinstance(v, ImagePart) else v) for k, v in output.items()}),
            image_ids=produced, overlays=ev.json_safe(overlays), tool_s=tool_s,
        )
        return feedback


def _as_input(image: InputImage | Image.Image | str | Path) -> InputImage:
    if isinstance(image, InputImage):
        return image
    return InputImage(image) if isinstance(image, Image.Image) else InputImage.open(image)
