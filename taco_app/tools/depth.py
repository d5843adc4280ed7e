"""EstimateRegionDepth and EstimateObjectDepth: TACO's relative depth from Depth-Anything-V2-Small.

The depth map is computed once per image (Depth-Anything through transformers, resized back to
the image size) and turned into TACO's convention, ``max - predicted``: the model predicts
larger values for closer pixels, TACO reports *smaller = closer*, so the nearest pixel is 0.
Maps live in a process-wide LRU keyed by image content and model id, so asking about a second
region of the same image — in this session or a later one — reads the cached map instead of
running the model again. Each call also returns a coloured depth map for the UI only (near =
bright, far = dark, with a scale bar: :func:`taco_app.drawing.colorize_depth`); the model sees just
``{"depth": <float, 2 decimals>}``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from taco_app.drawing import colorize_depth
from taco_app.tools.base import BBOX, IMAGE, TEXT, ImageLookup, Tool, ToolResult, ToolStatus, content_key
from taco_app.weights import (
    DEPTH,
    DETECTION,
    MODELS,
    from_pretrained,
    local_path,
)

MODES = ("mean", "center", "mode")
CACHE_ENTRIES = 16  # distinct images whose maps stay in memory
CACHE_BYTES = 512 * 2**20  # ... and never more than this (a 12 MP photo costs ~84 MB)
NOT_FOUND = "Object not found."


@dataclass
class DepthMap:
    depth: np.ndarray  # (H, W) float32 in TACO's convention: 0 = nearest pixel, larger = farther
    picture: Image.Image  # the coloured map with its scale bar, same size as the image

    @property
    def nbytes(self) -> int:
        return self.depth.nbytes + self.picture.width * self.picture.height * 3

    @property
    def range(self) -> list[float]:
        return [round(float(self.depth.min()), 2), round(float(self.depth.max()), 2)]


_maps: OrderedDict[str, DepthMap] = OrderedDict()
_maps_lock = threading.Lock()  # guards _maps
_compute_lock = threading.Lock()  # one inference at a time: two sessions asking about one image compute it once


def clear_cache() -> None:
    with _maps_lock:
        _maps.clear()


def cache_key(image: Image.Image, model_id: str) -> str:
    return f"{content_key(image)}:{model_id}"


def depth_map(image: Image.Image) -> DepthMap:
    """The image's depth map in TACO's convention, computed once per image content and model."""
    key = cache_key(image, DEPTH.model_id)
    hit = _cached(key)
    if hit is not None:
        return hit
    with _compute_lock:
        hit = _cached(key)  # another thread may have computed it while this one waited
        if hit is not None:
            return hit
        depth = to_taco_depth(predict_depth(image))
        entry = DepthMap(depth, colorize_depth(depth))
        with _maps_lock:
            _maps[key] = entry
            # evict the least recently used, but always keep the map just computed
            while len(_maps) > 1 and (len(_maps) > CACHE_ENTRIES or _cached_bytes() > CACHE_BYTES):
                _maps.popitem(last=False)
        return entry


def _cached_bytes() -> int:
    return sum(entry.nbytes for entry in _maps.values())


def _cached(key: str) -> DepthMap | None:
    with _maps_lock:
        if key in _maps:
            _maps.move_to_end(key)
            return _maps[key]
    return None


def _load(model_id: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    processor = from_pretrained(DEPTH, AutoImageProcessor, model_id)
    model = from_pretrained(DEPTH, AutoModelForDepthEstimation, model_id)
    return processor, model.to(device).eval()


def load_model() -> tuple[Any, Any]:
    """(processor, model) for the DEPTH slot, loaded once per process and kept warm by MODELS."""
    return MODELS.get(DEPTH, _load)  # missing weights are reported there, before transformers is imported


def predict_depth(image: Image.Image) -> np.ndarray:
    """Depth-Anything's raw relative depth (larger = closer), resized to the image: (H, W) float32."""
    import torch

    processor, model = load_model()
    rgb = image.convert("RGB")
    inputs = processor(images=rgb, return_tensors="pt").to(model.device)
    with torch.inference_mode():
        outputs = model(**inputs)
        size = [(rgb.height, rgb.width)]
        if hasattr(processor, "post_process_depth_estimation"):
            predicted = processor.post_process_depth_estimation(outputs, target_sizes=size)[0]["predicted_depth"]
        else:  # older processors: the same bicubic resize by hand
            predicted = torch.nn.functional.interpolate(
                outputs.predicted_depth.unsqueeze(1), size=size[0], mode="bicubic", align_corners=False
            )[0, 0]
    return predicted.float().cpu().numpy().reshape(rgb.height, rgb.width)


def to_taco_depth(raw: np.ndarray) -> np.ndarray:
    """TACO's convention: ``max - raw``, so the closest pixel is 0 and smaller means closer."""
    raw = np.asarray(raw, dtype=np.float32)
    return raw.max() - raw


def region_pixels(bbox: list[float], width: int, height: int) -> tuple[int, int, int, int]:
    """TACO's ``int(fraction * size)`` box, clamped inside the map and at least one pixel wide and tall."""
    left, top, right, bottom = (min(max(float(v), 0.0), 1.0) for v in bbox)
    x1, y1 = min(int(left * width), width - 1), min(int(top * height), height - 1)
    x2, y2 = max(int(right * width), x1 + 1), max(int(bottom * height), y1 + 1)
    return x1, y1, min(x2, width), min(y2, height)


def region_depth(depth: np.ndarray, bbox: list[float], mode: str = "mean") -> float:
    """The depth of a normalised region: its mean, the value at its centre, or its most common value."""
    mode = check_mode(mode)
    height, width = depth.shape
    x1, y1, x2, y2 = region_pixels(bbox, width, height)
    if mode == "center":
        value = depth[(y1 + y2) // 2, (x1 + x2) // 2]  # TACO: the int centre (always inside the box)
    elif mode == "mean":
        value = depth[y1:y2, x1:x2].mean(dtype=np.float64)
    else:
        # The mode of raw floats is just the smallest value (they are all distinct), so count
        # values at the precision the answer is reported in; ties go to the smallest, as scipy's.
        values, counts = np.unique(np.round(depth[y1:y2, x1:x2], 2), return_counts=True)
        value = values[int(np.argmax(counts))]
    return round(float(value), 2)


def check_mode(mode: str | None) -> str:
    chosen = (mode or "mean").strip().lower()
    if chosen not in MODES:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in MODES)} (default 'mean'), got {mode!r}")
    return chosen


def estimate(
    image: Image.Image, bbox: list[float], mode: str = "mean", region: dict[str, Any] | None = None
) -> ToolResult:
    """Both tools' result: the observation, the region overlay and the coloured map for the UI."""
    mode = check_mode(mode)
    entry = depth_map(image)
    value = region_depth(entry.depth, bbox, mode)
    return ToolResult(
        output={"depth": value},
        overlays={"regions": [region or {"label": "depth", "bbox": bbox}], "depth_range": entry.range},
        artifacts={"depth_map": entry.picture.copy()},  # a copy: the cached one stays pristine
    )


# --- the tools ---------------------------------------------------------------------------------


class _DepthTool(Tool):
    optional = {"mode": TEXT}
    slot = DEPTH

    def setup(self) -> None:
        load_model()

    def check_arguments(self, arguments: dict[str, Any], lookup: ImageLookup) -> dict[str, Any]:
        kwargs = super().check_arguments(arguments, lookup)
        if "mode" in kwargs:  # checked before setup(): a bad mode should not wait for a model to load
            kwargs["mode"] = check_mode(kwargs["mode"])
        return kwargs


class EstimateRegionDepth(_DepthTool):
    name = "EstimateRegionDepth"
    inputs = {"image": IMAGE, "bbox": BBOX}

    def forward(self, image: Image.Image, bbox: list[float], mode: str = "mean") -> ToolResult:
        return estimate(image, bbox, mode)


class EstimateObjectDepth(_DepthTool):
    """Finds the object with LocalizeObjects' detector, then measures its best-scoring box."""

    name = "EstimateObjectDepth"
    inputs = {"image": IMAGE, "object": TEXT}

    def status(self) -> ToolStatus:
        # It needs both models: report the detector when the depth model is here but it is not.
        depth = super().status()
        detection_id = DETECTION.model_id
        if depth.ready and local_path(detection_id) is None:
            model = f"{DETECTION.title} ({detection_id}) + {depth.model}"
            return ToolStatus(model, "no", False, "python app.py download")
        return depth

    # `object` shadows the builtin, but it is TACO's argument name and the base class passes it by name
    def forward(self, image: Image.Image, object: str, mode: str = "mean") -> ToolResult:
        if not object.strip():
            raise ValueError("'object' must be a short description of the object, e.g. 'a black cat'")
        from taco_app.tools.detection import localize  # lazily: it pulls in the detector's stack

        regions = localize(image, [object])
        if not regions:
            return ToolResult(output={"depth": NOT_FOUND})
        best = max(regions, key=lambda r: float(r.get("score") or 0.0))
        bbox = [min(max(float(v), 0.0), 1.0) for v in best["bbox"]]  # detectors can overshoot by a hair
        score = round(float(best.get("score") or 0.0), 2)
        region = {"label": str(best.get("label") or object), "bbox": bbox, "score": score}
        return estimate(image, bbox, mode, region)
