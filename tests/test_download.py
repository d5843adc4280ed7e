"""`download` fills the Hugging Face cache; `doctor` and the tools then find the weights offline."""

from pathlib import Path

import pytest

from taco_app import cli
from taco_app import weights
from taco_app.weights import DEPTH, local_path


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def fake_snapshot(cache: Path, model_id: str) -> Path:
    """What `snapshot_download` leaves on disk: the cache layout of huggingface_hub."""
    repo = cache / f"models--{model_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    return snapshot


def test_download_without_network_fails_clearly_and_fast(hf_cache, capsys):
    code = cli.main(["download", "--only", "depth"])
    err = capsys.readouterr().err
    assert code == 1
    assert "could not download depth-anything/Depth-Anything-V2-Small-hf" in err
    assert "1 of 1 downloads failed" in err


def test_download_success_path(hf_cache, monkeypatch, capsys):
    monkeypatch.setattr(weights, "download", lambda model_id: fake_snapshot(hf_cache, model_id))
    assert cli.main(["download"]) == 0
    out = capsys.readouterr().out
    assert "HF_HUB_OFFLINE=1 now works" in out
    for slot in weights.SLOTS:
        assert local_path(slot.model_id) is not None


def test_cached_weights_are_found_offline(hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert local_path(DEPTH.model_id) is None
    snapshot = fake_snapshot(hf_cache, DEPTH.model_id)
    assert local_path(DEPTH.model_id) == snapshot


def test_doctor_says_what_is_missing_and_the_fix(hf_cache, capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "yes" in lines["OCR"] and "yes" in lines["Calculate"] and "yes" in lines["DetectFaces"]
    for name in ("LocalizeObjects", "GetObjects", "EstimateRegionDepth", "GetImageToTextsSimilarity"):
        assert lines[name].split()[-3:] == ["app.py", "download"] or "python app.py download" in lines[name], lines[name]
        assert " no " in lines[name]
    assert "run with a TACO model backend" in lines["QueryLanguageModel"]
    assert "tool models run on: cpu" in out
