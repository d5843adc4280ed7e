"""``convert``: an original llava_qwen checkpoint becomes a LLaVA-OneVision one that computes the same thing.

The tiny source (tests/tiny/llava_qwen.py) is in LLaVA-NeXT's layout. The checks go beyond "it
loads": the converted model's image features are recomputed by hand from the ORIGINAL tensors, the
way LLaVA-NeXT runs them (SigLIP minus its last layer, read before post_layernorm, a GELU MLP, the
anyres grid with LLaVA-NeXT's (width, height) pinpoints, unpadded, a newline per row), and its text
logits are compared with a plain Qwen2 built from the original weights.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from taco_app.backends.transformers.convert import ConversionError, _pinpoints, convert
from tests.tiny import llava_qwen

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "assets" / "examples" / "fuel_prices.png"  # 1024 x 768, landscape
SIDE = 384 // 14  # 27 patches a side, 729 features a view


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The tiny source (two shards, no spare vocabulary rows) converted into several small output shards."""
    base = tmp_path_factory.mktemp("convert")
    src = llava_qwen.build(base / "src", shards=2)
    lines: list[str] = []
    dst = convert(src, base / "dst", progress=lines.append, shard_bytes=300_000)
    return src, dst, lines


@pytest.fixture(scope="module")
def loaded(converted):
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

    src, dst, _ = converted
    model, info = LlavaOnevisionForConditionalGeneration.from_pretrained(dst, output_loading_info=True)
    original = {}
    for shard in sorted(src.glob("*.safetensors")):
        original |= load_file(shard)
    processor = AutoProcessor.from_pretrained(dst)
    inputs = processor(images=Image.open(PHOTO), text="<image>\nHow much gas can I buy with $50?", return_tensors="pt")
    return model.eval(), info, processor, original, inputs


def test_converted_checkpoint_loads_with_plain_transformers(converted, loaded):
    from transformers import LlavaOnevisionProcessor

    src, dst, lines = converted
    model, info, processor, _, _ = loaded
    assert {k: v for k, v in info.items() if v} == {}  # no missing, unexpected or mismatched keys
    assert isinstance(processor, LlavaOnevisionProcessor)
    config = model.config
    assert config.vision_config.num_hidden_layers == llava_qwen.TOWER_LAYERS - 1  # LLaVA-NeXT drops the last
    assert config.vision_config.num_attention_heads == 4  # from the tower's own config.json
    assert (config.vision_feature_layer, config.vision_feature_select_strategy) == (-1, "full")
    assert config.image_grid_pinpoints == [[h, w] for w, h in llava_qwen.PINPOINTS]
    tokenizer = processor.tokenizer
    assert config.image_token_index == tokenizer.convert_tokens_to_ids("<image>") == processor.image_token_id
    assert config.video_token_index == tokenizer.convert_tokens_to_ids("<video>") == len(tokenizer) - 1
    # The tokenizer had no spare row for <video>: the vocabulary grew to a multiple of 64.
    assert config.text_config.vocab_size == 1088 and model.lm_head.weight.shape[0] == 1088
    assert processor.num_image_tokens == SIDE * SIDE
    assert list(processor.image_processor.image_mean) == [0.5, 0.5, 0.5]  # LLaVA-NeXT's SigLIP preprocessing

    index = json.loads((dst / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and all((dst / s).is_file() for s in shards)
    assert sum(line.startswith("wrote ") for line in lines) == len(shards)
    assert (dst / "generation_config.json").read_text() == (src / "generation_config.json").read_text()
    assert not [p for p in dst.parent.iterdir() if p.name.endswith(".converting")]
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in dst.iterdir()} == {0o666 & ~umask}  # not safetensors' owner-only 0600
    assert dst.stat().st_mode & 0o777 == 0o777 & ~umask
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    assert processor.apply_chat_template(chat, add_generation_prompt=True) == (
        "<|im_start|>user\n<image>\nhi<|im_end|>\n<|im_start|>assistant\n")


def _siglip_by_hand(w: dict, pixels, layers: int, heads: int):
    """LLaVA-NeXT's SigLipVisionTower on original tensors: hidden_states[-1], no post_layernorm."""
    import torch.nn.functional as F

    p = llava_qwen.TOWER_PREFIX
    patches = p + "embeddings.patch_embedding"
    x = F.conv2d(pixels, w[patches + ".weight"], w[patches + ".bias"], stride=14)
    x = x.flatten(2).transpose(1, 2) + w[p + "embeddings.position_embedding.weight"]
    batch, n, dim = x.shape

    def linear(name, value):
        return F.linear(value, w[name + ".weight"], w[name + ".bias"])

    def norm(name, value):
        return F.layer_norm(value, (dim,), w[name + ".weight"], w[name + ".bias"], eps=1e-6)

    for i in range(layers):
        layer = f"{p}encoder.layers.{i}."
        h = norm(layer + "layer_norm1", x)
        q, k, v = (linear(f"{layer}self_attn.{n_}_proj", h).view(batch, n, heads, -1).transpose(1, 2) for n_ in "qkv")
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v
        x = x + linear(layer + "self_attn.out_proj", attention.transpose(1, 2).reshape(batch, n, dim))
        x = x + linear(layer + "mlp.fc2", F.gelu(linear(layer + "mlp.fc1", norm(layer + "layer_norm2", x)),
                                                  approximate="tanh"))
    return linear("model.mm_projector.2", F.gelu(linear("model.mm_projector.0", x)))  # mlp2x_gelu, exact GELU


def _llava_next_views(image):
    """LLaVA-NeXT's pixels: the image squashed to 384, then the best (width, height) pinpoint, padded, cut."""
    import numpy as np
    from PIL import Image

    def pixels(img):
        return torch.from_numpy((np.asarray(img, dtype=np.float32) / 255 - 0.5) / 0.5).permute(2, 0, 1)

    def effective(res):  # LLaVA-NeXT's select_best_resolution score
        scale = min(res[0] / image.width, res[1] / image.height)
        used = min(int(image.width * scale) * int(image.height * scale), image.width * image.height)
        return used, -(res[0] * res[1] - used)

    width, height = max(llava_qwen.PINPOINTS, key=effective)  # max keeps the first of equals, as LLaVA-NeXT does
    scale = min(width / image.width, height / image.height)
    new = (min(math.ceil(image.width * scale), width), min(math.ceil(image.height * scale), height))
    canvas = Image.new("RGB", (width, height))
    canvas.paste(image.resize(new), ((width - new[0]) // 2, (height - new[1]) // 2))
    tiles = [canvas.crop((x, y, x + 384, y + 384)) for y in range(0, height, 384) for x in range(0, width, 384)]
    return [pixels(image.resize((384, 384)))] + [pixels(t) for t in tiles], (height // 384, width // 384)


def test_image_features_equal_the_original_computation(loaded):
    from PIL import Image

    model, _, _, original, inputs = loaded
    image = Image.open(PHOTO).convert("RGB")
    views, (rows, cols) = _llava_next_views(image)
    assert (rows, cols) == (1, 2)  # a landscape photo gets the wide 768x384 grid
    pixels = inputs["pixel_values"][0]
    assert pixels.shape[0] == len(views) == 3
    for got, want in zip(pixels, views):  # the processor reproduces LLaVA-NeXT's preprocessing
        assert (got - want).abs().mean() < 1e-3

    with torch.no_grad():
        features = model.model.get_image_features(pixel_values=inputs["pixel_values"],
                                                  image_sizes=inputs["image_sizes"]).pooler_output[0]
        expected = _siglip_by_hand(original, pixels, llava_qwen.TOWER_LAYERS - 1, heads=4)
    dim = expected.shape[-1]
    torch.testing.assert_close(features[: SIDE * SIDE], expected[0], rtol=1e-4, atol=1e-5)  # the base view
    # The tiles side by side, unpadded to the photo's 4:3 (27 x 36 of 27 x 54), one newline per row.
    grid = torch.cat([t.view(SIDE, SIDE, dim) for t in expected[1:]], dim=1)
    width = round(image.width * SIDE / image.height)
    grid = grid[:, (grid.shape[1] - width) // 2:][:, :width]
    packed = features[SIDE * SIDE:].view(SIDE, width + 1, dim)
    torch.testing.assert_close(packed[:, :width], grid, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed[:, width], original["model.image_newline"].expand(SIDE, dim))

    image_tokens = int((inputs["input_ids"] == model.config.image_token_index).sum())
    assert image_tokens == features.shape[0]
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()


def test_text_logits_equal_a_plain_qwen2_on_the_original_weights(converted, loaded):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    src, _, _ = converted
    model, _, processor, original, _ = loaded
    keys = set(llava_qwen.text_config(0)) - {"torch_dtype"}
    config = {k: v for k, v in json.loads((src / "config.json").read_text()).items() if k in keys}
    qwen = Qwen2ForCausalLM(Qwen2Config(**config)).eval()
    multimodal = ("model.vision_tower", "model.mm_projector", "model.image_newline")
    qwen.load_state_dict({k: v for k, v in original.items() if not k.startswith(multimodal)})  # strict: all text keys
    text = "<|im_start|>user\nHow much gas can I buy with $50?<|im_end|>\n"
    ids = processor.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        want = qwen(input_ids=ids).logits
        got = model(input_ids=ids).logits
    rows = want.shape[-1]
    torch.testing.assert_close(got[..., :rows], want, rtol=1e-4, atol=1e-5)


def test_spare_vocabulary_rows_and_stored_dtype_are_kept(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    src = llava_qwen.build(tmp_path / "src", shards=1, spare_rows=63, dtype="bfloat16")
    dst = convert(src, tmp_path / "dst")
    assert not (dst / "model.safetensors.index.json").exists()  # small: one shard, as transformers writes it
    config = json.loads((dst / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == 1088 and config["dtype"] == "bfloat16"
    with safe_open(str(dst / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118 (safe_open has no __iter__)
        embed = f.get_tensor("language_model.model.embed_tokens.weight")
    assert torch.equal(embed, load_file(src / "model.safetensors")["model.embed_tokens.weight"])


def test_refuses_a_destination_that_is_not_empty(converted, tmp_path):
    src, _, _ = converted
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match="not an empty folder"):
        convert(src, tmp_path / "dst")
    assert [p.name for p in tmp_path.iterdir()] == ["dst"] and (tmp_path / "dst" / "notes.txt").read_text() == "mine"


def test_refuses_checkpoints_that_are_not_llava_qwen(converted, tmp_path):
    from tests.tiny import mantis

    with pytest.raises(ConversionError, match=r"not an original LLaVA-NeXT llava_qwen checkpoint.*'llava'"):
        convert(mantis.build(tmp_path / "mantis"), tmp_path / "out1")
    with pytest.raises(ConversionError, match="already a LLaVA-OneVision checkpoint"):
        convert(converted[1], tmp_path / "out2")
    with pytest.raises(ConversionError, match="has no config.json"):
        convert(tmp_path, tmp_path / "out3")
    with pytest.raises(ConversionError, match="neither a local model folder nor a model in the Hugging Face cache"):
        convert("nobody/no-such-model", tmp_path / "out4")
    assert not any(p.name.startswith(("out", ".out")) for p in tmp_path.iterdir())


def test_an_unknown_tower_that_is_not_on_this_machine_is_refused(tmp_path):
    # The tiny weights are not so400m's, so neither the HF cache nor the built-in table may be used for them.
    src = llava_qwen.build(tmp_path / "src", tower="google/siglip-so400m-patch14-384")
    with pytest.raises(ConversionError, match="siglip-so400m-patch14-384"):
        convert(src, tmp_path / "dst")


def test_a_failure_midway_leaves_no_partial_destination(converted, tmp_path):
    src, _, _ = converted
    calls = []

    def interrupted(line: str) -> None:
        calls.append(line)
        if line.startswith("wrote ") and sum(c.startswith("wrote ") for c in calls) == 2:
            raise KeyboardInterrupt  # the person pressed Ctrl-C after the second shard

    with pytest.raises(KeyboardInterrupt):
        convert(src, tmp_path / "dst", progress=interrupted, shard_bytes=300_000)
    assert list(tmp_path.iterdir()) == []

    broken = llava_qwen.build(tmp_path / "broken", shards=2)
    shard = broken / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1000])  # an interrupted download
    with pytest.raises(ConversionError, match="model-00002-of-00002.safetensors is truncated"):
        convert(broken, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".converting")]


def test_grid_pinpoints_in_llava_next_string_form():
    assert _pinpoints("(1x1),...,(2x2)", 384) == [[384, 384], [768, 384], [384, 768], [768, 768]]
    assert _pinpoints("[(1x2)]", 384) == [[768, 384]]
    assert _pinpoints([[768, 384]], 384) == [[384, 768]]  # LLaVA-NeXT (width, height) → (height, width)


# The config.json of lmms-lab/llava-onevision-qwen2-7b-ov (which TACO-Qwen2 was fine-tuned from), as
# TACO's checkpoint has it: model_type "qwen2". Abridged to the keys the conversion reads.
REAL_CONFIG = {
    "architectures": ["LlavaQwenForCausalLM"], "model_type": "qwen2", "bos_token_id": 151643, "eos_token_id": 151645,
    "hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944, "max_position_embeddings": 32768,
    "max_window_layers": 28, "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 131072,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_sliding_window": False, "vocab_size": 152064,
    "image_aspect_ratio": "anyres_max_9",
    "image_grid_pinpoints": [[w, h] for w in range(384, 2305, 384) for h in range(384, 2305, 384)],
    "mm_hidden_size": 1152, "mm_patch_merge_type": "spatial_unpad", "mm_projector_type": "mlp2x_gelu",
    "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2,
    "mm_vision_tower": "google/siglip-so400m-patch14-384",
}


def test_the_real_checkpoint_maps_onto_llava_hf_settings():
    """Headers with the 7B shapes (no data): the plan and config match llava-hf/llava-onevision-qwen2-7b-ov-hf."""
    from taco_app.backends.transformers import convert as conversion

    def tensor(key, *shape):
        return key, conversion.Tensor(Path("x.safetensors"), key, "BF16", list(shape), 2 * math.prod(shape))

    tower = llava_qwen.TOWER_PREFIX
    tensors = dict([
        tensor("model.embed_tokens.weight", 152064, 3584), tensor("lm_head.weight", 152064, 3584),
        tensor("model.norm.weight", 3584), tensor("model.image_newline", 3584),
        tensor("model.mm_projector.0.weight", 3584, 1152), tensor("model.mm_projector.2.weight", 3584, 3584),
        tensor(tower + "embeddings.patch_embedding.weight", 1152, 3, 14, 14),
        tensor(tower + "embeddings.position_embedding.weight", 729, 1152),
        *(tensor(f"model.layers.{i}.mlp.up_proj.weight", 18944, 3584) for i in range(28)),
        *(tensor(f"{tower}encoder.layers.{i}.mlp.fc1.weight", 4304, 1152) for i in range(26))])

    class Tokenizer:  # Qwen2's: 151643 tokens + 3 specials, then the two the conversion adds
        def convert_tokens_to_ids(self, token):
            return {"<image>": 151646, "<video>": 151647}[token]

    conversion._check_layout(REAL_CONFIG)
    vision, origin = conversion._vision_settings(REAL_CONFIG, tensors)
    assert "siglip-so400m-patch14-384" in origin  # the built-in table, or the HF cache where it is cached
    vocab, _ = conversion._plan(tensors, REAL_CONFIG, vision, 151648)
    config = conversion._hf_config(REAL_CONFIG, vision, tensors, vocab, Tokenizer())
    tower_config = config.vision_config
    assert (tower_config.num_hidden_layers, tower_config.num_attention_heads, tower_config.hidden_size,
            tower_config.intermediate_size, tower_config.image_size, tower_config.patch_size,
            tower_config.hidden_act) == (26, 16, 1152, 4304, 384, 14, "gelu_pytorch_tanh")
    assert (config.image_token_index, config.video_token_index) == (151646, 151647)
    assert config.text_config.vocab_size == 152064  # Qwen2's spare rows hold the two new tokens: no growth
    assert tensors["model.embed_tokens.weight"].grow_to is None
    assert (config.vision_feature_layer, config.vision_feature_select_strategy) == (-1, "full")
    assert config.vision_aspect_ratio == "anyres_max_9"
    assert sorted(config.image_grid_pinpoints) == sorted(REAL_CONFIG["image_grid_pinpoints"])  # a symmetric grid
    assert str(config.text_config.dtype).endswith("bfloat16")
    assert config.text_config.rope_parameters["rope_theta"] == 1e6
