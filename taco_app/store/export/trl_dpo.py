"""``trl-dpo``: preference rows in TRL's conversational vision format, what ``DPOTrainer`` trains on.

A row is ``{"id", "prompt", "chosen", "rejected", "images"}``. ``prompt`` is the history the two
answers share (messages of typed parts, written in the words TACO's pipeline trains on, exactly as
a trl-sft row writes the same turns); ``chosen`` and ``rejected`` are the two different assistant
steps, each a one-message list ``[{"role": "assistant", "content": [{"type": "text", "text": step}]}]``;
``images`` are the prompt's images, in the order of its image parts. Which pairs there are, and
their rules, is :mod:`.pairs`.

``--pair trajectory`` makes ``chosen`` and ``rejected`` the whole rests of the two traces from that
step: assistant steps and the observations between them, to each one's last reply. TRL's DPO takes
images in the prompt only (its collator fills the prompt's image parts and no others), so a pair whose
rest shows an image (a ZoomIn, a Crop) is left out. The observations in a rest are part of the
completion TRL scores, as DPO scores a whole completion: step pairs are the default for that reason.

A pair the same as an earlier one is written once; when two judgments rank the same two steps both
ways, the stronger source's pair is kept (:data:`~.pairs.SOURCES`). Both are counted in the summary.
The filters choose a pair's chosen session; every judgment in the store is weighed all the same, so a
filtered export holds the rows of the whole export whose chosen session the filters chose.
"""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Iterator

from taco_app import __version__
from taco_app.store.export.base import Batch, ExportFormat, Left, Made, loading_code, session_provenance
from taco_app.store.export.pairs import MODES, Pair, build, candidates
from taco_app.store.export.rebuild import Skip
from taco_app.store.export.trl_sft import turn_messages

DATA_FILE = "data.jsonl"
LOAD = loading_code(DATA_FILE, "images")  # the card's code, which the tests run as it stands

# max_length=None: DPOTrainer keeps the start of a row longer than max_length (1024 tokens by default),
# which would cut TACO's long prompts' completions away.
TRAIN = (
    "from trl import DPOConfig, DPOTrainer\n"
    "\n"
    "trainer = DPOTrainer(\n"
    "    model=\"Qwen/Qwen2.5-VL-3B-Instruct\",\n"
    "    args=DPOConfig(output_dir=\"taco-dpo\", max_length=None),\n"
    "    train_dataset=dataset,\n"
    ")\n"
    "trainer.train()\n"
)


def row_id(dataset: str, pair: Pair) -> str:
    c = pair.candidate
    if c.source == "correction":
        return f"{dataset}-{c.chosen.id}-step{pair.step}-corrected"
    return f"{dataset}-{c.chosen.id}-over-{c.rejected.id}-step{pair.step}"


class TrlDpo(ExportFormat):
    name = "trl-dpo"
    like = "TRL's conversational vision preference format (DPOTrainer)"
    data_file = DATA_FILE
    unit = "pair"
    rows_are = "preference pairs"
    targets = (
        "**Pairs** come from people's judgments: a preference between two sessions, a step corrected in Review, "
        "a fork that replaced a step, and two sessions on the same question and images rated up and down. The "
        "prompt's steps and the chosen step are clean targets, corrections applied; the rejected step is what the "
        "model wrote, kept as written even when it is not a CoTA step in JSON."
    )
    provenance_holds = ("where the pair came from: a preference, a correction, a fork or two ratings; the step "
                        "where the two differ; both sessions, with their model, backend, ratings and corrections; "
                        "app version")
    needs_judgments = True
    options = MappingProxyType({"pair": MODES})

    def rows(self, batch: Batch) -> Iterator[Made | Left]:
        """The pairs whose chosen session the filters chose; every judgment is weighed, chosen or not."""
        mode = batch.options["pair"]
        chosen_ids = {session.id for session in batch.selected}
        accepted: set[str] = set()  # each pair kept, (prompt, images, chosen, rejected), exported or not
        written: dict[str, str] = {}  # each pair exported → its row id
        for candidate in candidates(batch):
            selected = candidate.chosen_id in chosen_ids
            try:
                pair = build(candidate, batch, mode)
                images = batch.image_paths(candidate.chosen, pair.image_ids)
            except Skip as skip:
                if selected:
                    yield Left(candidate.what, skip)
                continue
            row = {
                "id": row_id(batch.dataset, pair),
                "prompt": turn_messages(pair.prompt),
                "chosen": turn_messages(pair.chosen, first=False),
                "rejected": turn_messages(pair.rejected, first=False),
                "images": images,
            }
            key = json.dumps([row["prompt"], images, row["chosen"], row["rejected"]])
            if json.dumps([row["prompt"], images, row["rejected"], row["chosen"]]) in accepted:
                if selected:
                    yield Left(candidate.what, Skip("contradicted", f"step {pair.step}"))
                continue
            accepted.add(key)
            if not selected:
                continue
            if key in written:
                yield Left(candidate.what, Skip("duplicate", written[key]))
                continue
            written[key] = row["id"]
            chosen, rejected = candidate.chosen, candidate.rejected
            yield Made(row, {
                "id": row["id"], "source": candidate.source, "pair": mode, "step": pair.step,
                candidate.source: candidate.detail,
                "chosen": session_provenance(chosen, batch.notes(chosen)),
                "rejected": session_provenance(rejected, batch.notes(rejected)),
                "app_version": __version__,
            }, images, sorted({chosen.model or "unknown", rejected.model or "unknown"}))

    def usage(self, dataset: str) -> str:
        return (
            "Hugging Face TRL (`trl.DPOTrainer`, conversational vision preference rows) reads `data.jsonl` once\n"
            "the image paths, relative to this folder, are joined to it and decoded:\n\n"
            f"```python\n{LOAD}```\n\n"
            "Then train a vision-language model on it:\n\n"
            f"```python\n{TRAIN}```\n"
        )


FORMAT = TrlDpo()
