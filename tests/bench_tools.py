"""Cold (first call, includes loading) and warm (second call) latency of every tool on this machine.

Run with `make bench` (or `python -m tests.bench_tools`). Tools whose weights come from the Hub are
measured on the tiny random checkpoints the tests build (same architectures and loaders, so the
figures show loading and caching behaviour, not the speed of the full-size models). OCR and face
detection use their real offline weights. Photos come from scikit-image.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from skimage import data

from PIL import Image

from taco_app.tools.models import MODELS


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).convert("RGB")


def timed(tool, arguments: dict, images: dict[str, Image.Image]) -> float:
    started = time.perf_counter()
    tool(arguments, images.__getitem__, language_model=lambda q: "an answer")
    return time.perf_counter() - started


def main() -> None:
    from tests.tiny import clip, depth_anything, grounding_dino

    root = Path(tempfile.mkdtemp())
    os.environ.setdefault("TACO_HOME", str(root / "home"))
    os.environ["TACO_DETECTION_MODEL"] = str(grounding_dino.build(root / "gdino"))
    os.environ["TACO_DEPTH_MODEL"] = str(depth_anything.build(root / "depth"))
    os.environ["TACO_CLIP_MODEL"] = str(clip.build(root / "clip"))
    os.environ["TACO_BOX_THRESHOLD"] = os.environ["TACO_TEXT_THRESHOLD"] = "0"  # random weights: keep every box

    from taco_app.tools import default_tools

    tools = default_tools()
    a, b, c = photo("astronaut"), photo("coffee"), photo("chelsea")
    first = {"image-0": a, "image-1": b, "image-2": c}
    second = {"image-0": c, "image-1": a, "image-2": b}  # other pictures: no result cache can answer
    cases = [
        ("OCR", {"image": "image-0"}),
        ("LocalizeObjects", {"image": "image-0", "objects": ["person", "cup"]}),
        ("GetObjects", {"image": "image-0"}),
        ("EstimateRegionDepth", {"image": "image-0", "bbox": [0.3, 0.2, 0.6, 0.5]}),
        ("EstimateObjectDepth", {"image": "image-0", "object": "person"}),
        ("Crop", {"image": "image-0", "bbox": [0.3, 0.2, 0.6, 0.5]}),
        ("ZoomIn", {"image": "image-0", "bbox": [0.3, 0.2, 0.6, 0.5], "zoom_factor": 2}),
        ("QueryLanguageModel", {"query": "What is a rocket?"}),
        ("GetImageToImagesSimilarity", {"image": "image-0", "other_images": ["image-1", "image-2"]}),
        ("GetImageToTextsSimilarity", {"image": "image-0", "texts": ["a cat", "a person"]}),
        ("GetTextToImagesSimilarity", {"text": "a cat", "images": ["image-1", "image-2"]}),
        ("DetectFaces", {"image": "image-0"}),
        ("Calculate", {"expression": "50 / 3.65"}),
        ("SolveMathEquation", {"query": "x^2 + 2x + 1 = 0, what is x?"}),
    ]
    print(f"{'tool':28s} {'cold s':>8s} {'warm s':>8s} {'cold/warm':>9s}")
    for name, arguments in cases:
        tool = tools.get(name)
        cold = timed(tool, arguments, first)
        warm = timed(tool, arguments, second)
        print(f"{name:28s} {cold:8.3f} {warm:8.3f} {cold / max(warm, 1e-9):9.1f}")

    depth = tools.get("EstimateRegionDepth")
    fresh = {"image-0": photo("rocket")}
    t1 = timed(depth, {"image": "image-0", "bbox": [0.1, 0.1, 0.4, 0.4]}, fresh)
    t2 = timed(depth, {"image": "image-0", "bbox": [0.5, 0.5, 0.9, 0.9]}, fresh)
    print(f"depth on a new image: first query {t1 * 1000:.1f} ms, second query (same image, other box) "
          f"{t2 * 1000:.2f} ms, {t1 / max(t2, 1e-9):.0f}x faster (depth map reused)")
    print("models loaded once each:", sorted(key for key, _ in MODELS.loaded()))


if __name__ == "__main__":
    main()
