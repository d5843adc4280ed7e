"""A tiny random GroundingDINO checkpoint of the real architecture, built locally for the tests.

It has everything a real checkpoint folder has — ``config.json`` with a Swin backbone and a BERT
text encoder, safetensors weights, a WordPiece tokenizer and the image processor — so
``AutoProcessor.from_pretrained(folder)`` and the model class load it exactly as they load
``IDEA-Research/grounding-dino-tiny``. Only the sizes are tiny (about 1 MB, built in about a second),
and the weights are random, so scores and boxes are arbitrary but deterministic.
"""

from __future__ import annotations

from pathlib import Path

# GroundingDINO's modeling code hard-codes bert-base-uncased ids for the tokens that split the
# prompt into phrases ([CLS] 101, [SEP] 102, "." 1012, "?" 1029), so the tiny vocabulary keeps
# them (and [PAD]/[UNK]/[MASK]) at the same ids as the real tokenizer.
_FIXED_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}

# Words the tests and a demo would ask for; anything else falls back to the letter pieces below.
WORDS = """
a an the of and in on with left right top bottom small large big red blue green white black yellow
person people man woman boy girl child baby face hand head eye hair arm leg foot shoe hat shirt
t - shirt dress coat jacket glasses bag backpack umbrella tie watch ring
cat dog horse bird cow sheep elephant bear zebra giraffe mouse fish duck chicken animal
car bus truck bicycle bike motorcycle train boat airplane plane vehicle wheel tire road street sign
traffic light stop parking meter bench tree flower plant grass sky cloud sun water sea river mountain
building house window door wall roof floor room table chair sofa couch bed desk shelf lamp clock
picture frame mirror curtain pillow blanket cup mug glass bottle bowl plate fork knife spoon
utensil napkin food pizza cake sandwich apple banana orange carrot broccoli bread egg coffee tea
pot pan oven microwave refrigerator fridge sink toilet tv television laptop computer keyboard
phone screen book paper pen pencil box toy ball kite frisbee skateboard surfboard skis snowboard
racket bat glove helmet flag rocket astronaut space suit patch logo text number letter word
""".split()  # noqa: SIM905 - a word list reads better as text


def _vocab() -> list[str]:
    """A bert-base-uncased-shaped vocabulary: the fixed ids above, letters, letter pieces, words."""
    size = 1100 + len(WORDS) + 26 * 2
    tokens: list[str | None] = [None] * size
    for token, index in _FIXED_IDS.items():
        tokens[index] = token
    extra = [*"abcdefghijklmnopqrstuvwxyz", *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"), *"-,'!:;()/&+"]
    extra += [w for w in dict.fromkeys(WORDS) if w not in extra]
    free = (i for i in range(1030, size))
    for token in extra:
        tokens[next(free)] = token
    return [t if t is not None else f"[unused{i}]" for i, t in enumerate(tokens)]


def build(folder: Path) -> Path:
    """Write the tiny checkpoint (model + processor) into ``folder`` and return it."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, model_max_length=256)

    # Same shape of network as grounding-dino-tiny (Swin-T stages 2-4 + one extra level, BERT text
    # encoder, two-stage deformable DETR), with every width and depth cut down.
    backbone = SwinConfig(
        image_size=128, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
        window_size=4, out_features=["stage2", "stage3", "stage4"], out_indices=[2, 3, 4],
    )
    text = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256, pad_token_id=0,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=32, num_queries=20,
        encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_n_points=2, decoder_n_points=2,
        num_feature_levels=4, max_text_len=256,
    )
    torch.manual_seed(0)  # random but reproducible weights: the same boxes on every build
    model = GroundingDinoForObjectDetection(config).eval()
    # Random layer-normed features give huge query·token dot products, so every score would be
    # 1.00; shrinking the decoder's output norm spreads scores over 0..1 like a real model's.
    with torch.no_grad():
        model.model.decoder.layer_norm.weight.mul_(0.15)
        model.model.decoder.layer_norm.bias.mul_(0.15)

    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 192})
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


if __name__ == "__main__":  # python -m tests.tiny.grounding_dino FOLDER
    import sys

    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-grounding-dino")))
