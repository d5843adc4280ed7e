"""``trl-stepwise``: TRL's stepwise-supervision rows, what a process reward model (PRM) trains on.

A row is ``{"id", "prompt", "completions", "labels", "images"}``, one per answered session whose every
step people judged. ``prompt`` is the first user turn in the words TACO's pipeline trains on (the goal,
then the request, each part followed by ``"\\n"``, an image written ``"<image>\\n"``). ``completions``
has one entry per step: the observation that came before the step, in training text, then the step's
JSON, so a PRM reads each step after everything it followed, and the label a PRM learns at the end of a
completion is about the step just read, not the tool's answer to it. ``labels`` has one bool per step;
``images`` are the images of the prompt and the observations, in the order of their ``<image>``s.
The prompt is the cota-mantis row's first turn, and each completion its next observation and step run
together, so the words are the ones TACO trains on; TRL's PRM trainer puts ``"\\n"`` (its
``step_separator``) after each completion and learns the step's label there.

A step's label comes from people's judgments: rated up, True; rated down and blamed on the model (or
on no one), False; rated down and blamed on the tool (the OCR misread, the box was wrong), True: only
the model's own mistakes count against it. A step a person corrected (or whose final answer they
corrected) is the person's step, True. A step nobody rated is good when the whole session is rated
up; otherwise the session is left out ("steps without a judgment").
"""

from __future__ import annotations

from typing import Any

from taco_app.cota.training import training_text
from taco_app.store.export.base import ExportFormat, Sample, loading_code
from taco_app.store.export.rebuild import Skip

DATA_FILE = "data.jsonl"
LOAD = loading_code(DATA_FILE, "images")  # the card's code, which the tests run as it stands

# TRL's PRMTrainer reads text: it drops the images column and the <image> placeholders stay words.
TRAIN = (
    "from transformers import AutoModelForTokenClassification, AutoTokenizer\n"
    "from trl.experimental.prm import PRMConfig, PRMTrainer  # TRL 1.13 or earlier: pip install \"trl<=1.13\"\n"
    "\n"
    "model = AutoModelForTokenClassification.from_pretrained(\"Qwen/Qwen2.5-0.5B\", num_labels=2)\n"
    "tokenizer = AutoTokenizer.from_pretrained(\"Qwen/Qwen2.5-0.5B\")\n"
    "trainer = PRMTrainer(\n"
    "    model=model,\n"
    "    args=PRMConfig(output_dir=\"taco-prm\", step_separator=\"\\n\", max_length=None),\n"
    "    processing_class=tokenizer,\n"
    "    train_dataset=dataset,\n"
    ")\n"
    "trainer.train()\n"
)


def labels(sample: Sample) -> list[bool]:
    """One label per step of the sample (its assistant turns), or :class:`Skip` ("unjudged")."""
    notes = sample.notes
    count = sum(turn.role == "assistant" for turn in sample.turns)
    out = []
    for k, step in enumerate(sample.session.steps[:count]):
        final = k == count - 1
        rating = notes.step_ratings.get(step.index)
        if step.index in notes.corrected_steps or (final and notes.corrected_answer is not None):
            out.append(True)  # the person's own step
        elif rating == "up":
            out.append(True)
        elif rating == "down":
            out.append(notes.step_blame.get(step.index) == "tool")  # no blame: the model's
        elif notes.rating == "up":
            out.append(True)
        else:
            raise Skip("unjudged", f"step {step.index}")
    return out


def completions(sample: Sample) -> list[str]:
    """Each step after the observation before it, in training text."""
    out, before = [], ""
    for turn in sample.turns[1:]:
        if turn.role == "user":
            before = training_text(turn)
        else:
            out.append(before + turn.text)
            before = ""
    return out


class TrlStepwise(ExportFormat):
    name = "trl-stepwise"
    like = "TRL's stepwise supervision format (PRMTrainer)"
    data_file = DATA_FILE
    rows_are = "answered sessions with a judgment of every step"
    needs_judgments = True

    def row(self, sample: Sample) -> dict[str, Any]:
        return {
            "id": sample.id,
            "prompt": training_text(sample.turns[0], first=True),
            "completions": completions(sample),
            "labels": labels(sample),
            "images": sample.images,
        }

    def usage(self, dataset: str) -> str:
        return (
            "A stepwise-supervision dataset (TRL's `prompt`, `completions`, `labels`), with the images beside it.\n"
            "With `datasets`, images decoded:\n\n"
            f"```python\n{LOAD}```\n\n"
            "TRL's `PRMTrainer` (in `trl.experimental.prm` up to TRL 1.13; later releases removed it) trains a\n"
            "text process reward model on it: it puts each label on the separator after its completion and drops\n"
            "the images, so the `<image>` placeholders are read as words:\n\n"
            f"```python\n{TRAIN}```\n"
        )


FORMAT = TrlStepwise()
