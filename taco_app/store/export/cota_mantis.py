"""``cota-mantis``: rows like Salesforce/cota-mantis, the data TACO's Mantis checkpoints were trained on.

A row is what TACO's pipeline (``convert_openai_data_to_mantis_format``) builds from the same
conversation: the goal before the first user turn, every message written part by part, and
``metadata`` exactly ``{dataset, task_instruction}``. Where a row came from is in the export's
``provenance.jsonl``, keyed by the row's id.
"""

from __future__ import annotations

from typing import Any

from taco_app.cota.training import goal, training_text
from taco_app.store.export.base import ExportFormat, Sample, loading_code

MANTIS_CONFIG = "mantis_data.yaml"


def conversation(sample: Sample) -> list[dict[str, str]]:
    """The row's turns as TACO's pipeline writes them: ``[{role, content}]``."""
    return [{"role": turn.role, "content": training_text(turn, first=i == 0) if turn.role == "user" else turn.text}
            for i, turn in enumerate(sample.turns)]


class CotaMantis(ExportFormat):
    name = "cota-mantis"
    like = "Salesforce/cota-mantis"
    data_file = "data.jsonl"

    def row(self, sample: Sample) -> dict[str, Any]:
        return {
            "id": sample.id,
            "conversation": conversation(sample),
            "metadata": {"dataset": sample.dataset, "task_instruction": goal()},
            "images": sample.images,
        }

    def files(self, dataset: str) -> dict[str, str]:
        return {MANTIS_CONFIG: (
            "# Mantis data config (mantis/train/data.py, load_data_from_config): --data_config_file mantis_data.yaml\n"
            "# `path` is read from the folder training starts in: start there, or make it absolute.\n"
            "data:\n"
            "  - path: data.jsonl\n"
            f"    name: {dataset}\n"
            "    split: train\n"
            "    type: json\n"
            "    format: chat\n"
        )}

    def usage(self, dataset: str) -> str:
        return (
            "Mantis (TIGER-AI-Lab/Mantis, the code TACO's Llama-3 checkpoints were trained with; TACO's\n"
            "`mantis/train/scripts/train_mllava_siglip.sh`) reads the export through `mantis_data.yaml`, whose\n"
            "`path` is relative to the folder training starts in. With Mantis installed (`pip install -e .`\n"
            "in its clone, `MANTIS`):\n\n"
            "```bash\n"
            "cd EXPORT\n"
            "accelerate launch --config_file MANTIS/mantis/train/accelerate_configs/accelerate_config_zero3.yaml \\\n"
            "    MANTIS/mantis/train/train_mllava.py --model_name_or_path TIGER-Lab/Mantis-8B-siglip-llama3-pretraind \\\n"
            "    --data_config_file mantis_data.yaml --conv_template llama_3 --max_seq_len 8192 --bf16 True \\\n"
            "    --num_train_epochs 1 --learning_rate 1e-5 --per_device_train_batch_size 1 --output_dir OUT --do_train\n"
            "```\n\n"
            "With `datasets`, images decoded:\n\n"
            f"```python\n{loading_code(self.data_file, 'images')}```\n"
        )


FORMAT = CotaMantis()
