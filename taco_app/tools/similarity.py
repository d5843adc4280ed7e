"""CLIP similarity: GetImageToImagesSimilarity, GetImageToTextsSimilarity, GetTextToImagesSimilarity.

One shared :class:`Embedder` (the ``CLIP`` model slot, loaded once through ``MODELS`` and kept warm)
turns images and texts into L2-normalised features; GetObjects (``tagging.py``) uses the same one.
The tools reproduce TACO's open_clip tools: cosine similarity of the reference against every
candidate, ``round(s, 2)`` per score, and the argmax as the best candidate, returned as

- image → images: ``{'similarity': [...], 'best_image_index': i, 'best_image': 'image-k'}``
- image → texts: ``{'similarity': [...], 'best_text_index': i, 'best_text': texts[i]}``
- text → images: ``{'similarity': [...], 'best_image_index': i, 'best_image': 'image-k'}``

Any CLIP checkpoint that transformers loads works (``TACO_CLIP_MODEL`` may name a local folder);
SigLIP checkpoints work too (their text is padded to the length they were trained with).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from PIL import Image

from taco_app import weights
from taco_app.tools.base import IMAGE, IMAGES, TEXT, TEXTS, ImageLookup, Tool, ToolResult, as_list, image_id
from taco_app.weights import CLIP, MODELS

IMAGE_BATCH = 32  # images per forward pass: bounded memory for long lists, one pass for usual ones
TEXT_BATCH = 256


class Embedder:
    """A CLIP-style model with its processor: normalised image and text features, no gradients."""

    def __init__(self, model: Any, processor: Any, device: str):
        self.model = model
        self.processor = processor
        self.device = device
        config = model.config
        model_type = str(getattr(config, "model_type", ""))
        self.is_siglip = "siglip" in model_type  # SigLIP and SigLIP 2
        self.text_mask = model_type != "siglip"  # SigLIP (v1) was trained with no text mask
        text_config = getattr(config, "text_config", None)
        limit = getattr(text_config, "max_position_embeddings", None) or 77
        tokenizer_limit = getattr(self._tokenizer, "model_max_length", None) or limit
        self.max_text_tokens = int(min(limit, tokenizer_limit))
        scale = getattr(model, "logit_scale", None)
        # The temperature the model was trained with (CLIP ends near 100); softmax over tags uses it.
        self.logit_scale = float(scale.detach().exp().float().cpu()) if scale is not None else 100.0
        self._banks: dict[tuple[str, ...], Any] = {}
        self._bank_lock = threading.Lock()

    @property
    def _tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def images(self, images: Sequence[Image.Image]) -> Any:
        """``[n, d]`` float32 CPU tensor of unit-length image features."""
        import torch

        chunks = []
        for start in range(0, len(images), IMAGE_BATCH):
            batch = [im.convert("RGB") for im in images[start:start + IMAGE_BATCH]]
            image_processor = getattr(self.processor, "image_processor", self.processor)
            inputs = image_processor(images=batch, return_tensors="pt")
            inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            with torch.inference_mode():
                chunks.append(_features(self.model.get_image_features(**inputs, return_dict=True)))
        return _normalise(torch.cat(chunks))

    def texts(self, texts: Sequence[str]) -> Any:
        """``[n, d]`` float32 CPU tensor of unit-length text features."""
        import torch

        chunks = []
        for start in range(0, len(texts), TEXT_BATCH):
            # SigLIP was trained on text padded to max_length; CLIP pools at the eos token, so any padding works.
            padding = "max_length" if self.is_siglip else True
            inputs = self._tokenizer(list(texts[start:start + TEXT_BATCH]), padding=padding, truncation=True,
                                     max_length=self.max_text_tokens, return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
            if not self.text_mask:
                inputs.pop("attention_mask", None)
            with torch.inference_mode():
                chunks.append(_features(self.model.get_text_features(**inputs, return_dict=True)))
        return _normalise(torch.cat(chunks))

    def text_bank(self, texts: Sequence[str]) -> Any:
        """Features of a fixed list of texts, computed once per loaded model (e.g. a tag vocabulary)."""
        key = tuple(texts)
        with self._bank_lock:
            if key not in self._banks:
                self._banks[key] = self.texts(key)
            return self._banks[key]


def _features(output: Any) -> Any:
    # transformers 5 returns a BaseModelOutputWithPooling whose pooler_output is the projected
    # embedding; older versions returned the tensor itself.
    return output if hasattr(output, "shape") else output.pooler_output


def _normalise(features: Any) -> Any:
    features = features.float().cpu()
    return features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def load_embedder(model_id: str, device: str) -> Embedder:
    """``MODELS`` loader for the CLIP slot: processor and model from local files only."""
    from transformers import AutoModel, AutoProcessor

    processor = weights.from_pretrained(CLIP, AutoProcessor, model_id)
    model = weights.from_pretrained(CLIP, AutoModel, model_id)
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise weights.ModelUnavailable(f"{CLIP.title} ({model_id}) is a {type(model).__name__}, not a CLIP/SigLIP "
                                      f"image-text model; set {CLIP.env} to one")
    return Embedder(model.to(device).eval(), processor, device)


def embedder() -> Embedder:
    """The process-wide embedder of the current ``CLIP`` slot model (loaded on first use)."""
    return MODELS.get(CLIP, load_embedder)  # missing weights are reported there, before torch is imported


def compare(reference: Any, candidates: Any) -> tuple[list[float], int]:
    """TACO's scores: cosine similarity of the one reference against each candidate (2 decimals),
    and the index of the best candidate (argmax of the unrounded scores: a tie after rounding goes to
    the candidate that is really closer)."""
    probs = reference @ candidates.T
    return [round(float(s), 2) for s in probs[0].tolist()], int(probs[0].argmax())


def _nonempty(tool: str, name: str, arguments: dict[str, Any], what: str) -> None:
    if name in arguments:
        value = arguments[name]
        if isinstance(value, (list, tuple, str)) and not as_list(name, value):
            raise ValueError(f"{tool} needs at least one {what} in '{name}', got an empty list")


class _ClipTool(Tool):
    model_id = CLIP.default
    slot = CLIP

    def setup(self) -> None:
        embedder()  # load (or fail with ModelUnavailable) before the first call

    def _ids(self, name: str, arguments: dict[str, Any]) -> list[str]:
        return [image_id(v) for v in as_list(name, arguments[name])]


class GetImageToImagesSimilarity(_ClipTool):
    name = "GetImageToImagesSimilarity"
    inputs = {"image": IMAGE, "other_images": IMAGES}

    def check_arguments(self, arguments: dict[str, Any], lookup: ImageLookup) -> dict[str, Any]:
        _nonempty(self.name, "other_images", arguments, "image id")
        kwargs = super().check_arguments(arguments, lookup)
        kwargs["image_ids"] = self._ids("other_images", arguments)
        kwargs["reference_id"] = image_id(arguments["image"])
        return kwargs

    def forward(self, image: Image.Image, other_images: list[Image.Image], image_ids: list[str] | None = None,
                reference_id: str | None = None) -> ToolResult:
        image_ids = image_ids or [f"image-{i}" for i in range(len(other_images))]
        # one batch: the reference first, then the candidates
        features = embedder().images([image, *other_images])
        similarity, best = compare(features[:1], features[1:])
        return ToolResult(
            output={"similarity": similarity, "best_image_index": best, "best_image": image_ids[best]},
            overlays={"reference": reference_id, "best": image_ids[best],
                      "scores": [{"image": i, "score": s} for i, s in zip(image_ids, similarity)]},
        )


class GetImageToTextsSimilarity(_ClipTool):
    name = "GetImageToTextsSimilarity"
    inputs = {"image": IMAGE, "texts": TEXTS}

    def check_arguments(self, arguments: dict[str, Any], lookup: ImageLookup) -> dict[str, Any]:
        _nonempty(self.name, "texts", arguments, "text")
        kwargs = super().check_arguments(arguments, lookup)
        kwargs["reference_id"] = image_id(arguments["image"])
        return kwargs

    def forward(self, image: Image.Image, texts: list[str], reference_id: str | None = None) -> ToolResult:
        model = embedder()
        reference, candidates = model.images([image]), model.texts(texts)
        similarity, best = compare(reference, candidates)
        return ToolResult(
            output={"similarity": similarity, "best_text_index": best, "best_text": texts[best]},
            overlays={"reference": reference_id, "scores": [{"text": t, "score": s} for t, s in zip(texts, similarity)],
                      "best": texts[best]},
        )


class GetTextToImagesSimilarity(_ClipTool):
    name = "GetTextToImagesSimilarity"
    inputs = {"text": TEXT, "images": IMAGES}

    def check_arguments(self, arguments: dict[str, Any], lookup: ImageLookup) -> dict[str, Any]:
        _nonempty(self.name, "images", arguments, "image id")
        kwargs = super().check_arguments(arguments, lookup)
        kwargs["image_ids"] = self._ids("images", arguments)
        return kwargs

    def forward(self, text: str, images: list[Image.Image], image_ids: list[str] | None = None) -> ToolResult:
        image_ids = image_ids or [f"image-{i}" for i in range(len(images))]
        model = embedder()
        reference, candidates = model.texts([text]), model.images(images)
        similarity, best = compare(reference, candidates)
        return ToolResult(
            output={"similarity": similarity, "best_image_index": best, "best_image": image_ids[best]},
            overlays={"reference": text, "best": image_ids[best],
                      "scores": [{"image": i, "score": s} for i, s in zip(image_ids, similarity)]},
        )
