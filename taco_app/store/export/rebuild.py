"""A stored session rebuilt as TACO's turns, with clean targets only, or the reason it cannot be.

A training row teaches every assistant turn in it, so a row is only built from steps that are good
targets with the observations that really followed them:

- only ``finished`` sessions: a ``failed``, ``cancelled``, ``interrupted`` or ``max_steps`` session (or
  one still ``running``) is skipped;
- every reply must be a CoTA step in JSON (:func:`taco_app.cota.training.clean_target`); one that is
  not, even if the model recovered later, skips the whole session, as TACO's pipeline drops it;
- a person's correction of a step replaces the model's reply. It is kept only with an observation
  that belongs to it: the observation is the one of the action that ran, so a correction whose
  action differs from it (made in Review after the run) skips the session until it is re-run from
  that step. An edit made at review time, before the action ran, is the action that ran. A
  correction to ``Terminate`` ends the row there;
- regions a person fixed on a tool's output (:func:`taco_app.store.queries.correct_output`) replace
  the tool's: the step's observation is the one TACO's loop writes for the output with them
  (:mod:`taco_app.store.corrections`), and the tool's picture is the one redrawn with them;
- the row ends with a ``Terminate`` that carries an answer (a corrected answer replaces it);
- no text holds a chat template's control token (``<|eot_id|>``, ``<|im_end|>``, …): a trainer's
  tokenizer would read it as markup and its labels would cover the wrong tokens.

Skipping the whole session, rather than cutting the row before a bad step, keeps every row a whole
answered conversation, like every row of TACO's own data.

A preference pair needs parts of sessions by the same rules: :func:`prefix` is what the model read
before a step, :func:`step_target` one step as a clean target, and :func:`reply` a rejected step as
the model wrote it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from taco_app.cota.actions import Action, compact_json, json_safe, step_text
from taco_app.cota.parser import ParsedStep, parse
from taco_app.cota.prompt import Turn, assistant_turn, observation_image_ids, text_turn, user_request
from taco_app.cota.training import clean_target
from taco_app.store.corrections import observed
from taco_app.store.queries import LatestFeedback
from taco_app.store.schema import SessionRow, StepRow

# Why a session is not exported: the summary counts sessions by these (reason → what it means).
REASONS = {
    "failed": "the session failed",
    "cancelled": "the session was stopped",
    "interrupted": "the session was interrupted",
    "max_steps": "the session hit the step limit without an answer",
    "running": "the session is still running",
    "direct": "it is a direct answer (the baseline of an eval run), not a chain of thought-and-action",
    "not-json": "a reply is not a CoTA step in JSON",
    "bad-correction": "a correction is not a CoTA step in JSON",
    "stale-observation": "a corrected step's action is not the one that ran: re-run it from that step",
    "no-answer": "it does not end with a Terminate answer",
    "control-token": "its text holds a chat template's control token, which a trainer would read as markup",
    "missing-image": "an image its text refers to is not in the store",
    # Rows made from people's judgments (trl-dpo pairs, trl-stepwise labels):
    "unjudged": "steps without a judgment: rate each step, or the whole session up",
    "tie": "people judged the two sessions as good as each other",
    "overruled": "a person's preference between the same two sessions stands instead",
    "different-task": "the two sessions answer different questions or images",
    "missing-session": "the session it pairs with is not in the store",
    "same-step": "the chosen and the rejected step are the same",
    "not-shared": "the steps before the fork are not its parent's",
    "ended-before": "a session ends before the step where the two differ",
    "no-reply": "a session has no reply at the step where the two differ",
    "image-in-completion": "a completion shows an image, and TRL's DPO takes images in the prompt only",
    "duplicate": "the same pair as another row",
    "contradicted": "a stronger judgment prefers the other step of the same pair",
}


# The chat templates' control tokens of the checkpoints' tokenizers (Llama-3: Mantis; Qwen2: LLaVA-OneVision).
CONTROL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<|im_start|>", "<|im_end|>", "<|endoftext|>")


class Skip(Exception):
    """The session is not exported; ``reason`` is a key of :data:`REASONS`, ``detail`` says where."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{REASONS[reason]}{f' ({detail})' if detail else ''}")
        self.reason = reason


@dataclass(frozen=True)
class Rebuilt:
    turns: list[Turn]
    image_ids: list[str]  # in placeholder order over the whole conversation


def rebuild(session: SessionRow, notes: LatestFeedback) -> Rebuilt:
    """The session's turns with corrections applied, or :class:`Skip`."""
    if session.status != "finished":
        raise Skip(session.status if session.status in REASONS else "failed")
    if session.mode == "direct":
        raise Skip("direct")
    turns, image_ids = _request(session)
    for step in session.steps:
        target, action = _target(step, notes)
        if action is not None and action.is_final:
            if notes.corrected_answer is not None:
                target = step_text(_thought(target), action.with_answer(notes.corrected_answer))
            turns.append(assistant_turn(target))
            _check_markup(turns)
            return Rebuilt(turns, image_ids)
        if step.observation is None:
            break
        _add_step(turns, image_ids, step, target, notes)
    raise Skip("no-answer")


def prefix(session: SessionRow, notes: LatestFeedback, before: int) -> Rebuilt:
    """The turns the model read before it wrote step ``before``, by the same rules as :func:`rebuild`:
    the request, then each earlier step as a clean target (corrections applied) with its observation.

    The session need not be finished: what came after step ``before`` is not part of it.
    """
    turns, image_ids = _request(session)
    steps = {step.index: step for step in session.steps}
    for index in range(1, before):
        step = steps.get(index)
        if step is None:
            raise Skip("ended-before", f"step {index}")
        target, action = _target(step, notes)
        if (action is not None and action.is_final) or step.observation is None:
            raise Skip("ended-before", f"step {index}")
        _add_step(turns, image_ids, step, target, notes)
    _check_markup(turns)
    return Rebuilt(turns, image_ids)


def step_target(step: StepRow, notes: LatestFeedback) -> str:
    """One step as a clean target, corrections applied, with no observation after it: a correction
    need not ask for the action that ran. :class:`Skip` when it is not a CoTA step in JSON."""
    target, _ = _target(step, notes, observed=False)
    _check_markup([assistant_turn(target)])
    return target


def reply(step: StepRow) -> str | None:
    """The model's reply as it was: a CoTA step in JSON written as a clean target (so it differs from
    another step only in what it says), any other reply as the model wrote it; None when it wrote nothing."""
    target = None if step.parse_error_code else clean_target(step.raw or "")
    if target is not None:
        return target
    return step.raw if (step.raw or "").strip() else None


def _request(session: SessionRow) -> tuple[list[Turn], list[str]]:
    """The first user turn (the question and the input images) and the images it shows."""
    inputs = [row.image_id for row in session.images if row.role == "input"]
    return [user_request(session.question, inputs)], list(inputs)


def _add_step(turns: list[Turn], image_ids: list[str], step: StepRow, target: str, notes: LatestFeedback) -> None:
    """A step that did not end the session: its target, then the observation that followed it (the one
    with a person's corrected tool output, when there is one)."""
    turns.append(assistant_turn(target))
    fixed = observed(step.output, step.image_ids, notes.corrected_outputs.get(step.index))
    if fixed is not None:
        text, ids = fixed.text, fixed.image_ids
    else:
        text = step.observation or ""
        ids = observation_images(text, step.image_ids or [])
    turns.append(text_turn("user", text, ids))
    image_ids += ids


def _target(step: StepRow, notes: LatestFeedback, *, observed: bool = True) -> tuple[str, Action | None]:
    """The step's assistant text as a clean target, and the action it asks for. ``observed``: the
    step's recorded observation follows it, so a correction must keep it (:func:`keeps_observation`)."""
    fix = notes.corrected_steps.get(step.index)
    if fix is None:
        target = None if step.parse_error_code else clean_target(step.raw)
        if target is None:
            raise Skip("not-json", f"step {step.index}")
        return target, _action(target)
    target = clean_target(fix if isinstance(fix, str) else compact_json(fix))
    if target is None:
        raise Skip("bad-correction", f"step {step.index}")
    action = _action(target)
    if observed and not keeps_observation(action, step.action, ran=not step.parse_error_code):
        raise Skip("stale-observation", f"step {step.index}")
    return target, action


def keeps_observation(corrected: Action | None, action_that_ran: Any, *, ran: bool = True) -> bool:
    """Whether a corrected step can be followed by the step's recorded observation: it asks for the
    action that ran (an edit made before it ran, or a better thought), or it ends the session."""
    if corrected is not None and corrected.is_final:
        return True
    return ran and _as_json(corrected) == action_that_ran


def _check_markup(turns: list[Turn]) -> None:
    """A ``<|eot_id|>`` in a thought or an OCR result is tokenized as the real end of a turn by the
    Llama-3 and Qwen2 tokenizers, so the trainer's labels would shift; such a session is left out."""
    for turn in turns:
        text = turn.text
        for token in CONTROL_TOKENS:
            if token in text:
                raise Skip("control-token", token)


def _action(target: str) -> Action | None:
    parsed = parse(target)
    return parsed.action if isinstance(parsed, ParsedStep) else None


def _thought(target: str) -> str:
    return json.loads(target)["thought"]


def _as_json(action: Action | None) -> Any:
    """An action as the step row stores the one that ran."""
    return None if action is None else json_safe(action.as_dict())


def observation_images(text: str, produced: list[str]) -> list[str]:
    """The ids of the images an observation shows, in order (the tool's images, as recorded)."""
    ids = observation_image_ids(text, produced)
    if ids is None:
        raise Skip("missing-image", "an observation's images are not all recorded")
    return ids
