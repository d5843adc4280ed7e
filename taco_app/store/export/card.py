"""The export's dataset card (``README.md``) and provenance sidecar (``provenance.jsonl``).

The card makes the folder a Hugging Face dataset repository: YAML metadata (licence, the data file
as the ``train`` split), then what is in it, the filters, the counts and why sessions were left out,
the source models and their licences, and how each trainer reads it. Nothing in it depends on the
time or the folder, so the same database gives the same card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from taco_app import __version__
from taco_app.store.export.base import ExportFormat
from taco_app.store.export.rebuild import REASONS

PROVENANCE = "provenance.jsonl"
LICENCE = (
    "TACO's prompt and training-row format and checkpoints: CC-BY-NC-4.0 (SalesforceAIResearch/TACO); "
    "images: as provided by the people who uploaded them"
)
# What is known of the models that write sessions; any other model's licence is its own card's.
_MODEL_LICENCES = {
    "Salesforce/llama3-siglip-mantis-taco-8b": "CC-BY-NC-4.0, built with Meta Llama 3 (Meta Llama 3 Community License)",
    "Salesforce/llama3-clip-pretrained-mantis-taco-8b": "CC-BY-NC-4.0, built with Meta Llama 3 (Meta Llama 3 Community License)",
    "Salesforce/qwen2-siglip-llava-ov-taco-7b": "CC-BY-NC-4.0, built on Qwen2 (Apache-2.0)",
}


@dataclass(frozen=True)
class Counts:
    rows: int
    images: int
    skipped: dict[str, int]  # reason (a key of REASONS) → sessions (or pairs) left out
    models: dict[str, int]  # model id → rows


def card(fmt: ExportFormat, dataset: str, counts: Counts, filters: list[str]) -> str:
    skipped = sum(counts.skipped.values())
    lines = [
        "---",
        "license: cc-by-nc-4.0",
        f"pretty_name: {json.dumps(dataset)}",
        "task_categories:",
        "- image-text-to-text",
        "tags:",
        "- taco",
        "- cota",
        "- multimodal",
        "- tool-use",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        f"    path: {fmt.data_file}",
        "---",
        "",
        f"# {dataset}",
        "",
        f"Chains of thought-and-action recorded by TACO Studio {__version__}, as `{fmt.name}` training rows "
        f"(like `{fmt.like}`) in `{fmt.data_file}`, images in `images/`.",
        "",
        f"- **Rows:** {counts.rows} {fmt.rows_are}; {counts.images} distinct images.",
        f"- **Left out:** {skipped} {fmt.unit}(s){':' if skipped else '.'}",
    ]
    lines += [f"  - {n} × {REASONS[reason]}" for reason, n in sorted(counts.skipped.items())]
    lines += [
        f"- **Filters:** {', '.join(filters) if filters else 'none'}.",
        f"- {fmt.targets}",
        f"- **Provenance** of each row ({fmt.provenance_holds}) is in `{PROVENANCE}`, keyed by the row's `id`.",
        "",
        "## Source models",
        "",
    ]
    lines += [f"- `{model}`: {n} row(s); licence: {_MODEL_LICENCES.get(model, 'see the model card')}"
              for model, n in sorted(counts.models.items())] or ["- none"]
    lines += [
        "",
        "## Rows",
        "",
        "Each row holds the text of the row TACO's data pipeline (SalesforceAIResearch/CoTA) builds from the same "
        "conversation: the goal before the first user turn, every message written part by part (a text part and "
        "a newline, an image as `<image>` and a newline; in TRL's conversational rows, `trl-sft` and `trl-dpo`, "
        "an image part stands there instead), "
        "and assistant turns as compact JSON steps. One difference: the pipeline deletes every `json` substring "
        "from assistant turns, which corrupts a thought that mentions JSON; these rows keep it.",
        "",
        "## Training",
        "",
        fmt.usage(dataset).rstrip("\n"),
        "",
        "## Licence",
        "",
        f"{LICENCE}.",
        "",
    ]
    return "\n".join(lines)
