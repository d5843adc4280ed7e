"""``cota-llava``: rows like Salesforce/cota-llava (LLaVA's ``conversations`` with human/gpt speakers).

CoTA converts each cota-mantis row (``convert_mantis_example_into_llava_format``) and writes the
file as one JSON array (``save_data_to_json``), which is what LLaVA-NeXT's ``LazySupervisedDataset``
reads from a ``--data_path`` ending in ``.json``.
"""

from __future__ import annotations

from typing import Any

from taco_app.cota.training import goal
from taco_app.store.export.base import ExportFormat, Sample, loading_code
from taco_app.store.export.cota_mantis import conversation

_SPEAKERS = {"user": "human", "assistant": "gpt"}


class CotaLlava(ExportFormat):
    name = "cota-llava"
    like = "Salesforce/cota-llava"
    data_file = "data.json"

    def row(self, sample: Sample) -> dict[str, Any]:
        return {
            "sample_id": sample.id,
            "image": sample.images,
            "metadata": {"dataset": sample.dataset, "task_instruction": goal()},
            "conversations": [{"from": _SPEAKERS[m["role"]], "value": m["content"]} for m in conversation(sample)],
            "choice_list": None,
        }

    def usage(self, dataset: str) -> str:
        return (
            "LLaVA-NeXT (LLaVA-VL/LLaVA-NeXT `llava/train/train.py`, the code TACO's Qwen2 checkpoints were\n"
            "trained with) reads `data.json` as it is:\n\n"
            "```bash\n"
            "python llava/train/train_mem.py --data_path EXPORT/data.json --image_folder EXPORT \\\n"
            "    --model_name_or_path lmms-lab/llava-onevision-qwen2-7b-si --version qwen_1_5 ...\n"
            "```\n\n"
            "With `datasets`, images decoded:\n\n"
            f"```python\n{loading_code(self.data_file, 'image')}```\n"
        )


FORMAT = CotaLlava()
