"""TACO's inference format, byte for byte.

A conversation is a list of :class:`Turn`; a turn is a list of text and :class:`ImagePart` pieces,
so images keep their exact position. :func:`build_prompt` flattens a conversation into the single
user message that TACO's harness sent to its checkpoints (``###Human:`` / ``###Assistant:`` lines
after the system prompt), wrapped in the chat format of the checkpoint family, with ``<image>``
where each image goes.
"""

from __future__ import annotations

import re

import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, Union

from taco_app.cota.registry import action_specs, prompt_data

IMAGE_TOKEN = "<image>"
LITERAL_IMAGE = "<image >"  # how the text "<image>" is written in a prompt, so it is not a placeholder
OBSERVATION_PREFIX = "OBSERVATION:\n"
OBSERVATION_SUFFIX = (
    "\nThe OBSERVATION can be incomplete or incorrect, so please be critical and decide how to make"
    " use of it. If you've gathered sufficient information to answer the question, call Terminate"
    " with the final answer. Now, please generate the response for the next step."
)
NO_ACTION_MESSAGE = "No action has been provided. Proceed to the next step."
JSON_REPAIR = (
    "\nPlease format the output to a strict JSON format can be converted by json.loads()."
    "\nRequirements:\n1. Do not change the content;"
    "\n2. Consider changing single quotes to double quotes or vice versa where applicable;"
    "\n3. Consider adding or removing curly bracket or removing the period at the end if any."
)
GENERIC_REPAIR = (
    "\nPlease try again to fix the error. Or, reply with Terminate only if you believe this error"
    " is not fixable."
)

# TACO's direct-answer baseline (``DirectAnswerPrompt``): this goal instead of the CoTA system prompt,
# and one reply, which is the answer.
DIRECT_GOAL = "You are a helpful assistant, and your goal is to answer the # USER REQUEST # based on the image(s).\n"
MODES: tuple[str, ...] = ("cota", "direct")

Family = Literal["mantis", "qwen2"]
FAMILIES: tuple[str, ...] = ("mantis", "qwen2")
_NAMED_IMAGE = re.compile(r"(image-\d+): " + re.escape(IMAGE_TOKEN))  # how an observation names its images
MAX_REPLIES = 10  # how many replies a session may have after the first: TACO's limit
LLAMA3_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives"
    " helpful, detailed, and polite answers to the human's questions."
)
QWEN2_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class ImagePart:
    """An image in a turn, by its session id (``image-0``, ``image-1``, …)."""

    image_id: str


Part = Union[str, ImagePart]


@dataclass
class Turn:
    role: Literal["user", "assistant"]
    parts: list[Part] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The turn as the model reads it, with ``<image>`` for each image.

        A literal ``<image>`` in the text (a question, OCR of a screenshot, a model's thought) would
        be read as one more image placeholder and break the prompt; it is written ``<image >``.
        """
        return "".join(IMAGE_TOKEN if isinstance(p, ImagePart) else p.replace(IMAGE_TOKEN, LITERAL_IMAGE) for p in self.parts)

    @property
    def image_ids(self) -> list[str]:
        return [p.image_id for p in self.parts if isinstance(p, ImagePart)]


@dataclass(frozen=True)
class Prompt:
    """What a backend is given: TACO's flattened text, its chat family, and the image ids in order.

    ``text`` is the chat-wrapped string a local checkpoint tokenizes; a chat API is sent ``system``
    and ``user`` as two messages instead and applies the same template on its side.
    """

    family: str
    user: str  # the flattened TACO text, one ``<image>`` per entry of ``image_ids``
    image_ids: tuple[str, ...]

    @property
    def system(self) -> str:
        return chat_system(self.family)

    @property
    def text(self) -> str:
        return wrap_chat(self.family, self.user)


# --- the system prompt -------------------------------------------------------------------------


@cache
def system_prompt() -> str:
    data = prompt_data()
    out = ["[BEGIN OF GOAL]\n", data["goal"], "\n[END OF GOAL]\n\n", "[BEGIN OF ACTIONS]\n"]
    for spec in action_specs():
        # TACO prints Arguments/Returns with str() (Python dict repr) and examples with json.dumps.
        out.append(f"Name: {spec.name}\n")
        out.append(f"Description: {spec.description}\n")
        out.append(f"Arguments: {spec.arguments}\n")
        out.append(f"Returns: {spec.returns}\n")
        out.append("Examples:\n")
        out.extend(f"{json.dumps(example)}\n" for example in spec.examples)
        out.append("\n")
    out.append("[END OF ACTIONS]\n\n")
    out.append("[BEGIN OF TASK INSTRUCTIONS]\n")
    out.extend(line + "\n" for line in data["task_instructions"])
    out.append("[END OF TASK INSTRUCTIONS]\n\n")
    out.append("[BEGIN OF FORMAT INSTRUCTIONS]\n")
    out.extend(line + "\n" for line in data["format_instructions"])
    out.append("[END OF FORMAT INSTRUCTIONS]\n\n")
    out.append("[BEGIN OF EXAMPLES]:\n")
    for demo in data["demonstrations"]:
        out.append(f"# USER REQUEST #:\n {demo['user_request']}\n# RESPONSE #:\n")
        for step in demo["steps"]:
            out.append(json.dumps({"thought": step["thought"], "actions": step["actions"]}) + "\n")
            if step["observation"]:
                out.append(OBSERVATION_PREFIX + json.dumps(step["observation"]) + "\n")
        out.append("\n")
    out.append("[END OF EXAMPLES]\n")
    return "".join(out)


# --- turns ----------------------------------------------------------------------------------------


MAX_QUESTION_CHARS = 20_000  # a long question is fine; a pasted book would crowd out the whole context


def check_question(question: str | None) -> str:
    """The question as it will be asked, or ValueError saying what to change."""
    text = (question or "").strip()
    if not text:
        raise ValueError("the question is empty: ask something about the image(s)")
    if len(text) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question is {len(text):,} characters long; the limit is {MAX_QUESTION_CHARS:,}:"
                         " shorten it")
    return text


def user_request(question: str, image_ids: list[str]) -> Turn:
    return _request(question, image_ids, "\nNow please generate your response:\n")


def direct_request(question: str, image_ids: list[str]) -> Turn:
    """The request of TACO's direct-answer baseline: its images and question, with no call to respond in steps."""
    return _request(question, image_ids, "\n")


def _request(question: str, image_ids: list[str], tail: str) -> Turn:
    """TACO's request: its header, its query as ``format_query`` wrote it (``image-k: <image>`` lines, then
    the question and a newline), then the prompt's own ``tail``."""
    parts: list[Part] = ["\n# USER REQUEST #:\n"]
    for image_id in image_ids:
        parts += [f"{image_id}: ", ImagePart(image_id), "\n"]
    parts.append(f"{question}\n{tail}")
    return Turn("user", _merge(parts))


def assistant_turn(raw_output: str) -> Turn:
    return Turn("assistant", [raw_output])


def text_turn(role: Literal["user", "assistant"], text: str, image_ids: list[str]) -> Turn:
    """A turn from its text with ``<image>`` placeholders, the images being ``image_ids`` in order."""
    pieces = text.split(IMAGE_TOKEN)
    if len(pieces) - 1 != len(image_ids):
        raise ValueError(f"{len(pieces) - 1} <image> placeholders but {len(image_ids)} images")
    parts: list[Part] = [pieces[0]]
    for image_id, piece in zip(image_ids, pieces[1:]):
        parts += [ImagePart(image_id), piece]
    return Turn(role, _merge(parts))


def observation_image_ids(text: str, recorded: list[str]) -> list[str] | None:
    """The ids of the images an observation's text shows, in order: the ``recorded`` ones when they are
    as many as its ``<image>`` placeholders, else the ids written beside them (``'image-3: <image>'``),
    else None."""
    count = text.count(IMAGE_TOKEN)
    if len(recorded) == count:
        return list(recorded)
    named = _NAMED_IMAGE.findall(text)
    return named if len(named) == count else None


def observation_turn(output: dict[str, Any]) -> Turn:
    """``OBSERVATION:`` + ``str()`` of the output with sorted keys; images as ``'image-k: <image>'``.

    Values that are :class:`ImagePart` are written as TACO wrote them and the image itself is
    placed at that spot of the text, inside the quotes, exactly where TACO's harness put it.
    """
    markers: dict[str, ImagePart] = {}
    rendered: dict[str, Any] = {}
    for key in sorted(output):
        value = output[key]
        if isinstance(value, ImagePart):
            marker = f"\x1eIMAGE{len(markers)}\x1e"
            markers[marker] = value
            value = f"{value.image_id}: {marker}"
        rendered[key] = value
    text = OBSERVATION_PREFIX + str(rendered) + OBSERVATION_SUFFIX
    # repr() escapes the \x1e separators, so a marker cannot be forged by tool output.
    parts: list[Part] = [text]
    for marker, image in markers.items():
        escaped = repr(marker)[1:-1]
        head, _, tail = parts.pop().partition(escaped)
        parts += [head, image, tail]
    return Turn("user", _merge(parts))


def no_action_turn() -> Turn:
    return observation_turn({"message": NO_ACTION_MESSAGE})


def describe_error(error: BaseException) -> str:
    """``<class 'ValueError'>: message.`` as TACO wrote it.

    Our own exception classes are shown as the built-in class they extend, so the model reads the
    familiar ``ValueError`` rather than an internal module path.
    """
    cls = next(c for c in type(error).__mro__ if c.__module__ == "builtins")
    text = str(error)
    return f"{cls}: {text}" + ("" if text.endswith(".") else ".")


def failed_execution_turn(error: BaseException) -> Turn:
    """TACO's turn for a tool that raised: the exception's class and text, no ``OBSERVATION:``."""
    return Turn("user", [f"Execution failed with {describe_error(error)}" + OBSERVATION_SUFFIX])


def parse_error_turn(code: str, message: str) -> Turn:
    repair = JSON_REPAIR if code == "json" else GENERIC_REPAIR
    return Turn("user", [OBSERVATION_PREFIX + message + repair])


def _merge(parts: list[Part]) -> list[Part]:
    """Join adjacent strings and drop empty ones, so a turn has one canonical shape."""
    merged: list[Part] = []
    for part in parts:
        if isinstance(part, str):
            if not part:
                continue
            if merged and isinstance(merged[-1], str):
                merged[-1] += part
                continue
        merged.append(part)
    return merged


# --- flattening -----------------------------------------------------------------------------------


def flatten(turns: list[Turn], mode: str = "cota") -> str:
    """TACO's single-turn text: system prompt (the direct-answer goal in ``direct`` mode), then
    ``###Human:``/``###Assistant:`` lines."""
    lines = [DIRECT_GOAL if mode == "direct" else system_prompt(), "\n"]
    for turn in turns:
        speaker = "###Human: " if turn.role == "user" else "###Assistant: "
        lines.append(f"{speaker}{turn.text}\n")
    lines.append("\n###Assistant: ")
    return "".join(lines)


def chat_system(family: str) -> str:
    """The system message each checkpoint family was prompted with."""
    if family == "mantis":
        return LLAMA3_SYSTEM
    if family == "qwen2":
        return QWEN2_SYSTEM
    raise ValueError(f"unknown checkpoint family {family!r}; expected one of {', '.join(FAMILIES)}")


def wrap_chat(family: str, text: str) -> str:
    """The chat template of each checkpoint family around the flattened text, as one user turn."""
    system = chat_system(family)
    if family == "mantis":
        return (
            f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
            f"<|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def build_prompt(turns: list[Turn], family: str, mode: str = "cota") -> Prompt:
    chat_system(family)  # an unknown family fails here, before any work
    if mode not in MODES:
        raise ValueError(f"unknown prompt mode {mode!r}; expected one of {', '.join(MODES)}")
    image_ids = tuple(image_id for turn in turns for image_id in turn.image_ids)
    return Prompt(family=family, user=flatten(turns, mode), image_ids=image_ids)
