"""``trl-sft``: Hugging Face TRL's conversational vision rows, what ``SFTTrainer`` trains a vision model on.

A row is ``{"id", "messages", "images"}``. ``messages`` are typed content parts: a user turn is the
text TACO's pipeline trains on (:func:`~taco_app.cota.training.training_text`: the goal before the
first one, every part followed by ``"\\n"``) cut at each ``"<image>\\n"`` into ``{"type": "text"}``
parts, with one ``{"type": "image"}`` part for each image, in order; an assistant turn is one text
part holding its JSON step. So a model sees the same words whether it is trained from this export
or from cota-mantis: writing ``"<image>\\n"`` for each image part and joining the parts gives the
cota-mantis row's content. ``images`` are the paths relative to the export folder, in the order of
the image parts; TRL's collator (``DataCollatorForVisionLanguageModeling``) fills the image parts
with them in that order, once the card's loading code has joined them to the folder and decoded them.
"""

from __future__ import annotations

from typing import Any

from taco_app.cota.prompt import IMAGE_TOKEN, Turn
from taco_app.cota.training import training_text
from taco_app.store.export.base import ExportFormat, Sample, loading_code

IMAGE_PART = IMAGE_TOKEN + "\n"  # how training text writes an image

DATA_FILE = "data.jsonl"
# The card's loading code (``EXPORT``: the folder), which the tests run as it stands: TRL's
# collator wants decoded images, and the rows' image paths are relative to the export folder.
LOAD = loading_code(DATA_FILE, "images")

# How to train on it. max_length=None: TRL refuses to cut a vision row, and a cut could drop
# image tokens. assistant_only_loss: the loss is on TACO's steps, not on the goal and observations.
TRAIN = (
    "from trl import SFTConfig, SFTTrainer\n"
    "\n"
    "trainer = SFTTrainer(\n"
    "    model=\"Qwen/Qwen2.5-VL-3B-Instruct\",\n"
    "    args=SFTConfig(output_dir=\"taco-sft\", max_length=None, assistant_only_loss=True),\n"
    "    train_dataset=dataset,\n"
    ")\n"
    "trainer.train()\n"
)


def user_content(text: str) -> list[dict[str, str]]:
    """Training text as typed parts: each ``"<image>\\n"`` an image part, the text between as text parts."""
    parts: list[dict[str, str]] = []
    for k, piece in enumerate(text.split(IMAGE_PART)):
        if k:
            parts.append({"type": "image"})
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def messages(sample: Sample) -> list[dict[str, Any]]:
    """The sample's turns as TRL's conversational messages, in the words TACO's pipeline trains on."""
    return turn_messages(sample.turns)


def turn_messages(turns: list[Turn], *, first: bool = True) -> list[dict[str, Any]]:
    """Turns as TRL's conversational messages; ``first``: ``turns[0]`` is the conversation's first turn
    (the goal goes before it)."""
    return [{"role": turn.role,
             "content": user_content(training_text(turn, first=first and i == 0)) if turn.role == "user"
             else [{"type": "text", "text": turn.text}]}
            for i, turn in enumerate(turns)]


class TrlSft(ExportFormat):
    name = "trl-sft"
    like = "TRL's conversational vision format (SFTTrainer)"
    data_file = DATA_FILE

    def row(self, sample: Sample) -> dict[str, Any]:
        return {"id": sample.id, "messages": messages(sample), "images": sample.images}

    def usage(self, dataset: str) -> str:
        return (
            "Hugging Face TRL (`trl.SFTTrainer`, conversational vision rows) reads `data.jsonl` once the image\n"
            "paths, relative to this folder, are joined to it and decoded:\n\n"
            f"```python\n{LOAD}```\n\n"
            "Then train a vision-language model on it:\n\n"
            f"```python\n{TRAIN}```\n"
        )


FORMAT = TrlSft()
