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
            "LLaVA-NeXT (LLaVA-VL/LLaVA-NeXT `llava/train/train_mem.py`, the code TACO's Qwen2 checkpoints were\n"
            "trained with; TACO's `llava/scripts/train/finetune_onevision_from_mid_stage.sh`) reads `data.json`\n"
            "as it is, with the images under `--image_folder`:\n\n"
            "```bash\n"
            "torchrun --nproc_per_node=8 llava/train/train_mem.py --deepspeed scripts/zero3.json \\\n"
            "    --model_name_or_path lmms-lab/llava-onevision-qwen2-7b-mid-stage-a4 --version qwen_1_5 \\\n"
            "    --data_path EXPORT/data.json --image_folder EXPORT \\\n"
            "    --vision_tower google/siglip-so400m-patch14-384 --mm_projector_type mlp2x_gelu --mm_vision_select_layer -2 \\\n"
            "    --mm_use_im_start_end False --mm_use_im_patch_token False --mm_patch_merge_type spatial_unpad \\\n"
            "    --image_aspect_ratio anyres_max_9 --image_grid_pinpoints \"(1x1),...,(6x6)\" \\\n"
            "    --mm_tunable_parts mm_mlp_adapter,mm_language_model --bf16 True --output_dir OUT ...\n"
            "```\n\n"
            "`--version llava_llama_3` reads it the same way for a Llama-3 language model.\n\n"
            "With `datasets`, images decoded:\n\n"
            f"```python\n{loading_code(self.data_file, 'image')}```\n"
        )


FORMAT = CotaLlava()
