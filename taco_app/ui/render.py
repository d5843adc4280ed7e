"""Events → Gradio "messages": the chat view of a CoTA session, live or read back from the store.

Pure Python, no gradio import: a message is a plain dict ``{"role", "content", "metadata"}`` in
the format of Gradio 6's Chatbot, so this is tested with hand-built events and no server. A stored
trace is turned back into the same events (:func:`taco_app.store.codec.trace_events`), so the Review
tab shows old sessions through the very code that shows live ones.

Everything that comes from the model, a tool or a person is shown as text: markdown and HTML in it
are escaped, and raw outputs sit in fenced code blocks whose fence is longer than any run of
backticks inside, so nothing can close the block early.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taco_app.cota import events as ev
from taco_app.cota.actions import Action
from taco_app.cota.parser import partial_thought
from taco_app.ui.overlays import resolve_path

OBSERVATION_LIMIT = 4000  # characters of an observation shown; the rest is noted, not dropped silently
_MARKUP = re.compile(r"([\\`*_\[\]#|~$@])")  # `$`: LaTeX; `@`: an e-mail address becomes a mailto link
# Where the Chatbot's markdown (marked, GFM) turns bare text into a link: a scheme's "://" and "www.".
_AUTOLINK = re.compile(r":(?=//)|(?<=[wW]{3})\.")
_BACKTICKS = re.compile(r"`+")
_HEADLINES = {
    "failed": "**The session failed.**",
    "cancelled": "**Stopped.**",
    "max_steps": "**No answer.**",
    "interrupted": "**Interrupted.**",
}


def escape_text(text: Any) -> str:
    """Text made safe for markdown: shown as typed, never as HTML, a link, an image, math or emphasis.

    Markup characters get a backslash (markdown shows ``\\*`` as ``*``). GFM also links bare
    ``http://…``, ``www.…`` and e-mail addresses, so the ``:`` of ``://``, the ``.`` of ``www.`` and
    ``@`` are escaped too, and ``$`` so that ``$$…$$`` is never typeset as LaTeX.
    """
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _AUTOLINK.sub(lambda m: "\\" + m.group(), _MARKUP.sub(r"\\\1", text))


def code_block(text: str, lang: str = "text") -> str:
    """A fenced block that shows ``text`` verbatim, whatever backticks it holds."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _truncated(text: str, limit: int = OBSERVATION_LIMIT) -> tuple[str, str]:
    if len(text) <= limit:
        return text, ""
    return text[:limit], f"*(the first {limit:,} of {len(text):,} characters)*"


def answer_text(answer: Any) -> str:
    """A final answer as plain text: a string as it is, anything else as JSON."""
    return answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)


_SURROGATE = re.compile("[\ud800-\udfff]")


def displayable(text: str) -> str:
    """``text`` encodable as UTF-8 for the page: a lone surrogate (a model can write ``"\\ud800"``)
    is shown as its escape, ``\\ud800``, instead of failing the whole update."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _message(role: str, content: str, **metadata: Any) -> dict[str, Any]:
    metadata = {k: displayable(v) if isinstance(v, str) else v for k, v in metadata.items()}
    return {"role": role, "content": displayable(content), "metadata": metadata}


# --- one step -----------------------------------------------------------------------------------


@dataclass
class _Step:
    """What the events said about one step so far, and its rendered content (None: re-render)."""

    number: int
    pieces: list[str] = field(default_factory=list)  # raw output chunks while streaming
    parsed: ev.ActionParsed | None = None
    parse_error: ev.ParseError | None = None
    reviewing: bool = False  # waiting for a person to approve, edit or stop the action
    original: Action | None = None  # the model's action, when a person edited it
    running: Action | None = None  # the action a tool is running for
    observation: ev.Observation | None = None
    produced: list[ev.ImageInfo] = field(default_factory=list)
    answered: bool = False
    done: bool = False
    not_run: bool = False  # the session ended before its action ran
    content: str | None = None
    direct: bool = False  # the one reply of a direct-answer session (no thought, no action: it is the answer)

    def label(self) -> str:
        """Plain text: what the step did, for titles and selectors."""
        if self.parse_error is not None:
            return "parse error"
        if self.parsed is not None and self.direct:
            return "direct answer"
        if self.parsed is not None:
            action = self.action()
            return str(action.name) if action else "no action"
        return "thinking…"

    def action(self) -> Action | None:
        """The action that runs: a person's edit, if any, else the model's."""
        if self.original is not None and self.running is not None:
            return self.running
        return self.parsed.action if self.parsed is not None else None

    def generation_s(self) -> float | None:
        source = self.parse_error or self.parsed
        return source.generation_s if source is not None else None

    def tool_s(self) -> float:
        return self.observation.tool_s if self.observation is not None else 0.0

    def render(self) -> str:
        if self.content is None:
            self.content = "\n\n".join(part for part in self._parts() if part)
        return self.content

    def _parts(self) -> list[str]:
        if self.parse_error is not None:
            error = self.parse_error
            return [
                f"**Could not parse the model's reply:** {escape_text(error.message)}",
                "Raw output:\n" + code_block(error.raw),
                "Sent back to the model:\n" + code_block(error.observation),
                self._timings(),
            ]
        if self.parsed is None:
            return [self._streaming()]
        if self.direct:
            return ["**Direct answer** (TACO's direct-answer baseline: one reply, no steps or tools):\n"
                    + code_block(self.parsed.raw), self._timings()]
        parts = [escape_text(self.parsed.thought) if self.parsed.thought else "*(no thought)*"]
        action = self.action()
        if action is None:
            parts.append("**No action:** the model gave an empty actions list.")
        else:
            arguments = json.dumps(ev.json_safe(action.arguments), ensure_ascii=False)
            parts.append(f"**Action:** {escape_text(action.name)}\n" + code_block(arguments, "json"))
        if self.original is not None:
            proposed = json.dumps(ev.json_safe(self.original), ensure_ascii=False)
            parts.append("*Edited at review; the model proposed:*\n" + code_block(proposed, "json"))
        obs = self.observation
        if self.reviewing and obs is None and self.running is None and not self.done:
            parts.append("*Waiting for review: approve, edit or stop this action.*")
        if obs is None and self.running is not None and not self.done:
            parts.append(f"*Running {escape_text(self.running.name)}…*")
        if obs is None and self.not_run:
            parts.append("*Not run: the session ended before this action could be carried out.*")
        if obs is not None:
            if obs.error:
                parts.append(f"**The tool failed:** {escape_text(obs.error)}")
            shown, note = _truncated(obs.observation)
            block = code_block(shown) + (f"\n{note}" if note else "")
            parts.append("**Observation** (fed back to the model):\n" + block)
        if self.produced:
            parts.append("*New image: " + ", ".join(escape_text(i.image_id) for i in self.produced) + "*")
        parts.append(self._timings())
        return parts

    def _streaming(self) -> str:
        raw = "".join(self.pieces)
        thought = partial_thought(raw)
        if thought is not None:
            return escape_text(thought) if thought else "*Thinking…*"
        if raw.lstrip().startswith(("{", "`")):  # JSON on its way, before the thought's value
            return "*Thinking…*"
        return escape_text(raw) if raw else "*Thinking…*"

    def _timings(self) -> str:
        generation = self.generation_s()
        if generation is None:
            return ""
        items = [f"generation {generation:.2f} s"]
        if self.observation is not None and self.observation.action is not None:
            items.append(f"tool {self.tool_s():.2f} s")
        source = self.parse_error or self.parsed
        usage = source.usage or {}
        for key, name in (("prompt_tokens", "prompt"), ("output_tokens", "output")):
            if isinstance(usage.get(key), int):
                items.append(f"{usage[key]:,} {name} tokens")
        return "*" + " · ".join(items) + "*"

    def message(self) -> dict[str, Any]:
        # Gradio's Chatbot opens a thought whose status is "pending" (with a spinner) or absent, and
        # folds one whose status is "done": a finished step has none, so a trace reads top to bottom.
        metadata: dict[str, Any] = {"title": f"Step {self.number} · {escape_text(self.label())}",
                                    "id": f"step-{self.number}"}
        if not self.done:
            metadata["status"] = "pending"
        generation = self.generation_s()
        if generation is not None:
            metadata["duration"] = round(generation + self.tool_s(), 4)
        if self.parse_error is not None:
            metadata["log"] = "could not parse"
        elif self.observation is not None and self.observation.error:
            metadata["log"] = "tool failed"
        return _message("assistant", self.render(), **metadata)


# --- the whole session --------------------------------------------------------------------------


class ChatView:
    """Folds a session's events, one at a time, into chat messages.

    ``add`` is O(1) for a streamed chunk: it only appends to its step and marks that step for
    re-rendering; ``messages`` re-renders the steps that changed and reuses the others' text.
    """

    def __init__(self) -> None:
        self._question: str | None = None
        self._steps: dict[int, _Step] = {}
        self._answer: tuple[Any] | None = None  # a 1-tuple, so that an answer of None still counts
        self._error: ev.Error | None = None
        self._finished: ev.Finished | None = None
        self._direct = False

    def _step(self, number: int) -> _Step:
        step = self._steps.get(number)
        if step is None:
            step = self._steps[number] = _Step(number, direct=self._direct)
        step.content = None
        return step

    def add(self, event: ev.Event) -> None:
        if isinstance(event, ev.SessionStarted):
            self._direct = event.mode == "direct"
            ids = ", ".join(escape_text(info.image_id) for info in event.images)
            self._question = escape_text(event.question) + (f"\n\n*Images: {ids}*" if ids else "")
        elif isinstance(event, ev.StepStarted):
            for step in self._steps.values():
                if not step.done:
                    step.done, step.content = True, None
            self._step(event.step)
        elif isinstance(event, ev.ThoughtDelta):
            self._step(event.step).pieces.append(event.text)
        elif isinstance(event, ev.ActionParsed):
            step = self._step(event.step)
            step.parsed, step.pieces = event, []
        elif isinstance(event, ev.ParseError):
            step = self._step(event.step)
            step.parse_error, step.pieces, step.done = event, [], True
        elif event.kind == "action_review":  # by kind: review events are newer than some callers' events
            self._step(event.step).reviewing = True
        elif event.kind == "action_edited":
            step = self._step(event.step)
            step.original, step.running = getattr(event, "original", None), getattr(event, "action", None)
        elif isinstance(event, ev.ToolStarted):
            self._step(event.step).running = event.action
        elif isinstance(event, ev.ImageProduced) and event.image is not None:
            self._step(event.step).produced.append(event.image)
        elif isinstance(event, ev.Observation):
            step = self._step(event.step)
            step.observation, step.done = event, True
        elif isinstance(event, ev.FinalAnswer):
            self._answer = (event.answer,)
            step = self._step(event.step)
            step.answered, step.done = True, True
        elif isinstance(event, ev.Error):
            self._error = event
        elif isinstance(event, ev.Finished):
            self._finished = event
            for step in self._steps.values():
                step.done, step.content = True, None
                action = step.action()
                step.not_run = action is not None and step.observation is None and not step.answered

    def messages(self) -> list[dict[str, Any]]:
        """The chat so far: fresh, JSON-safe dicts (the caller may keep or change them)."""
        out = []
        if self._question is not None:
            out.append(_message("user", self._question))
        out += [self._steps[n].message() for n in sorted(self._steps)]
        total = ""
        if self._finished is not None and self._finished.total_s:
            total = f"\n\n*{self._finished.total_s:.2f} s in all.*"
        if self._answer is not None:
            out.append(_message("assistant", f"**Answer:** {escape_text(answer_text(self._answer[0]))}{total}"))
        finished = self._finished
        if finished is not None and finished.status != "finished":
            headline = _HEADLINES.get(finished.status, f"**The session ended: {escape_text(finished.status)}.**")
            detail = f" {escape_text(finished.message)}" if finished.message else ""
            out.append(_message("assistant", headline + detail + total))
        elif finished is not None and self._answer is None:
            out.append(_message("assistant", "**Finished** without an answer." + total))
        elif finished is None and self._error is not None:
            out.append(_message("assistant", f"**Error:** {escape_text(self._error.message)}"))
        return out


def chat_messages(events: Iterable[ev.Event]) -> list[dict[str, Any]]:
    """All the events folded into chat messages."""
    view = ChatView()
    for event in events:
        view.add(event)
    return view.messages()


# --- selectors and galleries --------------------------------------------------------------------


def step_choices(events: Iterable[ev.Event]) -> list[tuple[str, int]]:
    """``("Step 2 · OCR", 2)`` for each step whose reply is complete, for a step selector."""
    steps: dict[int, _Step] = {}
    for event in events:
        if isinstance(event, ev.ActionParsed):
            steps.setdefault(event.step, _Step(event.step)).parsed = event
        elif isinstance(event, ev.ParseError):
            steps.setdefault(event.step, _Step(event.step)).parse_error = event
    return [(f"Step {n} · {steps[n].label()}", n) for n in sorted(steps)]


def images_seen(events: Iterable[ev.Event], root: Path | None = None) -> list[tuple[str, str]]:
    """``(path, caption)`` of every image of the session whose file exists, in id order, for a gallery."""
    out = []
    for event in events:
        infos = event.images if isinstance(event, ev.SessionStarted) else (
            [event.image] if isinstance(event, ev.ImageProduced) and event.image is not None else [])
        for info in infos:
            path = resolve_path(info.path, info.sha256, root)
            if path is None:
                continue
            if info.role == "input":
                caption = f"{info.image_id} (input)"
            else:
                made = f"{info.action or 'tool'} of {info.parent}" if info.parent else (info.action or "tool")
                caption = f"{info.image_id} ({made}, step {info.step})"
            out.append((str(path), caption))
    return out
