"""Convert an original LLaVA-NeXT ``llava_qwen`` checkpoint into a transformers LLaVA-OneVision one.

``Salesforce/qwen2-siglip-llava-ov-taco-7b`` was saved by LLaVA-NeXT: a Qwen2 config with ``mm_*`` keys
and weights named ``model.layers.*``, ``model.vision_tower.vision_tower.*``, ``model.mm_projector.0/2.*``,
``model.image_newline``, ``lm_head``, which transformers cannot load. :func:`convert` writes the same
weights renamed, with a ``LlavaOnevisionConfig`` and ``LlavaOnevisionProcessor``. It follows
transformers' own ``convert_llava_onevision_weights_to_hf.py`` (same renames, SigLIP minus its last
layer read at -1, ``<image>``/``<video>`` tokens) but streams one shard at a time and checks every
setting it can against the weight shapes. Output keys use the layout of the published
``llava-hf/llava-onevision-*`` checkpoints, which transformers 4.45+ and 5.x both load.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taco_app.backends.transformers.shards import (
    SHARD_BYTES, ConversionError, Tensor, read_headers, read_json, write_shards,
)

TOWER = "model.vision_tower.vision_tower.vision_model."  # LLaVA-NeXT: tower wrapper → SiglipVisionModel
DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}

# Settings for towers that are not on this machine. The number of heads cannot be read from the
# weight shapes, so it comes from here (or from the tower's own config.json when it is cached).
# Source: google/siglip-so400m-patch14-384's config.json on the Hub, which LLaVA-NeXT's
# SigLipVisionConfig defaults repeat; the layer count is the tower's, before LLaVA-NeXT drops one.
KNOWN_TOWERS = {
    "google/siglip-so400m-patch14-384": {
        "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
        "patch_size": 14, "image_size": 384, "num_channels": 3, "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6},
}
TOWER_KEYS = tuple(KNOWN_TOWERS["google/siglip-so400m-patch14-384"])
# LLaVA-NeXT's SigLipVisionTower preprocesses with its own SigLipImageProcessor() (mean/std 0.5,
# bicubic, 1/255) whatever the tower's preprocessor_config.json says: do what the model was trained on.
LLAVA_NEXT_PIXELS = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "resample": 3, "rescale_factor": 1 / 255}

# Qwen chat format; images and videos as their placeholder and a newline, where they occur.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\\n' }}{% elif part['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def convert(src: str | Path, dst: str | Path, *, progress: Callable[[str], None] | None = None,
            shard_bytes: int = SHARD_BYTES) -> Path:
    """Convert the llava_qwen checkpoint at ``src`` (folder or cached Hub id) into ``dst``; returns ``dst``."""
    say = progress or (lambda _line: None)
    source = _source_folder(src)
    dst = Path(dst).expanduser().resolve()
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConversionError(f"{dst} exists and is not an empty folder: give a new or empty folder as the destination")
    config = read_json(source / "config.json")
    _check_layout(config)
    tensors = read_headers(source)
    say(f"source: llava_qwen checkpoint {source} ({len(tensors)} tensors)")
    vision, origin = _vision_settings(config, tensors)
    say(f"vision tower {config['mm_vision_tower']}: {vision['num_hidden_layers']} encoder layers, "
        f"{vision['num_attention_heads']} heads (from {origin}), {vision['image_size']} px, "
        f"patch {vision['patch_size']}")
    tokenizer, added = _tokenizer(source)
    if added:
        say(f"tokenizer: added {', '.join(added)}")
    vocab, skipped = _plan(tensors, config, vision, len(tokenizer))
    if skipped:
        say(f"left out {len(skipped)} tensors LLaVA-NeXT never ran (pooling head, dropped layer, rotary buffers)")
    hf_config = _hf_config(config, vision, tensors, vocab, tokenizer)

    dst.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".converting", dir=dst.parent))
    try:  # everything goes to a sibling folder, renamed at the end: a failure leaves no half checkpoint
        write_shards([t for t in tensors.values() if t.target], work, shard_bytes, say)
        hf_config.save_pretrained(work)
        _processor(tokenizer, vision, hf_config).save_pretrained(work)
        if (source / "generation_config.json").is_file():
            shutil.copyfile(source / "generation_config.json", work / "generation_config.json")
        _follow_umask(work)
        if dst.exists():
            dst.rmdir()  # checked empty above
        work.rename(dst)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    say(f"done: {dst}")
    return dst


def _follow_umask(folder: Path) -> None:
    """mkdtemp and safetensors make owner-only entries (0700, 0600); give the checkpoint the usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _source_folder(src: str | Path) -> Path:
    from taco_app.weights import local_path

    folder = Path(src).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise ConversionError(f"{folder} has no config.json: it is not a model folder")
    found = local_path(str(src))
    if found is None:
        raise ConversionError(f"{src} is neither a local model folder nor a model in the Hugging Face cache: download "
                              f"it first (`python app.py download --taco`, or `huggingface-cli download {src}`)")
    return found.resolve()


def _check_layout(config: dict[str, Any]) -> None:
    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    found = f"model_type {model_type!r}, architectures {archs}"
    if model_type == "llava_onevision" or "LlavaOnevisionForConditionalGeneration" in archs:
        raise ConversionError(f"the source is already a LLaVA-OneVision checkpoint ({found}): it loads with "
                              "LlavaOnevisionForConditionalGeneration as it is, there is nothing to convert")
    if "mm_vision_tower" not in config:
        raise ConversionError(f"the source is not an original LLaVA-NeXT llava_qwen checkpoint ({found}, no mm_* "
                              "keys); `convert` only turns llava_qwen checkpoints such as "
                              "Salesforce/qwen2-siglip-llava-ov-taco-7b into LLaVA-OneVision. A checkpoint "
                              "transformers already loads needs no conversion")
    if not (any("Qwen" in a for a in archs) or (not archs and model_type in ("qwen2", "llava_qwen"))):
        raise ConversionError(f"the source is a LLaVA-NeXT checkpoint with another text model ({found}); only "
                              "llava_qwen (Qwen2) checkpoints convert to LLaVA-OneVision")
    problems = [f"{key} {config.get(key)!r} (LLaVA-OneVision has {want})" for key, want, ok in (
        ("mm_projector_type", "mlp2x_gelu", config.get("mm_projector_type") == "mlp2x_gelu"),
        ("image_aspect_ratio", "anyres_max_N", re.fullmatch(r"anyres_max_\d+", str(config.get("image_aspect_ratio")))),
        ("mm_patch_merge_type", "spatial_unpad", "spatial_unpad" in str(config.get("mm_patch_merge_type"))),
    ) if not ok]
    if problems:
        raise ConversionError("this llava_qwen checkpoint does not map onto LLaVA-OneVision: " + "; ".join(problems))


def _shape(tensors: dict[str, Tensor], key: str) -> list[int]:
    if key not in tensors:
        raise ConversionError(f"the checkpoint has no {key}: it is not a complete llava_qwen checkpoint")
    return tensors[key].shape


def _vision_settings(config: dict[str, Any], tensors: dict[str, Tensor]) -> tuple[dict[str, Any], str]:
    """SiglipVisionConfig settings that make the converted tower compute what LLaVA-NeXT's did, and their source."""
    name = str(config["mm_vision_tower"])
    base = Path(name).name.lower()  # LLaVA-NeXT picks the tower class by name, CLIP first
    if "clip" in base or base.startswith(("openai", "laion")) or "siglip" not in base:
        raise ConversionError(f"mm_vision_tower {name!r} is not a SigLIP tower; only SigLIP llava_qwen checkpoints "
                              "(LLaVA-OneVision's tower) are supported")
    if not any(k.startswith(TOWER) for k in tensors):
        raise ConversionError(f"the checkpoint has no vision tower weights ({TOWER}*)")
    hidden, channels, patch, _ = _shape(tensors, TOWER + "embeddings.patch_embedding.weight")
    positions = _shape(tensors, TOWER + "embeddings.position_embedding.weight")[0]
    side = math.isqrt(positions)
    if side * side != positions:
        raise ConversionError(f"the vision tower has {positions} position embeddings, not a square grid")
    shapes = {"hidden_size": hidden, "intermediate_size": _shape(tensors, TOWER + "encoder.layers.0.mlp.fc1.weight")[0],
              "patch_size": patch, "num_channels": channels}
    layer = re.compile(re.escape(TOWER) + r"encoder\.layers\.(\d+)\.")
    stored = {int(m.group(1)) for k in tensors if (m := layer.match(k))}

    settings, origin = _tower_config(name)
    if settings is None:
        # By folder name too: training machines often point mm_vision_tower at a local copy.
        known = next((v for k, v in KNOWN_TOWERS.items() if Path(k).name == Path(name).name), None)
        if known is None or any(known[k] != v for k, v in shapes.items()) or known["image_size"] // patch != side:
            raise ConversionError(
                f"the vision tower {name} is not on this machine and its settings are not known here (the number of "
                f"attention heads cannot be read from the weights): download it (`huggingface-cli download {name}`) "
                "or set mm_vision_tower in the source config.json to a local copy")
        settings, origin = known, "the built-in table for " + name
    for key, actual in shapes.items():
        if settings.get(key) is not None and settings[key] != actual:
            raise ConversionError(f"the vision tower's {key} is {settings[key]} in {origin}, "
                                  f"but the checkpoint's weights have {actual}")
    image_size = settings["image_size"]  # 384 px at patch 14 is a 27-patch side (378 px used), so not from shapes
    if image_size // patch != side:
        raise ConversionError(f"the vision tower's image_size is {image_size} in {origin}, but the checkpoint has "
                              f"{side}x{side} position embeddings for patch size {patch}")
    # LLaVA-NeXT's SigLipVisionTower deletes the tower's last encoder layer and reads hidden_states[-1]
    # (before post_layernorm), whatever mm_vision_select_layer says; the checkpoint stores the shortened
    # tower. So: the tower's own layer count minus one, read at vision_feature_layer -1.
    layers = settings["num_hidden_layers"] - 1
    if stored != set(range(len(stored))) or len(stored) < layers:
        raise ConversionError(f"the checkpoint stores vision encoder layers {sorted(stored)}, "
                              f"but the original model runs layers 0..{layers - 1}")
    if hidden % settings["num_attention_heads"]:
        raise ConversionError(f"{origin} gives {settings['num_attention_heads']} attention heads, which do not divide "
                              f"the hidden size {hidden}")
    return {**settings, **shapes, "num_hidden_layers": layers}, origin


def _tower_config(name: str) -> tuple[dict[str, Any] | None, str]:
    """The tower's own vision settings when it is a local folder or in the HF cache (full SigLIP or vision-only)."""
    from taco_app.weights import local_path

    folder = local_path(name)
    if folder is None:
        return None, ""
    from transformers import SiglipVisionConfig

    raw = read_json(folder / "config.json")
    if raw.get("model_type") == "siglip":  # a full SigLIP (google's): the tower is its vision half
        raw = raw.get("vision_config") or {}
    elif raw.get("model_type") != "siglip_vision_model":
        raise ConversionError(f"{folder} holds a {raw.get('model_type')!r} model, not a SigLIP vision tower")
    tower = SiglipVisionConfig(**{k: raw[k] for k in TOWER_KEYS if k in raw})  # transformers' defaults for the rest
    return {k: getattr(tower, k) for k in TOWER_KEYS}, f"{folder / 'config.json'}"


def _tokenizer(folder: Path):
    """The source tokenizer with ``<image>`` and ``<video>`` as special tokens (LLaVA-NeXT used id -200 instead)."""
    from transformers import AddedToken, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConversionError(f"cannot load the tokenizer in {folder}: {err}") from err
    vocab = tokenizer.get_vocab()
    added = [t for t in ("<image>", "<video>") if t not in vocab]
    for token in added:  # one by one, so <image> gets the lower id, as in llava-hf's conversions
        tokenizer.add_tokens([AddedToken(token, special=True, normalized=False)], special_tokens=True)
    return tokenizer, [f"{t} (id {tokenizer.convert_tokens_to_ids(t)})" for t in added]


def _plan(tensors: dict[str, Tensor], config: dict[str, Any], vision: dict[str, Any], tokens: int
          ) -> tuple[int, list[str]]:
    """Name each tensor's target (or leave it out); returns the vocabulary size and what was left out."""
    skipped = []
    for t in tensors.values():
        t.target = _target(t.key, vision["num_hidden_layers"])
        if not t.target:
            skipped.append(t.key)
    rows, hidden = _shape(tensors, "model.embed_tokens.weight")
    if config.get("hidden_size") != hidden:
        raise ConversionError(f"config.json says hidden_size {config.get('hidden_size')}, the embeddings have {hidden}")
    if not config.get("tie_word_embeddings"):
        _shape(tensors, "lm_head.weight")
    expected = {"model.mm_projector.0.weight": [hidden, vision["hidden_size"]],
                "model.mm_projector.2.weight": [hidden, hidden], "model.image_newline": [hidden]}
    for key, shape in expected.items():
        if _shape(tensors, key) != shape:
            raise ConversionError(f"{key} has shape {tensors[key].shape}, expected {shape}")
    vocab = rows
    if tokens > rows:
        # Qwen2 leaves spare rows (152064 for 151646 tokens), so the real TACO checkpoint never grows.
        # Otherwise pad to a multiple of 64, as transformers' conversion does; the new rows are the
        # mean row: <image>/<video> embeddings are replaced by image features anyway.
        vocab = -(-tokens // 64) * 64
        for key in ("model.embed_tokens.weight", "lm_head.weight"):
            if key in tensors:
                tensors[key].grow_to = vocab
                tensors[key].nbytes = tensors[key].nbytes // rows * vocab
    return vocab, skipped


def _target(key: str, vision_layers: int) -> str:
    """The llava-hf name of an original weight, or "" for weights the original model did not use."""
    if key.endswith("rotary_emb.inv_freq"):
        return ""  # a buffer some older Qwen2 saves kept; recomputed at load
    if key.startswith(TOWER):
        rest = key[len(TOWER):]
        layer = re.match(r"encoder\.layers\.(\d+)\.", rest)
        if rest.startswith("head.") or (layer and int(layer.group(1)) >= vision_layers):
            return ""  # the pooling head and the dropped last layer (LLaVA-NeXT deletes both at load)
        return "vision_tower.vision_model." + rest
    projector = re.fullmatch(r"model\.mm_projector\.([02])\.(weight|bias)", key)
    if projector:
        return f"multi_modal_projector.linear_{1 if projector.group(1) == '0' else 2}.{projector.group(2)}"
    if key == "model.image_newline":
        return "image_newline"
    if key == "lm_head.weight":
        return "language_model.lm_head.weight"
    if re.match(r"model\.(embed_tokens|layers|norm)\.", key):
        return "language_model." + key
    raise ConversionError(f"unexpected weight {key!r}: this checkpoint has parts LLaVA-OneVision does not (a "
                          "resampler, a deeper projector?), so it cannot be converted faithfully")


def _hf_config(config: dict[str, Any], vision: dict[str, Any], tensors: dict[str, Tensor], vocab: int, tokenizer):
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    dtype = DTYPES.get(tensors["model.embed_tokens.weight"].dtype, "float32")  # the dtype the weights are stored in
    text_keys = set(Qwen2Config().to_dict()) | {"rope_theta", "rope_scaling"}
    text_keys -= {"architectures", "model_type", "_name_or_path", "transformers_version", "dtype", "id2label",
                  "label2id", "vocab_size"}
    text = Qwen2Config(**{k: v for k, v in config.items() if k in text_keys}, vocab_size=vocab, dtype=dtype)
    layers = {int(t.key.split(".")[2]) for t in tensors.values() if t.key.startswith("model.layers.")}
    if len(layers) != text.num_hidden_layers:
        raise ConversionError(f"config.json says {text.num_hidden_layers} text layers, the weights have {len(layers)}")
    hf = LlavaOnevisionConfig(
        text_config=text, vision_config=SiglipVisionConfig(**vision, vision_use_head=False, dtype=dtype),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1, vision_feature_select_strategy="full",  # all 729 SigLIP patches, no CLS to drop
        projector_hidden_act="gelu",  # LLaVA-NeXT's mlp2x_gelu: Linear, nn.GELU() (exact), Linear
        multimodal_projector_bias=True,
        image_grid_pinpoints=_pinpoints(config.get("image_grid_pinpoints"), vision["image_size"]),
        vision_aspect_ratio=config["image_aspect_ratio"],
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)), dtype=dtype)
    hf.architectures = ["LlavaOnevisionForConditionalGeneration"]
    return hf


def _pinpoints(value: Any, image_size: int) -> list[list[int]]:
    """LLaVA-NeXT's grid (``[width, height]`` pairs or a "(1x1),...,(6x6)" string) as ``[height, width]`` pairs."""
    if isinstance(value, str):
        pairs = [(int(a), int(b)) for a, b in re.findall(r"\((\d+)x(\d+)\)", value)]
        if not pairs:
            raise ConversionError(f"cannot read image_grid_pinpoints {value!r}")
        if "..." in value:  # a range, expanded as LLaVA-NeXT's train.py does
            (a0, b0), (a1, b1) = pairs[0], pairs[-1]
            pairs = [(a, b) for a in range(a0, a1 + 1) for b in range(b0, b1 + 1)]
        value = [[a * image_size, b * image_size] for a, b in pairs]
    if not value:
        raise ConversionError("config.json has no image_grid_pinpoints, which anyres needs")
    # LLaVA-NeXT's select_best_resolution reads each pair as (width, height); transformers' reads
    # (height, width). Swapping keeps the same candidates in the same order, so ties break alike.
    return [[int(h), int(w)] for w, h in value]


def _processor(tokenizer, vision: dict[str, Any], hf_config):
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    size = {"height": vision["image_size"], "width": vision["image_size"]}
    images = LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=hf_config.image_grid_pinpoints,
                                          do_pad=True, do_convert_rgb=True, **LLAVA_NEXT_PIXELS)
    videos = LlavaOnevisionVideoProcessor(size=size, do_convert_rgb=True, **LLAVA_NEXT_PIXELS)
    return LlavaOnevisionProcessor(
        image_processor=images, tokenizer=tokenizer, video_processor=videos,
        num_image_tokens=(vision["image_size"] // vision["patch_size"]) ** 2,  # a feature a patch: 729 for so400m
        vision_feature_select_strategy=hf_config.vision_feature_select_strategy, chat_template=CHAT_TEMPLATE,
        image_token="<image>", video_token="<video>", vision_aspect_ratio=hf_config.vision_aspect_ratio)


