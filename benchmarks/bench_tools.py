"""Cold (first call, includes loading) and warm (second call) latency of every tool on this machine.

Run with `make bench` (or `python -m benchmarks.bench_tools`). Tools whose weights come from the Hub are
measured on the tiny random checkpoints the tests build (same architectures and loaders, so the
figures show loading and caching behaviour, not the speed of the full-size models). OCR and face
detection use their real offline weights. Photos come from scikit-image.

Cold: every model unloaded and every cache dropped first. Warm: the next call, on the same pictures
mirrored (the same work; no result cache can answer it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skimage import data

from PIL import Image, ImageOps

from taco_app.weights import MODELS


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).convert("RGB")


def timed(tool, arguments: dict, images: dict[str, Image.Image]) -> float:
    started = time.perf_counter()
    tool(arguments, images.__getitem__, language_model=lambda q: "an answer")
    return time.perf_counter() - started


def forget_everything() -> None:
    """Unload every model and drop every cache, so the next call is a true first call."""
    from taco_app.tools import depth, ocr

    MODELS.clear()
    ocr._reader = None
    depth._maps.clear()


def main() -> None:
    from tests.tiny import clip, depth_anything, grounding_dino

    root = Path(tempfile.mkdtemp())
    os.environ.setdefault("TACO_HOME", str(root / "home"))
    os.environ["TACO_DETECTION_MODEL"] = str(grounding_dino.build(root / "gdino"))
    os.environ["TACO_DEPTH_MODEL"] = str(depth_anything.build(root / "depth"))
    os.environ["TACO_CLIP_MODEL"] = str(clip.build(root / "clip"))
    os.environ["TACO_BOX_THRESHOLD"] = os.environ["TACO_TEXT_THRESHOLD"] = "0"  # random weights: keep every box

    from taco_app.examples import fuel_sign
    from taco_app.tools import default_tools

    tools = default_tools()
    first = {"image-0": photo("astronaut"), "image-1": photo("coffee"), "image-2": photo("chelsea"), "image-3": fuel_sign()}
    # the same pictures mirrored: the same work, but no result cache can answer the second call
    second = {key: ImageOps.mirror(image) for key, image in first.items()}
    cases = [
        ("OCR", {"image": "image-3"}),
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
        forget_everything()
        tool = tools.get(name)
        cold = timed(tool, arguments, first)
        warm = timed(tool, arguments, second)
        print(f"{name:28s} {cold:8.3f} {warm:8.3f} {cold / max(warm, 1e-9):9.1f}")

    depth = tools.get("EstimateRegionDepth")
    fresh = {"image-0": photo("rocket")}
    t1 = timed(depth, {"image": "image-0", "bbox": [0.1, 0.1, 0.4, 0.4]}, fresh)
    t2 = timed(depth, {"image": "image-0", "bbox": [0.5, 0.5, 0.9, 0.9]}, fresh)
    print(f"depth on a new image, model warm: first query {t1 * 1000:.1f} ms, second query (same image, other box) "
          f"{t2 * 1000:.2f} ms, {t1 / max(t2, 1e-9):.0f}x faster (depth map reused)")
    print("models loaded:", sorted(key for key, _ in MODELS.loaded()))

    # What a person waits for on the very first call: a new process imports torch/transformers too.
    print("first call in a fresh process (imports + load + one call), then the second call:")
    for name in ("OCR", "LocalizeObjects", "GetObjects", "EstimateRegionDepth", "DetectFaces"):
        arguments = dict(cases)[name]
        code = (
            "import time, json, sys; from benchmarks.bench_tools import photo, timed; from taco_app.examples import fuel_sign; "
            "from taco_app.tools import default_tools; "
            "images = {'image-0': photo('astronaut'), 'image-3': fuel_sign()}; "
            "from PIL import ImageOps; mirrored = {k: ImageOps.mirror(v) for k, v in images.items()}; "
            f"tool = default_tools().get({name!r}); a = {arguments!r}; "
            "print(json.dumps([timed(tool, a, images), timed(tool, a, mirrored)]))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True)
        cold, warm = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {name:26s} {cold:8.3f} {warm:8.3f} {cold / max(warm, 1e-9):9.1f}")


if __name__ == "__main__":
    main()
