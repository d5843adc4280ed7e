"""Events <-> rows: the one mapping between a session's typed events and the rows that store it.

Writing (:mod:`taco_app.store.recorder` applies these): a :class:`events.SessionStarted` is a
session row and its input images' rows; the events of a step fill one step row
(:func:`step_columns`); an :class:`events.ImageProduced` is an image row; a person's edit is also a
step correction (:func:`edit_feedback`); :class:`events.Finished` ends the session row.

Reading: :func:`trace_events` turns a stored trace back into the events a live run would have
yielded, so the Review tab shows old sessions through the very code that shows live ones.
:func:`conversation_events` does the same for a conversation read from a file (an import).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from taco_app.cota import events as ev
from taco_app.cota.actions import Action, json_safe
from taco_app.cota.parser import ParsedStep, parse
from taco_app.cota.prompt import Turn
from taco_app.cota.traces import Conversation
from taco_app.store.schema import FeedbackRow, ImageRow, SessionRow, StepRow

if TYPE_CHECKING:
    from taco_app.store.queries import Trace

# A step a person edited before it ran: the row keeps the model's raw text and the action that ran;
# the edit is also a step correction, so review and export see the step that produced the observation.
EDIT_NOTE = "edited at review, before it ran"
JSON_COLUMNS = ("action", "output", "overlays", "image_ids")
TIMINGS = ("generation_s", "tool_s")  # a step's measured durations (an import has none)


# --- events -> rows -----------------------------------------------------------------------------


def session_row(event: ev.SessionStarted, *, tool_versions: dict[str, Any],
                owner: tuple[str, int] | None) -> SessionRow:
    """The row of a session that starts now (``running``), ``owner`` the (host, pid) that runs it."""
    host, pid = owner if owner is not None else (None, None)
    return SessionRow(
        id=event.session_id, created_at=event.started_at or time.time(), question=event.question,
        backend=event.backend, model=event.model, family=event.family, status="running",
        revision=event.revision, quantisation=event.quantisation, tool_versions=tool_versions,
        owner_host=host, owner_pid=pid, parent_session_id=event.parent_session_id, fork_step=event.fork_step,
        mode=event.mode,
    )


def image_row(session_id: str, info: ev.ImageInfo, path: str) -> ImageRow:
    """An image's row; ``path`` is its file relative to the images folder."""
    return ImageRow(
        session_id=session_id, ordinal=int(info.image_id.rsplit("-", 1)[1]), image_id=info.image_id,
        sha256=info.sha256, path=path, width=info.width, height=info.height,
        role=info.role, step=info.step, parent=info.parent, bbox=info.bbox,
    )


def step_columns(event: ev.Event) -> dict[str, Any] | None:
    """What an event says about its step's row, or None for an event that says nothing about it."""
    if isinstance(event, ev.ActionParsed):
        return dict(raw=event.raw, thought=event.thought, action=event.action, generation_s=event.generation_s,
                    action_name=event.action.name if event.action else None, **_tokens(event.usage))
    if isinstance(event, ev.ActionEdited):
        name = event.action.name  # a person's edit: not necessarily text
        return dict(action=event.action, action_name=name if isinstance(name, str) else None)
    if isinstance(event, ev.ParseError):
        # An empty repair turn: nothing was fed back (an imported reply that no user turn follows).
        return dict(raw=event.raw, parse_error_code=event.code, parse_error=event.message,
                    observation=event.observation or None, generation_s=event.generation_s, **_tokens(event.usage))
    if isinstance(event, ev.Observation):
        return dict(observation=event.observation, output=event.output, error=event.error, error_code=event.error_code,
                    image_ids=event.image_ids, overlays=event.overlays, tool_s=event.tool_s)
    return None


def step_row(session_id: str, columns: dict[str, Any]) -> StepRow:
    # A model can write 1e309 (infinity) into its arguments: PostgreSQL's JSON refuses it.
    values = {k: json_safe(v) if k in JSON_COLUMNS else v for k, v in columns.items()}
    return StepRow(session_id=session_id, **values)


def edit_feedback(session_id: str, event: ev.ActionEdited, thought: str | None) -> FeedbackRow:
    """A person's edit at review, as the step correction it is."""
    return FeedbackRow(session_id=session_id, step=event.step, created_at=time.time(), note=EDIT_NOTE,
                       corrected_step=json_safe({"thought": thought or "", "actions": [event.action]}))


def end_columns(event: ev.Finished) -> dict[str, Any]:
    """The session row's columns when it ends (``finished_at`` is the recorder's to set)."""
    return dict(status=event.status, answer=event.answer, message=event.message or None, total_s=event.total_s)


def _tokens(usage: dict[str, int] | None) -> dict[str, int | None]:
    """A step's token columns from a backend's usage report (None when it reported none)."""
    usage = usage or {}
    return {"prompt_tokens": usage.get("prompt_tokens"), "output_tokens": usage.get("output_tokens")}


# --- rows -> events -----------------------------------------------------------------------------


def trace_events(trace: "Trace") -> list[ev.Event]:
    """A stored :class:`taco_app.store.queries.Trace` as the events a live run would have yielded.

    What the store does not keep is left out: the streamed chunks (ThoughtDelta), StepStarted,
    Error (the session's status and message say why it ended), a step that never finished its
    reply, and the ``cached_tokens`` of a usage report.
    """
    session, actions = trace.session, {s["index"]: s.get("action_name") for s in trace.steps}
    infos = [
        ev.ImageInfo(image_id=i.image_id, sha256=Path(i.path).stem, path=str(i.path), width=i.width, height=i.height,
                     role=i.role, parent=i.parent, bbox=i.bbox, step=i.step,
                     action=actions.get(i.step) if i.role != "input" else None)
        for i in trace.images
    ]
    events: list[ev.Event] = [ev.SessionStarted(
        step=0, session_id=session["id"], question=session["question"], images=[i for i in infos if i.role == "input"],
        backend=session.get("backend") or "", model=session.get("model"), family=session.get("family") or "",
        started_at=session.get("created_at") or 0.0, revision=session.get("revision"),
        quantisation=session.get("quantisation"), mode=session.get("mode") or "cota",
    )]
    last = 0
    for row in trace.steps:
        last = row["index"]
        events += _step_events(row, [i for i in infos if i.role != "input" and i.step == last])
    if session.get("mode") == "direct" and session.get("status") == "finished":  # its one reply is the answer
        events.append(ev.FinalAnswer(step=last, answer=session.get("answer")))
    if session.get("status") not in (None, "running"):
        events.append(ev.Finished(step=last, session_id=session["id"], status=session["status"],
                                  answer=session.get("answer"), steps=last, total_s=session.get("total_s") or 0.0,
                                  message=session.get("message") or ""))
    return events


def _step_events(row: dict[str, Any], produced: list[ev.ImageInfo]) -> list[ev.Event]:
    """One stored step as its events; ``produced``: the images its tool made."""
    n = row["index"]
    usage = {k: row[k] for k in ("prompt_tokens", "output_tokens") if row.get(k) is not None} or None
    generation_s = row.get("generation_s") or 0.0
    if row.get("parse_error_code"):
        return [ev.ParseError(step=n, raw=row.get("raw") or "", code=row["parse_error_code"],
                              message=row.get("parse_error") or "", observation=row.get("observation") or "",
                              generation_s=generation_s, usage=usage)]
    action = Action.from_dict(row["action"]) if isinstance(row.get("action"), dict) else None
    events: list[ev.Event] = [ev.ActionParsed(step=n, raw=row.get("raw") or "", thought=row.get("thought") or "",
                                              action=action, generation_s=generation_s, usage=usage)]
    if action is not None and action.is_final and row.get("observation") is None:
        return events + [ev.FinalAnswer(step=n, answer=json_safe(action.answer))]
    if row.get("observation") is None:
        return events  # the session ended before the action ran
    if action is not None:
        events.append(ev.ToolStarted(step=n, action=action))
    events += [ev.ImageProduced(step=n, image=info) for info in produced]
    events.append(ev.Observation(step=n, action=action, observation=row["observation"], output=row.get("output"),
                                 error=row.get("error"), error_code=row.get("error_code"),
                                 image_ids=list(row.get("image_ids") or []),
                                 overlays=dict(row.get("overlays") or {}), tool_s=row.get("tool_s") or 0.0))
    return events


# --- a conversation (an import) -> events -------------------------------------------------------


def conversation_events(session_id: str, conversation: Conversation, images: dict[str, ev.ImageInfo], *,
                        started_at: float, **session: Any) -> Iterator[ev.Event]:
    """A finished conversation as the events a live session would have yielded: one step per assistant
    turn, its observation the user turn that follows it, the images shown there made by that step.

    ``images``: each image id's stored file (role and step are filled in here); ``session``: the
    other fields of its :class:`events.SessionStarted` (backend, model, family). It ends
    ``finished`` when its last step is a ``Terminate`` with an answer, else ``max_steps``.
    """
    turns = conversation.turns
    inputs = set(conversation.input_image_ids)
    replies = [(turn, turns[k + 1] if k + 1 < len(turns) and turns[k + 1].role == "user" else None)
               for k, turn in enumerate(turns) if turn.role == "assistant"]
    made_at = {image_id: step for step, (_, after) in enumerate(replies, 1) if after for image_id in after.image_ids}
    infos = {image_id: dataclasses.replace(info, role="input" if image_id in inputs else "tool", step=made_at.get(image_id))
             for image_id, info in images.items()}
    # The inputs, and any image no step showed (a hand-written trace can put one anywhere): kept from the start.
    yield ev.SessionStarted(step=0, session_id=session_id, question=conversation.question, started_at=started_at,
                            images=[info for info in infos.values() if info.step is None], **session)
    action = None
    for step, (reply, after) in enumerate(replies, 1):
        produced = [infos[image_id] for image_id in after.image_ids] if after is not None else []
        action = yield from _reply_events(step, reply.text, after, produced)
    steps = len(replies)
    finished = action is not None and action.is_final
    answer = json_safe(action.answer) if finished else None
    if finished:
        yield ev.FinalAnswer(step=steps, answer=answer)
    yield ev.Finished(step=steps, session_id=session_id, status="finished" if finished else "max_steps",
                      answer=answer, steps=steps)


def _reply_events(step: int, raw: str, after: Turn | None, produced: list[ev.ImageInfo]) -> Iterator[ev.Event]:
    """One assistant turn and the user turn after it (if any) as a step's events; returns its action."""
    parsed = parse(raw)
    images = [ev.ImageProduced(step=step, image=info) for info in produced]
    if not isinstance(parsed, ParsedStep):
        yield from images  # shown after a reply that failed to parse: still the step's images
        yield ev.ParseError(step=step, raw=raw, code=parsed.code, message=parsed.message,
                            observation=after.text if after is not None else "")
        return None
    yield ev.ActionParsed(step=step, raw=raw, thought=parsed.thought, action=parsed.action)
    if after is not None:
        if parsed.action is not None:
            yield ev.ToolStarted(step=step, action=parsed.action)
        yield from images
        yield ev.Observation(step=step, action=parsed.action, observation=after.text,
                             image_ids=[info.image_id for info in produced])
    return parsed.action
