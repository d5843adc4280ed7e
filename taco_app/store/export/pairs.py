"""Preference pairs: two steps (or two rests of traces) that people's judgments rank, after the same history.

Where a pair comes from, strongest first (:data:`SOURCES`):

- ``preference``: a person preferred one session to another (the latest judgment of the two counts);
  a tie gives no pair, and fork and rating pairs of the same two sessions give way to it;
- ``correction``: a person corrected a step in Review after the run: the correction is chosen, the
  model's reply rejected. An edit made at review, before the step ran, is what ran: it gives no pair;
- ``fork``: a fork replaced step K of its parent: the fork's step K is chosen, the parent's rejected;
- ``rating``: two sessions on the same question and input images (compared by content, in order), one
  rated up and the other down (the latest session ratings).

Two sessions are paired at the first step where what ran differs (the reply, the action that ran,
the observation, the images it made); a fork must differ at its fork step, a correction is at its
step. The prompt is the history before that step, built from the chosen session by
:func:`~taco_app.store.export.rebuild.prefix` (clean targets, corrections applied); the chosen step is
a clean CoTA step (:func:`~taco_app.store.export.rebuild.step_target`); the rejected step is what the
model wrote (:func:`~taco_app.store.export.rebuild.reply`): a reply that is not a CoTA step in JSON
is a true example of what not to write, so it is kept as written.

With ``trajectory`` pairs, chosen and rejected are the whole rests of the two traces from that step:
the chosen session rebuilt (so it must be a clean, finished session, like any training row), the
rejected one as it ran, each ending with its last reply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator

from taco_app.cota.prompt import ImagePart, Turn, assistant_turn, text_turn
from taco_app.store.codec import EDIT_NOTE
from taco_app.store.export.base import Batch
from taco_app.store.export.rebuild import CONTROL_TOKENS, Skip, observation_images, prefix, rebuild, reply, step_target
from taco_app.store.schema import SessionRow, StepRow
from taco_app.store.queries import task

SOURCES = ("preference", "correction", "fork", "rating")  # strongest first
MODES = ("step", "trajectory")


@dataclass(frozen=True)
class Candidate:
    """Two sessions a judgment ranks: ``chosen`` over ``rejected`` (the same session for a correction).
    ``skip`` says why the judgment gives no pair (a tie, another question, …), when it is known at once."""

    source: str  # one of SOURCES
    chosen_id: str
    rejected_id: str
    chosen: SessionRow | None  # None: not in the store
    rejected: SessionRow | None
    step: int | None = None  # a correction's step; otherwise found where the two differ
    detail: dict[str, Any] = field(default_factory=dict)  # what the judgment said, for provenance
    skip: Skip | None = None

    @property
    def what(self) -> str:
        """The pair in a line, for the list of pairs left out."""
        if self.source == "correction":
            return f"{self.chosen_id} step {self.step} (correction)"
        if self.skip is not None and self.skip.reason == "tie":
            return f"{self.chosen_id} and {self.rejected_id} ({self.source})"
        return f"{self.chosen_id} over {self.rejected_id} ({self.source})"


@dataclass(frozen=True)
class Pair:
    candidate: Candidate
    step: int  # where the two differ
    prompt: list[Turn]
    image_ids: list[str]  # the prompt's images (of the chosen session), in placeholder order
    chosen: list[Turn]
    rejected: list[Turn]


# --- where pairs come from ----------------------------------------------------------------------


def candidates(batch: Batch) -> Iterator[Candidate]:
    """Every judgment in the store that ranks two steps, strongest source first, whatever the filters chose
    (a judgment outweighs a weaker one whether or not its own pair is exported)."""
    stored = batch.stored()
    judged: set[frozenset[str]] = set()  # two sessions a person compared: their preference stands
    latest: dict[frozenset[str], Any] = {}
    for preference in batch.preferences():  # oldest first: a later judgment of the same two replaces it
        latest[frozenset((preference.chosen_id, preference.rejected_id))] = preference
    for two, preference in latest.items():
        judged.add(two)
        a, b = stored.get(preference.chosen_id), stored.get(preference.rejected_id)
        skip = (Skip("missing-session") if a is None or b is None else Skip("tie") if preference.tie
                else Skip("different-task") if task(a) != task(b) else None)
        yield Candidate("preference", preference.chosen_id, preference.rejected_id, a, b,
                        detail={"reason": preference.reason}, skip=skip)

    for session in stored.values():
        for step, note in sorted(_corrections(batch, session).items()):
            yield Candidate("correction", session.id, session.id, session, session, step, {"note": note})

    for session in stored.values():
        if session.parent_session_id is None:
            continue
        parent = stored.get(session.parent_session_id)
        skip = (Skip("missing-session") if parent is None
                else Skip("overruled") if frozenset((session.id, parent.id)) in judged else None)
        yield Candidate("fork", session.id, session.parent_session_id, session, parent,
                        detail={"fork_step": session.fork_step}, skip=skip)

    groups: dict[tuple[str, tuple[str, ...]], list[SessionRow]] = {}
    for session in stored.values():
        if batch.notes(session).rating is not None:
            groups.setdefault(task(session), []).append(session)
    for group in groups.values():
        for up in (s for s in group if batch.notes(s).rating == "up"):
            for down in (s for s in group if batch.notes(s).rating == "down"):
                skip = Skip("overruled") if frozenset((up.id, down.id)) in judged else None
                yield Candidate("rating", up.id, down.id, up, down,
                                detail={"chosen_rating": "up", "rejected_rating": "down"}, skip=skip)


def _corrections(batch: Batch, session: SessionRow) -> dict[int, str | None]:
    """The steps whose latest correction a person made in Review (step → its note)."""
    latest = {}
    for row in batch.history(session):  # oldest first
        if row.corrected_step is not None and row.step is not None:
            latest[row.step] = row
    return {step: row.note for step, row in latest.items() if row.note != EDIT_NOTE}


# --- the pair's turns ---------------------------------------------------------------------------


def build(candidate: Candidate, batch: Batch, mode: str) -> Pair:
    """The candidate's prompt, chosen and rejected turns, or :class:`Skip`."""
    if candidate.skip is not None:
        raise candidate.skip
    chosen, rejected = candidate.chosen, candidate.rejected
    assert chosen is not None and rejected is not None  # a missing one is a skip
    for session in (chosen, rejected):
        if session.status == "running":
            raise Skip("running")
    step = candidate.step if candidate.source == "correction" else first_difference(chosen, rejected)
    if step is None:
        raise Skip("same-step", "the two sessions ran the same steps")
    if candidate.source == "fork" and step != chosen.fork_step:
        raise Skip("not-shared" if chosen.fork_step is None or step < chosen.fork_step else "same-step",
                   f"step {chosen.fork_step}")
    notes = batch.notes(chosen)
    if mode == "step":
        before = prefix(chosen, notes, step)
        prompt, image_ids = before.turns, before.image_ids
        mine = _step(chosen, step)
        if mine is None:
            raise Skip("no-reply", f"step {step}")
        better = [assistant_turn(step_target(mine, notes))]
        worse = _rest(rejected, step, whole=False)
    else:
        rebuilt = rebuild(chosen, notes)
        if len(rebuilt.turns) < 2 * step:  # a correction ended the chosen session before the step
            raise Skip("ended-before", f"step {step}")
        prompt, better = rebuilt.turns[:2 * step - 1], rebuilt.turns[2 * step - 1:]
        image_ids = rebuilt.image_ids[:sum(isinstance(p, ImagePart) for t in prompt for p in t.parts)]
        if rejected.status == "interrupted":
            raise Skip("interrupted")
        worse = _rest(rejected, step, whole=True)
    if any(isinstance(part, ImagePart) for turn in better + worse for part in turn.parts):
        raise Skip("image-in-completion")
    for turn in worse:
        for token in CONTROL_TOKENS:
            if token in turn.text:
                raise Skip("control-token", token)
    if [t.text for t in better] == [t.text for t in worse]:
        raise Skip("same-step", f"step {step}")
    return Pair(candidate, step, prompt, image_ids, better, worse)


def first_difference(a: SessionRow, b: SessionRow) -> int | None:
    """The first step where what ran in ``a`` and ``b`` differs; None when they ran the same steps."""
    steps_a, steps_b = {s.index: s for s in a.steps}, {s.index: s for s in b.steps}
    for index in range(1, max([*steps_a, *steps_b], default=0) + 1):
        x, y = steps_a.get(index), steps_b.get(index)
        if x is None or y is None or _ran(a, x) != _ran(b, y):
            return index
    return None


def _ran(session: SessionRow, step: StepRow) -> tuple[Any, ...]:
    """What a step was: the reply, the action that ran, the observation and the images it made."""
    content = {image.image_id: image.sha256 for image in session.images}
    return (reply(step), json.dumps(step.action, sort_keys=True), step.observation,
            [content.get(image_id) for image_id in step.image_ids or []])


def _step(session: SessionRow, index: int) -> StepRow | None:
    return next((step for step in session.steps if step.index == index), None)


def _rest(session: SessionRow, start: int, *, whole: bool) -> list[Turn]:
    """The model's replies from step ``start`` as it wrote them (with the observations between them
    when ``whole``), ending with its last reply; :class:`Skip` when it wrote none there."""
    turns: list[Turn] = []
    for step in session.steps:
        if step.index < start:
            continue
        text = reply(step)
        if text is None:
            break
        turns.append(assistant_turn(text))
        if not whole:
            break
        if step.observation is not None:
            shown = observation_images(step.observation, step.image_ids or [])
            turns.append(text_turn("user", step.observation, shown))
    while turns and turns[-1].role == "user":  # what came back after the last reply is not the model's
        turns.pop()
    if not turns:
        raise Skip("no-reply", f"step {start}")
    return turns
