"""Tiny tokenizers laid out like the TACO checkpoints' own, built locally in well under a second.

The real tokenizers (Llama-3's 128k vocabulary, Qwen2's 151k) need the Hub. These are byte-level
BPE tokenizers trained on TACO's system prompt, with the same special tokens in the same roles:

- ``mantis`` (Llama-3): ``<|begin_of_text|>`` added in front of every encoding (as Llama-3 does),
  ``<|start_header_id|>``, ``<|end_header_id|>``, ``<|eot_id|>``, ``<|end_of_text|>``; then
  ``<image>`` and ``<pad>`` as the two ids after the base vocabulary, as Mantis added them
  (128256 and 128257 in the real one).
- ``qwen2``: ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, no BOS, then ``<image>``.

Any text encodes (byte fallback) and decodes back to itself.
"""

from __future__ import annotations

from pathlib import Path

from taco_app.cota.prompt import system_prompt

VOCAB = 1024  # trained merges on top of the 256 byte symbols
SPECIALS = {
    "mantis": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
}
ADDED = {"mantis": ["<image>", "<pad>"], "qwen2": ["<image>"]}


def corpus() -> list[str]:
    text = system_prompt()
    return [*text.split("\n"), "OBSERVATION:", "###Human: ", "###Assistant: ", '{"thought": "", "actions": []}']


def build(folder: Path, family: str = "mantis"):
    """Train the tokenizer, save it to ``folder`` and return it (a ``PreTrainedTokenizerFast``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS[family]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus(), trainer)
    if family == "mantis":
        bos = "<|begin_of_text|>"
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))])
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token="<|end_of_text|>")
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    wrapped.add_special_tokens({"additional_special_tokens": ADDED[family]})
    if family == "mantis":
        wrapped.pad_token = "<pad>"
    folder.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(folder)
    return wrapped
