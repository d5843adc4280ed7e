"""LocalizeObjects on a tiny random GroundingDINO of the real architecture, built locally.

Random weights give arbitrary boxes and scores, so the tests check TACO's observation format,
labelling, thresholds, loading and the step loop, not what is detected.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from PIL import Image

from taco_app.cota import events as ev
from taco_app.tools import default_tools, detection
from taco_app.tools.detection import LocalizeObjects, drop_duplicates, localize, match_label, number_labels
from taco_app.weights import DETECTION, MODELS, ModelUnavailable

from .conftest import of_kind, run_session
from .tiny.grounding_dino import build


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return build(tmp_path_factory.mktemp("grounding-dino-tiny"))


@pytest.fixture
def detector(tiny_checkpoint, monkeypatch):
    """The tiny checkpoint as the detection model, with thresholds that let every box through."""
    monkeypatch.setenv("TACO_DETECTION_MODEL", str(tiny_checkpoint))
    monkeypatch.setenv("TACO_BOX_THRESHOLD", "0.0")
    monkeypatch.setenv("TACO_TEXT_THRESHOLD", "0.0")
    return tiny_checkpoint


@pytest.fixture(scope="session")
def astronaut():
    from skimage import data

    return Image.fromarray(data.astronaut())


def step(name, **arguments):
    return json.dumps({"thought": "look", "actions": [{"name": name, "arguments": arguments}]})


def check_regions(regions, requested):
    """TACO's region format: label from the request, numbered without gaps; 2-decimal bbox and score."""
    seen: dict[str, int] = {}
    for region in regions:
        assert list(region) == ["label", "bbox", "score"]
        base, _, n = region["label"].rpartition("-")
        base, n = (base, int(n)) if n.isdigit() and base in requested else (region["label"], 1)
        assert base in requested
        seen[base] = seen.get(base, 0) + 1
        assert n == seen[base]  # cat, cat-2, cat-3 in order, no gaps
        bbox = region["bbox"]
        assert len(bbox) == 4 and all(isinstance(v, float) and 0 <= v <= 1 and round(v, 2) == v for v in bbox)
        assert bbox[0] <= bbox[2] and bbox[1] <= bbox[3]
        assert isinstance(region["score"], float) and 0 <= region["score"] <= 1 and round(region["score"], 2) == region["score"]
    scores = [r["score"] for r in regions]
    assert scores == sorted(scores, reverse=True)


def test_observation_is_tacos(detector, astronaut):
    result = LocalizeObjects()({"image": "image-0", "objects": ["person", "cup"]}, lambda i: astronaut)
    assert list(result.output) == ["image", "regions"]
    regions = result.output["regions"]
    assert regions, "with thresholds at 0 the tiny model returns boxes"
    check_regions(regions, {"person", "cup"})
    assert result.overlays["regions"] == regions
    produced = result.output["image"]
    assert produced.parent == "image-0"
    assert produced.image.size == astronaut.size
    assert produced.image.tobytes() != astronaut.convert("RGB").tobytes()  # boxes were drawn


def test_objects_as_one_string(detector, astronaut):
    result = LocalizeObjects()({"image": "image-0", "objects": "person"}, lambda i: astronaut)
    assert result.output["regions"]
    check_regions(result.output["regions"], {"person"})
    # GroundingDINO's own prompt syntax is read as the objects it names
    check_regions(localize(astronaut, "Person. cup."), {"Person", "cup"})


def test_thresholds(detector, astronaut, monkeypatch):
    everything = localize(astronaut, ["person", "cup"])
    monkeypatch.delenv("TACO_BOX_THRESHOLD")
    monkeypatch.delenv("TACO_TEXT_THRESHOLD")
    default = localize(astronaut, ["person", "cup"])  # 0.35 / 0.25
    assert len(default) <= len(everything) and all(r["score"] >= 0.35 for r in default)
    strict = localize(astronaut, ["person", "cup"], box_threshold=0.7)
    assert all(r["score"] >= 0.7 for r in strict) and len(strict) <= len(default)
    monkeypatch.setenv("TACO_BOX_THRESHOLD", "0.7")
    assert localize(astronaut, ["person", "cup"]) == strict
    monkeypatch.setenv("TACO_BOX_THRESHOLD", "high")
    with pytest.raises(ValueError, match="TACO_BOX_THRESHOLD"):
        localize(astronaut, ["cup"])
    with pytest.raises(ValueError, match="text_threshold"):
        localize(astronaut, ["cup"], box_threshold=0.3, text_threshold=2)


def test_nothing_found_returns_the_image_unchanged(detector, astronaut, monkeypatch):
    assert localize(astronaut, ["cup"], box_threshold=1.0) == []
    monkeypatch.setenv("TACO_BOX_THRESHOLD", "1.0")  # no score can exceed it
    empty = LocalizeObjects()({"image": "image-0", "objects": ["cup"]}, lambda i: astronaut)
    assert empty.output["regions"] == [] and empty.overlays["regions"] == []
    assert empty.output["image"].image.tobytes() == astronaut.convert("RGB").tobytes()


@pytest.mark.parametrize("objects", [[], [""], [" . "], [{"a": 1}]])
def test_bad_objects_are_explained(detector, astronaut, objects):
    with pytest.raises((TypeError, ValueError), match="objects"):
        LocalizeObjects()({"image": "image-0", "objects": objects}, lambda i: astronaut)


def test_number_labels_like_taco():
    made = [
        {"label": "utensil", "bbox": [0.12, 0.23, 0.17, 0.85], "score": 0.51},
        {"label": "napkin", "bbox": [0.5, 0.5, 0.6, 0.6], "score": 0.4},
        {"label": "utensil", "bbox": [0.18, 0.41, 0.24, 0.84], "score": 0.65},
        {"label": "utensil", "bbox": [0.06, 0.3, 0.12, 0.85], "score": 0.63},
    ]
    assert [(r["label"], r["score"]) for r in number_labels(made)] == [
        ("utensil", 0.65), ("utensil-2", 0.63), ("utensil-3", 0.51), ("napkin", 0.4)]
    assert number_labels([]) == []


def test_duplicates_of_one_label_are_dropped():
    boxes = [
        {"label": "cat", "bbox": [0.1, 0.1, 0.5, 0.5], "score": 0.9},
        {"label": "cat", "bbox": [0.11, 0.1, 0.5, 0.51], "score": 0.8},  # the same cat again
        {"label": "dog", "bbox": [0.1, 0.1, 0.5, 0.5], "score": 0.7},  # another label: kept
        {"label": "cat", "bbox": [0.6, 0.6, 0.9, 0.9], "score": 0.6},
    ]
    assert [r["score"] for r in drop_duplicates(boxes)] == [0.9, 0.7, 0.6]


def test_phrases_map_back_to_requested_objects():
    requested = [("Coffee cup", "coffee cup"), ("person", "person"), ("red car", "red car"), ("blue car", "blue car")]
    assert match_label("coffee cup", requested) == "Coffee cup"
    assert match_label("coffee", requested) == "Coffee cup"
    assert match_label("person. [SEP]", requested) == "person"
    assert match_label("person coffee cup", requested) == "Coffee cup"  # the longest one it contains
    assert match_label("car", requested) == "car"  # ambiguous: the phrase is kept


def test_phrase_fallback_without_token_offsets(detector, astronaut, monkeypatch):
    # A tokenizer without offsets: labels come from the decoded phrases instead.
    monkeypatch.setattr(detection, "_token_spans", lambda *args: None)
    regions = localize(astronaut, ["person", "cup"])
    assert regions
    check_regions(regions, {"person", "cup"})


def test_model_loads_once_and_stays_warm(detector, astronaut, monkeypatch, capsys):
    for key in MODELS.loaded():
        if key[0] == DETECTION.key:
            MODELS.unload(key)
    loads = []
    real_load = detection._load
    monkeypatch.setattr(detection, "_load", lambda *args: loads.append(args) or real_load(*args))
    tool = LocalizeObjects()
    times = []
    for _ in range(4):
        started = time.perf_counter()
        tool({"image": "image-0", "objects": ["person"]}, lambda i: astronaut)
        times.append(time.perf_counter() - started)
    cold, warm = times[0], min(times[1:])  # the best warm call: other processes' CPU load only adds noise
    assert len(loads) == 1
    assert [key for key in MODELS.loaded() if key[0] == DETECTION.key] == [(DETECTION.key, str(detector))]
    load_s = MODELS.loaded()[(DETECTION.key, str(detector))].load_s
    with capsys.disabled():
        print(f"\nLocalizeObjects on the tiny checkpoint: cold {cold:.3f}s (loading {load_s:.3f}s), warm {warm:.3f}s")
    assert warm < cold


def test_missing_weights_fail_fast_without_network(monkeypatch, astronaut):
    attempts = []
    guarded = socket.socket.connect

    def record(self, address):
        attempts.append(address)
        return guarded(self, address)

    monkeypatch.setattr(socket.socket, "connect", record)
    monkeypatch.setenv("TACO_DETECTION_MODEL", "nobody/no-such-model")
    monkeypatch.delenv("TACO_ALLOW_DOWNLOAD", raising=False)
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable, match="python app.py download"):
        LocalizeObjects()({"image": "image-0", "objects": ["cup"]}, lambda i: astronaut)
    assert time.perf_counter() - started < 2
    assert attempts == []


def test_step_loop_feeds_tacos_observation(detector, astronaut):
    outputs = [step("LocalizeObjects", image="image-0", objects=["person", "cup"]), step("Terminate", answer="done")]
    events = run_session(outputs, [astronaut], tools=default_tools().replace(LocalizeObjects()))
    observation = of_kind(events, ev.Observation)[0]
    assert observation.error is None
    assert observation.observation.startswith("OBSERVATION:\n{'image': 'image-1: <image>', 'regions': [")
    assert observation.overlays["regions"] and observation.overlays["on"] == "image-0"
    produced = of_kind(events, ev.ImageProduced)
    assert len(produced) == 1 and produced[0].image.image_id == "image-1"
