"""``cota-llava``: rows like Salesforce/cota-llava (LLaVA's ``conversations`` with human/gpt speakers)."""

from __future__ import annotations

from typing import Any

from taco_app.store.export.base import DATASET, Sample


class CotaLlava:
    name = "cota-llava"
    like = "Salesforce/cota-llava"

    def row(self, sample: Sample) -> dict[str, Any]:
        return {
            "sample_id": sample.session.id,
            "image": sample.images,
            "conversations": [{"from": "human" if t.role == "user" else "gpt", "value": t.text} for t in sample.turns],
            "choice_list": None,
            "metadata": {"dataset": DATASET, "task_instruction": sample.session.question},
        }


FORMAT = CotaLlava()
