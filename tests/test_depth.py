"""EstimateRegionDepth / EstimateObjectDepth on a tiny random Depth-Anything of the real architecture.

The checkpoint is built locally once per test session (tests/tiny/depth_anything.py), so the whole
path runs — AutoImageProcessor, the model, post-processing, TACO's ``max - depth``, the cache and
the coloured map — with no download. Values are meaningless (random weights); the conventions,
formats, caching and errors are what is checked.
"""

from __future__ import annotations

import math
import sys
import time
import types

import numpy as np
import pytest
from PIL import Image

from taco_app.tools import depth
from taco_app.tools.depth import EstimateObjectDepth, EstimateRegionDepth
from taco_app.weights import DEPTH, MODELS, ModelUnavailable


@pytest.fixture(scope="session")
def tiny_depth(tmp_path_factory) -> str:
    from tests.tiny.depth_anything import build

    return str(build(tmp_path_factory.mktemp("tiny-depth-anything")))


@pytest.fixture
def tiny(tiny_depth, monkeypatch) -> str:
    monkeypatch.setenv(DEPTH.env, tiny_depth)
    return tiny_depth


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())  # 512x512 RGB


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.coffee())  # 600x400 RGB


def call(tool, arguments, image):
    return tool({"image": "image-0", **arguments}, lambda _id: image)


def depth_entries() -> list[tuple[str, str]]:
    return [key for key in MODELS.loaded() if key[0] == DEPTH.key]


@pytest.mark.parametrize("mode", [None, "mean", "center", "mode"])
def test_region_depth_end_to_end(tiny, astronaut, mode):
    arguments = {"bbox": [0.3, 0.2, 0.6, 0.5], **({"mode": mode} if mode else {})}
    result = call(EstimateRegionDepth(), arguments, astronaut)
    assert set(result.output) == {"depth"}
    value = result.output["depth"]
    assert isinstance(value, float) and math.isfinite(value) and value >= 0  # max - depth is never negative
    assert value == round(value, 2)
    low, high = result.overlays["depth_range"]
    assert low <= value <= high
    assert result.overlays["regions"] == [{"label": "depth", "bbox": [0.3, 0.2, 0.6, 0.5]}]
    picture = result.artifacts["depth_map"]
    assert picture.mode == "RGB" and picture.size == astronaut.size  # same size: overlays line up
    assert np.asarray(picture).std() > 1  # not a uniform image


def test_taco_convention_larger_prediction_is_closer(tiny, monkeypatch):
    """Depth-Anything predicts larger values for closer pixels; TACO reports smaller = closer."""
    raw = np.ones((100, 200), dtype=np.float32)
    raw[:, :100] = 10.0  # the left half is close to the camera
    monkeypatch.setattr(depth, "predict_depth", lambda image: raw)
    depth.clear_cache()
    image = Image.new("RGB", (200, 100), (12, 34, 56))
    tool = EstimateRegionDepth()
    left = call(tool, {"bbox": [0.0, 0.0, 0.5, 1.0]}, image).output["depth"]
    right = call(tool, {"bbox": [0.5, 0.0, 1.0, 1.0]}, image).output["depth"]
    assert left < right
    assert (left, right) == (0.0, 9.0)
    assert np.array_equal(depth.to_taco_depth(raw), raw.max() - raw)
    depth.clear_cache()  # the fake map must not answer later tests


def test_region_statistics_and_one_pixel_minimum():
    grid = np.arange(100, dtype=np.float32).reshape(10, 10)  # value = 10 * row + column
    assert depth.region_depth(grid, [0.0, 0.0, 0.2, 0.2], "mean") == 5.5
    assert depth.region_depth(grid, [0.0, 0.0, 0.4, 0.4], "center") == 22.0  # TACO's int centre
    plateau = np.full((10, 10), 3.0, dtype=np.float32)
    plateau[0, :3] = 1.0
    assert depth.region_depth(plateau, [0, 0, 1, 1], "mode") == 3.0
    # a box thinner than a pixel still reads one pixel, and never leaves the map
    assert depth.region_pixels([0.5, 0.5, 0.5001, 0.5001], 10, 10) == (5, 5, 6, 6)
    assert depth.region_pixels([0.99, 0.99, 1.0, 1.0], 10, 10) == (9, 9, 10, 10)
    assert depth.region_depth(grid, [0.999, 0.999, 1.0, 1.0], "mean") == 99.0


def test_second_query_on_same_image_reuses_the_map(tiny, coffee, monkeypatch):
    loads = []
    real_load = depth._load
    monkeypatch.setattr(depth, "_load", lambda *a: loads.append(a) or real_load(*a))
    for key in depth_entries():
        MODELS.unload(key)
    depth.clear_cache()
    tool = EstimateRegionDepth()

    def timed(image, bbox):
        started = time.perf_counter()
        value = call(tool, {"bbox": bbox}, image).output["depth"]
        return time.perf_counter() - started, value

    cold, _ = timed(coffee, [0.1, 0.1, 0.4, 0.4])  # loads the model, then computes the map
    other = coffee.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    first, _ = timed(other, [0.1, 0.1, 0.4, 0.4])  # new image, warm model: computes its map
    second, _ = timed(other, [0.5, 0.5, 0.9, 0.9])  # same image, another box: cached map
    print(f"\ntiny Depth-Anything on {coffee.size[0]}x{coffee.size[1]}: cold (load + map) {cold * 1000:.1f} ms, "
          f"first query {first * 1000:.1f} ms, second query {second * 1000:.2f} ms ({first / second:.0f}x)")
    assert first >= 10 * second
    assert len(loads) == 1 and depth_entries() == [(DEPTH.key, tiny)]


def test_cache_is_keyed_by_content_not_identity(tiny, astronaut):
    tool = EstimateRegionDepth()
    a = call(tool, {"bbox": [0.1, 0.1, 0.9, 0.9]}, astronaut)
    b = call(tool, {"bbox": [0.1, 0.1, 0.9, 0.9]}, astronaut.copy())  # another object, same pixels
    assert a.output == b.output
    assert a.artifacts["depth_map"].tobytes() == b.artifacts["depth_map"].tobytes()
    key = depth.cache_key(astronaut, tiny)
    assert key in depth._maps and key != depth.cache_key(astronaut.convert("L"), tiny)


def test_cache_evicts_least_recently_used(tiny, monkeypatch):
    runs = []
    monkeypatch.setattr(depth, "predict_depth", lambda image: runs.append(image.getpixel((0, 0))) or np.zeros((8, 8)))
    monkeypatch.setattr(depth, "CACHE_ENTRIES", 2)
    depth.clear_cache()
    red, green, blue = (Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue"))
    for image in (red, green, red, blue, red, green):  # blue evicts green (red was used more recently)
        depth.depth_map(image)
    assert runs == [(255, 0, 0), (0, 128, 0), (0, 0, 255), (0, 128, 0)]
    assert len(depth._maps) == 2
    depth.clear_cache()


def test_bad_mode_lists_the_choices(tiny, astronaut):
    with pytest.raises(ValueError, match="'mean', 'center', 'mode'"):
        call(EstimateRegionDepth(), {"bbox": [0, 0, 1, 1], "mode": "median"}, astronaut)
    with pytest.raises(ValueError, match="'mean', 'center', 'mode'"):
        call(EstimateObjectDepth(), {"object": "face", "mode": "deepest"}, astronaut)


def test_out_of_range_bbox_is_refused(tiny, astronaut):
    with pytest.raises(ValueError, match="between 0 and 1"):
        call(EstimateRegionDepth(), {"bbox": [10, 20, 300, 400]}, astronaut)


@pytest.fixture
def fake_localize(monkeypatch):
    """Replace detection.localize, whether or not taco_app/tools/detection.py exists yet."""

    def install(regions):
        calls = []

        def localize(image, objects, *, box_threshold=None, text_threshold=None):
            calls.append(list(objects))
            return [dict(r) for r in regions]

        try:
            from taco_app.tools import detection
        except ImportError:
            detection = types.ModuleType("taco_app.tools.detection")
            monkeypatch.setitem(sys.modules, "taco_app.tools.detection", detection)
        monkeypatch.setattr(detection, "localize", localize, raising=False)
        return calls

    return install


def test_object_not_found(tiny, astronaut, fake_localize):
    calls = fake_localize([])
    result = call(EstimateObjectDepth(), {"object": "a black cat"}, astronaut)
    assert result.output == {"depth": "Object not found."}
    assert calls == [["a black cat"]]


@pytest.mark.parametrize("mode", ["mean", "center", "mode"])
def test_object_depth_uses_the_best_scoring_box(tiny, astronaut, fake_localize, mode):
    fake_localize([
        {"label": "face", "bbox": [0.0, 0.0, 0.2, 0.2], "score": 0.41},
        {"label": "face", "bbox": [0.35, 0.1, 0.6, 0.4], "score": 0.87},
        {"label": "face", "bbox": [0.7, 0.7, 1.0, 1.0], "score": 0.55},
    ])
    result = call(EstimateObjectDepth(), {"object": "face", "mode": mode}, astronaut)
    expected = call(EstimateRegionDepth(), {"bbox": [0.35, 0.1, 0.6, 0.4], "mode": mode}, astronaut)
    assert result.output == expected.output
    assert result.overlays["regions"] == [{"label": "face", "bbox": [0.35, 0.1, 0.6, 0.4], "score": 0.87}]
    assert "depth_map" in result.artifacts


def test_missing_weights_fail_fast_with_the_fix(monkeypatch, tmp_path, astronaut):
    monkeypatch.setenv(DEPTH.env, "nobody/no-such-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TACO_ALLOW_DOWNLOAD", raising=False)
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable, match="python app.py download"):
        call(EstimateRegionDepth(), {"bbox": [0.1, 0.1, 0.5, 0.5]}, astronaut)
    assert time.perf_counter() - started < 2.0
