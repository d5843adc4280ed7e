"""A tiny random CLIP checkpoint of the real architecture, built locally in a fraction of a second.

The folder it writes loads exactly like ``openai/clip-vit-base-patch32``: ``AutoProcessor`` gives a
``CLIPProcessor`` (``CLIPImageProcessor`` + ``CLIPTokenizer``) and ``AutoModel``/``CLIPModel`` gives a
``CLIPModel``, only with hidden size 32, 2 layers, 32x32 images and random (seeded) weights. Nothing is
downloaded: the byte-level BPE vocabulary is written here, with the 256 byte symbols (plain and with
the ``</w>`` end-of-word suffix, so any text tokenizes) plus merges for the words the tests and the tag
prompts use, so those become whole-word tokens as with the real vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
SEED = 1234
# Words that get whole-word tokens; everything else falls back to byte symbols, which still works.
WORDS = ("a", "photo", "of", "the", "an", "and", "cat", "dog", "person", "astronaut", "coffee", "cup", "rocket",
         "space", "woman", "man", "kitchen", "table", "food", "sky", "water", "car", "tabby", "black", "white")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map (the 256 base symbols of the vocab)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def vocabulary(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocab layout: bytes, bytes + '</w>', merged tokens, then the two special tokens."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    seen = set(tokens)
    byte_map = bytes_to_unicode()
    for word in dict.fromkeys(w.lower() for w in words):
        parts = [byte_map[b] for b in word.encode("utf-8")]
        parts[-1] += "</w>"
        # Merge left to right: p+h, ph+o, pho+t, ... so the whole word ends up as one token.
        current = parts[0]
        for part in parts[1:]:
            pair = (current, part)
            current = current + part
            if current not in seen:
                seen.add(current)
                tokens.append(current)
                merges.append(pair)
    tokens += [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def build(folder: Path, extra_words: Iterable[str] = ()) -> Path:
    """Write a tiny random CLIP checkpoint (config, weights, tokenizer, image processor) to ``folder``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocabulary([*WORDS, *(w for phrase in extra_words for w in phrase.split())])
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)

    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "projection_dim": 16}
    text = {**tower, "vocab_size": len(vocab), "max_position_embeddings": 77,
            # the text tower pools at the first eos token: its id must be the tokenizer's
            "bos_token_id": vocab[BOS], "eos_token_id": vocab[EOS], "pad_token_id": vocab[EOS]}
    vision = {**tower, "image_size": 32, "patch_size": 8}
    # logit scale 100 (log 4.6052), the value trained CLIP models end with, so softmax behaves alike
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16, logit_scale_init_value=4.6052)
    torch.manual_seed(SEED)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    return folder


if __name__ == "__main__":  # python -m tests.tiny.clip /tmp/tiny-clip
    import sys

    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-clip")))
