"""The tool-model manager: load once, keep warm, evict the least recently used on GPU pressure."""

import time

import pytest

from taco_app.weights import ModelManager, ModelSlot, ModelUnavailable, from_pretrained, local_path

A = ModelSlot("a", "Model A", "org/a", "TEST_MODEL_A")
B = ModelSlot("b", "Model B", "org/b", "TEST_MODEL_B")
C = ModelSlot("c", "Model C", "org/c", "TEST_MODEL_C")


class Loader:
    """A fake loader; the fake ids have no weights on disk, so the manager is told not to look."""

    def __init__(self):
        self.calls = []

    def __call__(self, model_id, device):
        self.calls.append((model_id, device))
        return f"{model_id}@{device}"


def test_loads_once_and_keeps_warm():
    manager, loader = ModelManager(device="cpu"), Loader()
    assert manager.get(A, loader, check_weights=False) == "org/a@cpu"
    assert manager.get(A, loader, check_weights=False) == "org/a@cpu"
    assert loader.calls == [("org/a", "cpu")]


def test_env_override_loads_the_new_model(monkeypatch):
    detection = ModelSlot("detection", "Model D", "org/d", "TACO_DETECTION_MODEL")  # a declared setting
    manager, loader = ModelManager(device="cpu"), Loader()
    manager.get(detection, loader, check_weights=False)
    monkeypatch.setenv("TACO_DETECTION_MODEL", "/models/other")
    assert manager.get(detection, loader, check_weights=False) == "/models/other@cpu"
    assert len(manager.loaded()) == 2


def test_gpu_pressure_evicts_least_recently_used():
    """A fake 10 kB GPU: free memory is what the loaded models leave."""
    size = {"org/a": 4_000, "org/b": 4_000, "org/c": 4_000}
    holder = {}
    free = lambda: 10_000 - sum(size[model_id] for _, model_id in holder["m"].loaded())  # noqa: E731
    manager, loader = ModelManager(device="cuda", free_bytes=free), Loader()
    holder["m"] = manager
    manager._release = lambda: None  # no real CUDA here
    manager.get(A, loader, estimate_bytes=4_000, check_weights=False)
    manager.get(B, loader, estimate_bytes=4_000, check_weights=False)
    manager.get(A, loader, check_weights=False)  # A becomes the most recently used
    manager.get(C, loader, estimate_bytes=4_000, check_weights=False)  # needs 4800, 2000 free: B must go
    assert manager.evictions == [("b", "org/b")]
    assert set(manager.loaded()) == {("a", "org/a"), ("c", "org/c")}
    assert loader.calls == [("org/a", "cuda"), ("org/b", "cuda"), ("org/c", "cuda")]


def test_real_make_room_stops_when_enough_is_free():
    frees = iter([1_000, 1_000, 100_000])
    manager = ModelManager(device="cuda", free_bytes=lambda: next(frees))
    manager._release = lambda: None
    manager._loaded.update({("x", "1"): None, ("y", "2"): None, ("z", "3"): None})
    manager._make_room(50_000)
    assert manager.evictions == [("x", "1"), ("y", "2")]


def test_cpu_never_evicts():
    manager, loader = ModelManager(device="cpu", free_bytes=lambda: 0), Loader()
    for slot in (A, B, C):
        manager.get(slot, loader, estimate_bytes=10**12, check_weights=False)
    assert manager.evictions == [] and len(manager.loaded()) == 3


def test_missing_weights_fail_fast_with_the_fix():
    class Never:
        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            raise AssertionError("must not be called when the weights are missing")

    started = time.perf_counter()
    with pytest.raises(ModelUnavailable, match="python app.py download"):
        from_pretrained(A, Never, "nobody/no-such-model")
    assert time.perf_counter() - started < 2


def test_local_path_accepts_a_folder_with_config(tmp_path):
    assert local_path(str(tmp_path)) is None
    (tmp_path / "config.json").write_text("{}")
    assert local_path(str(tmp_path)) == tmp_path
    assert local_path("nobody/no-such-model") is None


def test_manager_reports_missing_weights_before_loading():
    manager, loader = ModelManager(), Loader()
    with pytest.raises(ModelUnavailable, match="TEST_MODEL_A"):
        manager.get(A, loader)
    assert loader.calls == [] and manager._device is None  # nothing loaded, torch not even asked
