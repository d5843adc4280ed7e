"""The ``transformers`` backend: a TACO checkpoint on this machine, streamed token by token.

Generation is a plain greedy loop over the model's forward pass (what TACO's harness did: greedy,
stop at ``<|eot_id|>``/eos, up to 2000 new tokens), run in the caller's thread so that closing the
stream (Stop) ends it at the next token. Every step of a session repeats the previous prompt and
adds a little, and every session starts with the same 13k-character system prompt, so the loop
keeps KV caches (:class:`PrefixCache`) and prefills only the tokens it has not seen.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from PIL import Image

from taco_app.cota.backend import Backend, BackendError, Chunk, LanguageModel, Stream
from taco_app.backends.transformers.loading import (LoadedCheckpoint, LoadOptions, ModelStatus, family_of, hub_kwargs, plan,
                                                    resolve, timed_load)
from taco_app.cota.events import Usage
from taco_app.cota.prompt import Prompt, wrap_chat

STOP_TOKENS = ("<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    import numpy as np

    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n


@dataclass
class _Entry:
    ids: list[int]  # the tokens whose keys and values ``cache`` holds, in order
    cache: Any  # a transformers DynamicCache


class PrefixCache:
    """KV caches of token sequences already computed, reused by longest common prefix.

    One pinned entry (the chat header and TACO's system prompt: shared by every session) is never
    handed out, only copied; the others are the latest state of recent sessions, handed out whole
    (and cut back to the shared part) because a session's next step extends its last one.
    """

    def __init__(self, max_entries: int = 2):
        self.max_entries = max_entries
        self.pinned: _Entry | None = None
        self._entries: list[_Entry] = []

    def take(self, ids: Sequence[int], align=lambda keep: keep) -> tuple[Any, int]:
        """A cache holding the first ``keep`` tokens of ``ids`` (None, 0 when nothing matches).

        ``align(keep)`` may lower ``keep`` (never into the middle of an image's tokens); at least
        one token is always left to prefill, since the next token's logits come from it.
        """
        best, best_len = None, 0
        for entry in self._entries:
            n = common_prefix(entry.ids, ids)
            if n > best_len:
                best, best_len = entry, n
        pinned_len = common_prefix(self.pinned.ids, ids) if self.pinned else 0
        if best is not None and best_len >= pinned_len:
            self._entries.remove(best)
            cache, keep = best.cache, best_len
        elif pinned_len:
            cache, keep = copy.deepcopy(self.pinned.cache), pinned_len
        else:
            return None, 0
        keep = align(min(keep, len(ids) - 1))
        if keep <= 0:
            return None, 0
        cache.crop(keep - cache.get_seq_length())
        return cache, keep

    def put(self, ids: list[int], cache: Any) -> None:
        self._entries.append(_Entry(ids, cache))
        del self._entries[: -self.max_entries or None]

    def pin(self, ids: list[int], cache: Any) -> None:
        self.pinned = _Entry(list(ids), copy.deepcopy(cache))

    def clear(self) -> None:
        self.pinned, self._entries = None, []


class Detokenizer:
    """Turns tokens into text deltas as they arrive, never splitting a character.

    Decodes a short window (the tokens since the last emitted text) instead of the whole reply, so
    each token costs the same however long the reply is.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = self.read = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        before = decode(self.ids[self.prefix:self.read])
        text = decode(self.ids[self.prefix:])
        if len(text) <= len(before) or text.endswith("\ufffd"):
            return ""  # a multi-byte character is not complete yet
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(before):]


class TransformersBackend(Backend):
    name = "transformers"
    # One reply is generated at a time (``_run_lock``); a second session runs its tool meanwhile, and the
    # prefix cache keeps the latest state of both (PrefixCache's two entries).
    max_sessions = 2

    def __init__(self, options: LoadOptions | None = None):
        self.options = plan(options or LoadOptions.from_env())
        self.model_id = self.options.model_id
        self.revision = self.options.revision
        self.quantisation = self.options.quantisation
        self.status = ModelStatus(model_id=self.model_id, revision=self.revision, quantisation=self.quantisation)
        self.cache = PrefixCache()
        self._loaded: LoadedCheckpoint | None = None
        self._family: str | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # one generation at a time on the model

    @property
    def family(self) -> str:
        """The prompt format, read from the checkpoint's config (cheap: no weights are loaded)."""
        if self._family is None:
            from transformers import AutoConfig

            source = resolve(self.model_id, self.revision)
            try:
                config = AutoConfig.from_pretrained(str(source), **hub_kwargs(self.revision))
            except (OSError, ValueError) as err:
                raise BackendError(f"cannot read the config of {self.model_id}: {err}") from err
            self._family = family_of(config)
        return self._family

    def load_progress(self) -> tuple[float, str]:
        return self.status.progress, self.status.stage

    def describe(self) -> str:
        return self.status.summary()

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def load(self) -> LoadedCheckpoint:
        with self._load_lock:
            if self._loaded is None:
                self._loaded = timed_load(self.options, self.status)
                self._family = self._loaded.family
            return self._loaded

    # --- prompt to tokens ------------------------------------------------------------------------

    def encode(self, prompt: Prompt, images: Sequence[Image.Image]) -> tuple[list[int], dict[str, Any]]:
        """Token ids of the prompt (each ``<image>`` expanded to its image tokens) and the image tensors."""
        loaded = self.load()
        if prompt.text.count("<image>") != len(images):
            raise BackendError(f"the prompt has {prompt.text.count('<image>')} image placeholders for {len(images)} images")
        inputs = loaded.processor(text=prompt.text, images=[im.convert("RGB") for im in images] or None, return_tensors="pt")
        ids = inputs.pop("input_ids")[0].tolist()
        inputs.pop("attention_mask", None)
        if loaded.family == "qwen2":  # the Qwen2 harness put a newline token after every image
            ids = self._newline_after_images(ids)
        return ids, dict(inputs)

    def _newline_after_images(self, ids: list[int]) -> list[int]:
        image, newline = self._image_token(), self._loaded.processor.tokenizer.encode("\n", add_special_tokens=False)
        out: list[int] = []
        for i, token in enumerate(ids):
            out.append(token)
            if token == image and (i + 1 == len(ids) or ids[i + 1] != image):
                out.extend(newline)
        return out

    def _image_token(self) -> int:
        config = self._loaded.model.config
        return config.image_token_id

    def _runs(self, ids: list[int]) -> list[tuple[int, int]]:
        """(start, end) of each image's run of image tokens, in order."""
        image, runs, start = self._image_token(), [], None
        for i, token in enumerate(ids + [None]):
            if token == image and start is None:
                start = i
            elif token != image and start is not None:
                runs.append((start, i))
                start = None
        return runs

    # --- generation ---------------------------------------------------------------------------------

    def stream(self, prompt: Prompt, images: Sequence[Image.Image]) -> Stream:
        ids, tensors = self.encode(prompt, images)
        head = prompt.text[: prompt.text.find("###Human: ")] if "###Human: " in prompt.text else ""
        yield from self._generate(ids, tensors, shared_head=head)

    def language_model(self) -> LanguageModel:
        return self.generate_text

    def generate_text(self, question: str) -> str:
        """The checkpoint's own language model answering a plain text question (no tools, no cache)."""
        loaded = self.load()
        ids = loaded.processor.tokenizer(wrap_chat(loaded.family, question)).input_ids
        return "".join(c for c in self._generate(ids, {}, use_cache=False) if isinstance(c, str))

    def _generate(self, ids: list[int], tensors: dict[str, Any], *, shared_head: str = "", use_cache: bool = True) -> Iterator[Chunk]:
        import torch

        loaded = self.load()
        model, tokenizer = loaded.model, loaded.processor.tokenizer
        use_cache = use_cache and self.options.prefix_cache
        runs = self._runs(ids)
        if len(runs) != len(tensors.get("pixel_values", ())):
            raise BackendError(f"{len(runs)} image token runs for {len(tensors.get('pixel_values', ()))} images")

        def align(keep: int) -> int:  # never keep half an image: its features come as a whole
            for start, end in runs:
                if start < keep < end:
                    return start
            return keep

        with self._run_lock, torch.inference_mode():
            from transformers import DynamicCache

            cache, kept = self.cache.take(ids, align) if use_cache else (None, 0)
            reused = kept
            if cache is None:
                cache = DynamicCache(config=model.config)
            started = time.perf_counter()
            try:
                if use_cache and self.cache.pinned is None and shared_head and kept == 0:
                    # The first prompt ever: compute the shared head once and keep a copy for all.
                    head = tokenizer(shared_head).input_ids
                    kept = align(min(common_prefix(head, ids), len(ids) - 1))
                    if kept > 0:
                        model(input_ids=torch.tensor([ids[:kept]], device=model.device), past_key_values=cache, use_cache=True, logits_to_keep=1)
                        self.cache.pin(ids[:kept], cache)
                out = model(**self._prefill_inputs(ids, kept, runs, tensors, model), past_key_values=cache, use_cache=True, logits_to_keep=1)
                token = int(out.logits[0, -1].argmax())  # waits for the GPU, so the time below is real
            except torch.OutOfMemoryError as err:
                self.cache.clear()
                raise BackendError(f"out of GPU memory reading a {len(ids)}-token prompt; start a new session or free GPU memory") from err
            prefill_s = time.perf_counter() - started
            fed, produced = list(ids), 0
            stops = self._stop_ids()
            detok = Detokenizer(tokenizer)
            consistent = True  # the cache holds exactly ``fed``
            try:
                while token not in stops and produced < self.options.max_new_tokens:
                    produced += 1
                    text = detok.push(token)
                    if text:
                        yield text
                    consistent = False
                    out = model(input_ids=torch.tensor([[token]], device=model.device), past_key_values=cache, use_cache=True, logits_to_keep=1)
                    fed.append(token)
                    consistent = True
                    token = int(out.logits[0, -1].argmax())
            except torch.OutOfMemoryError as err:
                self.cache.clear()
                raise BackendError("out of GPU memory while generating; start a new session or free GPU memory") from err
            finally:
                if use_cache and consistent:
                    self.cache.put(fed, cache)
            yield Usage(prompt_tokens=len(ids), output_tokens=produced, cached_tokens=reused, prefill_s=round(prefill_s, 4))

    def _prefill_inputs(self, ids: list[int], kept: int, runs: list[tuple[int, int]], tensors: dict[str, Any], model: Any) -> dict[str, Any]:
        """The forward-pass inputs for the tokens after ``kept``, with only the images among them."""
        import torch

        inputs: dict[str, Any] = {"input_ids": torch.tensor([ids[kept:]], device=model.device)}
        new = [i for i, (start, _end) in enumerate(runs) if start >= kept]
        if new:
            inputs["pixel_values"] = tensors["pixel_values"][new].to(model.device, model.dtype)
            if "image_sizes" in tensors:
                inputs["image_sizes"] = tensors["image_sizes"][new].to(model.device)
            if "batch_num_images" in tensors:  # anyres or not is decided on the whole prompt's images
                inputs["batch_num_images"] = tensors["batch_num_images"]
        return inputs

    def _stop_ids(self) -> set[int]:
        loaded = self._loaded
        tokenizer = loaded.processor.tokenizer
        stops = {tokenizer.eos_token_id}
        eos = loaded.model.generation_config.eos_token_id
        stops.update(eos if isinstance(eos, list) else [eos])
        vocab = tokenizer.get_vocab()
        stops.update(vocab[t] for t in STOP_TOKENS if t in vocab)
        return {s for s in stops if s is not None}
