"""``cota-mantis``: rows like Salesforce/cota-mantis, the data TACO's Mantis checkpoints were trained on."""

from __future__ import annotations

from typing import Any

from taco_app.store.export.base import DATASET, Sample


class CotaMantis:
    name = "cota-mantis"
    like = "Salesforce/cota-mantis"

    def row(self, sample: Sample) -> dict[str, Any]:
        session, notes = sample.session, sample.notes
        return {
            "id": session.id,
            "images": sample.images,
            "conversation": [{"role": t.role, "content": t.text} for t in sample.turns],
            "metadata": {
                "dataset": DATASET, "task_instruction": session.question, "model": session.model,
                "backend": session.backend, "family": session.family,
                "corrected": notes.corrected, "rating": notes.rating,
            },
        }


FORMAT = CotaMantis()
