"""A tiny random TACO-Qwen2 checkpoint in the ORIGINAL LLaVA-NeXT ``llava_qwen`` layout.

Like ``Salesforce/qwen2-siglip-llava-ov-taco-7b`` before conversion: a Qwen2 ``config.json`` with the
``mm_*`` keys of ``lmms-lab/llava-onevision-qwen2-7b-ov`` (which TACO was fine-tuned from), and
weights under LLaVA-NeXT's names — ``model.layers.*``, ``model.embed_tokens``, ``model.norm``,
``lm_head``, ``model.vision_tower.vision_tower.vision_model.*``, ``model.mm_projector.0/2.*``,
``model.image_newline``. ``mm_vision_tower`` names a tiny SigLIP folder written next to it (config
and preprocessor only, laid out like google/siglip-so400m-patch14-384's). As LLaVA-NeXT does, the
checkpoint stores that tower minus its last encoder layer and without its pooling head.

Every tensor is seeded random (norm weights around 1), so a wrong rename changes the numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny import chat_tokenizer

SEED = 4321
HIDDEN = 64
TOWER_LAYERS = 4  # the tower's own count; the checkpoint keeps TOWER_LAYERS - 1, like 27 → 26
VISION = {"hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN, "num_attention_heads": 4, "patch_size": 14,
          "image_size": 384}
TOWER_PREFIX = "model.vision_tower.vision_tower.vision_model."
# LLaVA-NeXT's (width, height) pairs. Only wide layouts, so a converter that forgets that
# transformers reads (height, width) picks another grid for a landscape photo.
PINPOINTS = [[384, 384], [768, 384], [1152, 384]]


def text_config(vocab_size: int, dtype: str = "float32") -> dict:
    """The text keys of the original config.json (Qwen2, as LLaVA-NeXT's LlavaQwenConfig saves them)."""
    return {
        "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": 2 * HIDDEN, "max_position_embeddings": 32768,
        "max_window_layers": 2, "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 131072,
        "tie_word_embeddings": False, "torch_dtype": dtype, "use_cache": True, "use_sliding_window": False,
        "vocab_size": vocab_size,
    }


def write_tower(folder: Path) -> Path:
    """A SigLIP folder laid out like google/siglip-so400m-patch14-384's: a full SigLIP config, a preprocessor."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["SiglipModel"], "model_type": "siglip", "torch_dtype": "float32",
        "text_config": {"hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN, "model_type": "siglip_text_model",
                        "num_attention_heads": 4, "num_hidden_layers": TOWER_LAYERS},
        "vision_config": {"model_type": "siglip_vision_model", "num_hidden_layers": TOWER_LAYERS, **VISION},
    }
    preprocessor = {
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5],
        "processor_class": "SiglipProcessor",
        "resample": 3, "rescale_factor": 1 / 255, "size": {"height": 384, "width": 384},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return folder


def state_dict(vocab_size: int, dtype: str = "float32") -> dict:
    """Seeded random weights under the original names, shapes taken from the matching HF modules."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    config = text_config(vocab_size)
    config.pop("torch_dtype")
    with torch.device("meta"):  # shapes only; the values come from the generator below
        text = Qwen2ForCausalLM(Qwen2Config(**config))
        # LLaVA-NeXT saves its tower after deleting the last encoder layer and the pooling head.
        tower = SiglipVisionModel(SiglipVisionConfig(num_hidden_layers=TOWER_LAYERS - 1, vision_use_head=False,
                                                     **VISION))
    shapes = {k: v.shape for k, v in text.state_dict().items()}
    shapes |= {TOWER_PREFIX + k: v.shape for k, v in tower.state_dict().items()}
    shapes |= {"model.mm_projector.0.weight": (HIDDEN, HIDDEN), "model.mm_projector.0.bias": (HIDDEN,),
               "model.mm_projector.2.weight": (HIDDEN, HIDDEN), "model.mm_projector.2.bias": (HIDDEN,),
               "model.image_newline": (HIDDEN,)}
    generator = torch.Generator().manual_seed(SEED)
    weights = {}
    for key in sorted(shapes):
        value = torch.randn(shapes[key], generator=generator) * 0.1
        if "norm" in key and key.endswith("weight"):
            value += 1.0
        weights[key] = value.to(getattr(torch, dtype))
    return weights


def build(folder: Path, *, shards: int = 2, spare_rows: int = 0, dtype: str = "float32",
          tower: str | None = None) -> Path:
    """Write the checkpoint to ``folder`` (in ``shards`` safetensors files) and its SigLIP tower beside it.

    ``spare_rows`` leaves unused embedding rows, as Qwen2 does (152064 rows for 151646 tokens); with
    none, adding ``<video>`` forces the converter to grow the vocabulary. ``tower`` overrides
    ``mm_vision_tower`` (e.g. a Hub id that is not cached).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    tokenizer = chat_tokenizer.build(folder, "qwen2")  # has <image> already, not <video>
    tower_folder = write_tower(folder.parent / f"{folder.name}-siglip-tiny-patch14-384")
    vocab_size = len(tokenizer) + spare_rows
    config = {
        "_name_or_path": "tiny/llava-qwen", "architectures": ["LlavaQwenForCausalLM"], "model_type": "qwen2",
        **text_config(vocab_size, dtype),
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "image_aspect_ratio": "anyres_max_9", "image_crop_resolution": None, "image_grid_pinpoints": PINPOINTS,
        "image_split_resolution": None, "mm_hidden_size": HIDDEN, "mm_newline_position": "one_token",
        "mm_patch_merge_type": "spatial_unpad", "mm_projector_lr": None, "mm_projector_type": "mlp2x_gelu",
        "mm_resampler_type": None, "mm_spatial_pool_mode": "bilinear",
        "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model", "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False, "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2,
        "mm_vision_tower": tower or str(tower_folder), "mm_vision_tower_lr": 2e-06,
        "tokenizer_model_max_length": 32768, "tokenizer_padding_side": "right", "transformers_version": "4.40.0.dev0",
        "use_mm_proj": True, "use_pos_skipping": False, "vision_tower_pretrained": None,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"], "max_new_tokens": 2048},
        indent=2))

    weights = state_dict(vocab_size, dtype)
    keys = list(weights)
    if shards == 1:
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i * len(keys) // shards:(i + 1) * len(keys) // shards]
        save_file({k: weights[k] for k in part}, str(folder / name), metadata={"format": "pt"})
        weight_map |= {k: name for k in part}
    total = sum(v.numel() * v.element_size() for v in weights.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder
