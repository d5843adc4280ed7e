"""LocalizeObjects: open-vocabulary detection with GroundingDINO, observed in TACO's format.

The requested names become one GroundingDINO prompt (``"cat. dog."``, lowercase, each phrase
ending with "."). Each detection is labelled with the requested name it is grounded on and
returned as TACO did: ``{"label", "bbox" [l, t, r, b] in 0..1, "score"}``, two decimals, best
first, repeated labels numbered ``cat``, ``cat-2``, ``cat-3``. The model comes from the
``DETECTION`` slot (``TACO_DETECTION_MODEL``), loads from local files once and stays warm.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from taco_app import weights
from taco_app.drawing import draw_regions
from taco_app.settings import current
from taco_app.tools.base import IMAGE, TEXTS, ProducedImage, Tool, ToolResult
from taco_app.weights import DETECTION, MODELS

MAX_REGIONS = 50  # more boxes than this only drown the model's context
DUPLICATE_IOU = 0.8  # two boxes of one label overlapping this much are one object found twice


@dataclass
class Detector:
    processor: Any
    model: Any


def _load(model_id: str, device: str) -> Detector:
    # MODELS.get has already checked that the weights are here, before importing anything heavy.
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    processor = weights.from_pretrained(DETECTION, AutoProcessor, model_id)
    model = weights.from_pretrained(DETECTION, AutoModelForZeroShotObjectDetection, model_id)
    return Detector(processor, model.to(device).eval())


# --- arguments -----------------------------------------------------------------------------


def _threshold(name: str, value: float | None) -> float:
    """The keyword value if given, else the setting's (``TACO_BOX_THRESHOLD``, ``TACO_TEXT_THRESHOLD``); in 0..1."""
    if value is None:
        return float(getattr(current(), name))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


def prompt_phrase(name: str) -> str:
    """An object name as GroundingDINO reads it: lowercase, no '.'/'?' (its phrase separators)."""
    return " ".join(re.sub(r"[.?]", " ", name).lower().split())


def _requested(objects: str | Sequence[str]) -> list[tuple[str, str]]:
    """(label, prompt phrase) for each distinct requested object, in the order asked.

    A name written GroundingDINO-style, "dog. cat.", is read as the two objects it names.
    """
    if isinstance(objects, str):
        objects = [objects]
    if not isinstance(objects, (list, tuple)) or not all(isinstance(o, str) for o in objects):
        raise TypeError(f"objects must be a list of object names, e.g. ['dog', 'cat'], got {objects!r}")
    seen: dict[str, str] = {}
    for name in objects:
        for part in re.split(r"[.?]+(?=\s|$)", name):
            phrase = prompt_phrase(part)
            if phrase and phrase not in seen:
                seen[phrase] = " ".join(part.split())
    if not seen:
        raise ValueError("objects must name at least one object to localize, e.g. ['dog', 'cat']")
    return [(label, phrase) for phrase, label in seen.items()]


# --- labels --------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def match_label(phrase: str, requested: Sequence[tuple[str, str]]) -> str:
    """The requested object a decoded GroundingDINO phrase came from, else the phrase itself.

    Used when token positions are unknown: an equal phrase wins, then the one requested object
    containing it, then the longest requested object it contains.
    """
    text = _norm(phrase.replace("[SEP]", " ").replace("[CLS]", " "))
    for label, prompt in requested:
        if _norm(prompt) == text:
            return label
    containing = [label for label, prompt in requested if text and text in _norm(prompt)]
    if len(containing) == 1:
        return containing[0]
    inside = [(len(prompt), label) for label, prompt in requested if _norm(prompt) and _norm(prompt) in text]
    return max(inside)[1] if inside else text


def _token_spans(tokenizer: Any, prompt: str, starts: Sequence[tuple[int, int]], length: int) -> list[list[int]] | None:
    """For each requested phrase (char span in the prompt), the positions of its tokens."""
    try:
        offsets = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, ValueError, TypeError, KeyError):  # a slow tokenizer has no offsets
        return None
    if len(offsets) != length:
        return None
    spans: list[list[int]] = [[] for _ in starts]
    for position, (begin, end) in enumerate(offsets):
        for j, (start, stop) in enumerate(starts):
            if end > begin and start <= begin < stop:
                spans[j].append(position)
    return spans if all(spans) else None


def number_labels(regions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best score first; repeated labels numbered as TACO did: cat, cat-2, cat-3."""
    ordered = sorted(regions, key=lambda r: -r["score"])  # stable: ties keep their order
    counts: dict[str, int] = {}
    numbered = []
    for region in ordered:
        counts[region["label"]] = counts.get(region["label"], 0) + 1
        n = counts[region["label"]]
        numbered.append({**region, "label": region["label"] if n == 1 else f"{region['label']}-{n}"})
    return numbered


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def drop_duplicates(regions: Iterable[dict[str, Any]], iou: float = DUPLICATE_IOU) -> list[dict[str, Any]]:
    """Greedy per-label NMS: GroundingDINO often returns one object twice with near-equal boxes,
    which would make the model over-count."""
    kept: list[dict[str, Any]] = []
    for region in sorted(regions, key=lambda r: -r["score"]):
        if all(k["label"] != region["label"] or _iou(k["bbox"], region["bbox"]) <= iou for k in kept):
            kept.append(region)
    return kept


# --- detection -----------------------------------------------------------------------------


def localize(image: Image.Image, objects: list[str], *, box_threshold: float | None = None,
             text_threshold: float | None = None) -> list[dict]:
    """Regions ``{"label", "bbox", "score"}`` for the requested objects found in ``image``.

    ``box_threshold`` keeps a box when its best token score exceeds it; ``text_threshold`` keeps
    it only if the requested object's own words score above it (else the box is grounded on
    nothing asked for). Both default to the settings TACO_BOX_THRESHOLD / TACO_TEXT_THRESHOLD
    (0.35 / 0.25, GroundingDINO's own demo defaults).
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image, got {type(image).__name__}")
    box_t = _threshold("box_threshold", box_threshold)
    text_t = _threshold("text_threshold", text_threshold)
    requested = _requested(objects)
    prompt, starts = _prompt(requested)

    detector: Detector = MODELS.get(DETECTION, _load)
    import torch  # after the model: a missing model is reported without paying torch's import

    processor, model = detector.processor, detector.model
    inputs = processor(images=image.convert("RGB"), text=prompt, return_tensors="pt")
    length = int(inputs["input_ids"].shape[1])
    max_len = int(getattr(model.config, "max_text_len", 256))
    if length > max_len:
        raise ValueError(f"Too many objects for one LocalizeObjects call ({len(requested)} names, {length} tokens; "
                         f"the limit is {max_len}). Ask for fewer objects at a time")
    with torch.inference_mode():
        outputs = model(**inputs.to(model.device))

    # Keyword name of the box threshold changed across transformers versions.
    params = inspect.signature(processor.post_process_grounded_object_detection).parameters
    key = "threshold" if "threshold" in params else "box_threshold"
    found = processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], **{key: box_t}, text_threshold=text_t, target_sizes=None)[0]
    # The processor keeps boxes with max token probability > threshold; redo that selection to
    # read each kept box's per-token probabilities and ground it on one requested object.
    probs = torch.sigmoid(outputs.logits[0])
    probs = probs[probs.max(dim=-1).values > box_t].cpu()
    phrases = found["text_labels"] if "text_labels" in found else found["labels"]  # older transformers
    spans = _token_spans(processor.tokenizer, prompt, starts, length)
    if len(probs) != len(found["scores"]):
        spans = None

    return number_labels(drop_duplicates(_regions(found, probs, spans, phrases, requested, text_t))[:MAX_REGIONS])


def _prompt(requested: list[tuple[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """GroundingDINO's text prompt ("a cat. a red car.") and where each requested phrase starts and ends in it."""
    prompt, starts = "", []
    for _label, phrase in requested:
        starts.append((len(prompt), len(prompt) + len(phrase)))
        prompt += phrase + ". "
    return prompt.strip(), starts


def _regions(found: dict, probs: Any, spans: list | None, phrases: list[str], requested: list[tuple[str, str]],
             text_t: float) -> list[dict]:
    """Each kept box grounded on one requested object (by its words' scores, else by the processor's phrase)."""
    regions = []
    for i, (score, box) in enumerate(zip(found["scores"].tolist(), found["boxes"].tolist())):
        if spans is not None:
            per_object = [float(probs[i, span].max()) for span in spans]
            best = max(range(len(spans)), key=per_object.__getitem__)
            if per_object[best] <= text_t:
                continue  # the box matched only '.', [CLS] or [SEP], not an object's words
            label = requested[best][0]
        else:
            label = match_label(phrases[i], requested)
            if not label:
                continue
        bbox = [round(min(max(float(v), 0.0), 1.0), 2) for v in box]
        if bbox[0] >= bbox[2] or bbox[1] >= bbox[3]:
            continue  # under 1% of the image wide or high: Crop and ZoomIn would refuse this box
        regions.append({"label": label, "bbox": bbox, "score": round(float(score), 2)})
    return regions


class LocalizeObjects(Tool):
    name = "LocalizeObjects"
    inputs = {"image": IMAGE, "objects": TEXTS}
    model_id = DETECTION.default
    slot = DETECTION

    def forward(self, image: Image.Image, objects: list[str]) -> ToolResult:
        regions = localize(image, objects)
        annotated = draw_regions(image, regions)
        return ToolResult(output={"image": ProducedImage(annotated), "regions": regions}, overlays={"regions": regions})
