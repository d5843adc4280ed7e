"""A tiny random TACO-Mantis checkpoint: the real layout and config switches, at toy size.

Like ``Salesforce/llama3-siglip-mantis-taco-8b`` it is a ``LlavaForConditionalGeneration`` with a
Llama text model and a SigLIP vision tower (384 px, patch 14: 729 patches, 728 image tokens under
``vision_feature_select_strategy="default"``), ``vision_feature_layer=-2``, ``<image>`` and
``<pad>`` as the two ids after the base vocabulary, and processor files that name Mantis's
``MLlavaProcessor`` — a class transformers does not know. ``tower="clip"`` gives the CLIP ViT-L/14-336
variant (a CLS token, 576 image tokens). Widths are multiples of 64 so bitsandbytes can quantise it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny import chat_tokenizer

SEED = 1234
HIDDEN = 64
# ``size="real"``: the published Mantis-8B shapes (Llama-3-8B-Instruct + SigLIP so400m/14-384), for
# benchmarks with random weights. The tokenizer stays the tiny one; the vocabulary keeps its real size.
REAL_TEXT = dict(vocab_size=128258, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=8192,
                 rope_theta=500000.0, rms_norm_eps=1e-5)
REAL_SIGLIP = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, patch_size=14)


def config(tokenizer, tower: str = "siglip", size: str = "tiny"):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, SiglipVisionConfig

    vision = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=3, num_attention_heads=4, patch_size=14)
    if size == "real":
        if tower != "siglip":
            raise ValueError("the real-size build is the SigLIP checkpoint")
        vision = REAL_SIGLIP
    if tower == "siglip":
        vision_config = SiglipVisionConfig(image_size=384, hidden_act="gelu_pytorch_tanh", **vision)
    elif tower == "clip":
        vision_config = CLIPVisionConfig(image_size=336, projection_dim=HIDDEN, hidden_act="quick_gelu", **vision)
    else:
        raise ValueError(f"unknown tower {tower!r}")
    text_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=500000.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.convert_tokens_to_ids("<|eot_id|>"),
    )
    if size == "real":
        text_config = LlamaConfig(**{**text_config.to_dict(), **REAL_TEXT})
    return LlavaConfig(
        vision_config=vision_config, text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=tokenizer.pad_token_id,
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )


def image_processor(tower: str = "siglip"):
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    if tower == "siglip":  # google/siglip-so400m-patch14-384's settings
        return SiglipImageProcessor(size={"height": 384, "width": 384}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})


def build(folder: Path, tower: str = "siglip", size: str = "tiny", device: str = "cpu") -> Path:
    """Write the checkpoint (weights, config, tokenizer, image processor) to ``folder``.

    ``size="real"`` builds the 8B model (16 GB in bf16): pass ``device="cuda"`` to initialise it fast.
    """
    import torch
    from transformers import LlavaForConditionalGeneration

    folder = Path(folder)
    tokenizer = chat_tokenizer.build(folder, "mantis")
    torch.manual_seed(SEED)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16 if size == "real" else torch.float32)  # 16 GB, not 32, for the real one
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config(tokenizer, tower, size)).eval()
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(folder)
    del model
    image_processor(tower).save_pretrained(folder)
    # Mantis's training code saved its own processor class name next to the settings.
    for name in ("preprocessor_config.json", "tokenizer_config.json"):
        path = folder / name
        data = json.loads(path.read_text())
        data["processor_class"] = "MLlavaProcessor"
        path.write_text(json.dumps(data, indent=2))
    return folder
