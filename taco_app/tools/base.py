"""The tool interface: a small class with declared inputs and one ``forward`` method.

Arguments come from model output, so they are checked here, before a tool runs: a wrong or
missing argument raises ``TypeError``/``ValueError`` with a message the model can act on, and the
step loop turns it into TACO's failed-execution turn. Heavy models are loaded in ``setup()``, once
per process, on first use.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from PIL import Image

from taco_app.cota.backend import LanguageModel  # text in, text out: the active backend's own model

# Argument kinds a tool can declare.
IMAGE, IMAGES, BBOX, TEXT, TEXTS, NUMBER = "image", "images", "bbox", "text", "texts", "number"

_IMAGE_ID = re.compile(r"^\s*image[-_ ]?(\d+)\s*(?::.*)?$", re.I)


@dataclass
class ProducedImage:
    """An image a tool made; the loop gives it the next ``image-k`` id and feeds it to the model."""

    image: Image.Image
    parent: str | None = None  # the image id it was derived from
    bbox: list[float] | None = None  # the normalised region of the parent it shows


@dataclass
class ToolResult:
    output: dict[str, Any]  # the observation; ProducedImage values become 'image-k: <image>'
    overlays: dict[str, Any] = field(default_factory=dict)  # what the UI draws, JSON-safe
    artifacts: dict[str, Image.Image] = field(default_factory=dict)  # pictures for the UI only (e.g. a depth map)




@dataclass(frozen=True)
class ToolStatus:
    """What `doctor` says about a tool: what runs it, whether its weights are here, the fix."""

    model: str
    weights: str  # "yes" | "no" | "-" (nothing to download)
    ready: bool
    fix: str = ""


ImageLookup = Callable[[str], Image.Image]


class BadArguments(Exception):
    """An action's arguments are wrong (missing, unexpected, of the wrong kind, an image that does not exist).

    Raised as :class:`BadArgumentType` or :class:`BadArgumentValue`, which the model reads as the
    ``TypeError`` or ``ValueError`` TACO's tools raised; this class lets reports tell them from a tool's
    own failure.
    """


class BadArgumentType(BadArguments, TypeError):
    pass


class BadArgumentValue(BadArguments, ValueError):
    pass


class Tool:
    name: ClassVar[str]
    inputs: ClassVar[dict[str, str]] = {}  # argument -> kind, required
    optional: ClassVar[dict[str, str]] = {}  # argument -> kind, may be omitted
    model_id: ClassVar[str | None] = None  # the model it runs, for `doctor`
    uses_language_model: ClassVar[bool] = False  # forward() gets `language_model=` (None if there is none)
    timeout_s: ClassVar[float | None] = None  # the most one call may take; None: the session's (TACO_TOOL_TIMEOUT, 120 s)

    def __init__(self) -> None:
        self._ready = False
        self._lock = threading.Lock()

    slot: ClassVar[Any] = None  # the ModelSlot of a model-backed tool (weights via the HF cache)

    def setup(self) -> None:
        """Load heavy resources. Called once, on first use."""

    def status(self) -> ToolStatus:
        """Whether this tool can run here, without loading anything heavy."""
        if self.slot is None:
            return ToolStatus(self.model_id or "built in", "-", True)
        from taco_app.weights import local_path

        model_id = self.slot.model_id
        here = local_path(model_id) is not None
        return ToolStatus(f"{self.slot.title} ({model_id})", "yes" if here else "no", here,
                          "" if here else "python app.py download")

    def forward(self, **kwargs: Any) -> dict[str, Any] | ToolResult:
        raise NotImplementedError

    def ensure_ready(self) -> None:
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self.setup()
                    self._ready = True

    def __call__(self, arguments: dict[str, Any], lookup: ImageLookup, *, language_model: LanguageModel | None = None) -> ToolResult:
        try:
            kwargs = self.check_arguments(arguments, lookup)
        except (TypeError, ValueError) as err:  # the same text and class for the model; marked for the reports
            raise (BadArgumentType if isinstance(err, TypeError) else BadArgumentValue)(*err.args) from None
        if self.uses_language_model:
            kwargs["language_model"] = language_model
        self.ensure_ready()
        result = self.forward(**kwargs)
        if not isinstance(result, ToolResult):
            result = ToolResult(output=result)
        parent = arguments.get("image") if "image" in self.inputs else None
        for value in result.output.values():
            if isinstance(value, ProducedImage) and value.parent is None and isinstance(parent, str):
                value.parent = image_id(parent)
        return result

    def check_arguments(self, arguments: dict[str, Any], lookup: ImageLookup) -> dict[str, Any]:
        missing = [name for name in self.inputs if name not in arguments]
        if missing:
            raise TypeError(f"{self.name} is missing the argument {', '.join(repr(m) for m in missing)}; it takes {self._signature()}.")
        known = {**self.inputs, **self.optional}
        unknown = [name for name in arguments if name not in known]
        if unknown:
            raise TypeError(f"{self.name} got an unexpected argument {', '.join(repr(u) for u in unknown)}; it takes {self._signature()}.")
        return {name: convert(kind, name, arguments[name], lookup) for name, kind in known.items() if name in arguments}

    def _signature(self) -> str:
        names = list(self.inputs) + [f"{n} (optional)" for n in self.optional]
        return ", ".join(names) if names else "no arguments"


def content_key(image: Image.Image) -> str:
    """A key for caching results per picture: equal pixels, mode and size give the same key."""
    digest = hashlib.sha1(image.tobytes()).hexdigest()
    return f"{digest}:{image.mode}:{image.width}x{image.height}"


# --- argument conversion -------------------------------------------------------------------


def image_id(value: Any) -> str:
    """Normalise an image reference: 'image-1', 'image_1', 'Image 1', 'image-1: <image>', 1 → 'image-1'."""
    if isinstance(value, bool):
        raise TypeError(f"expected an image id like 'image-0', got {value!r}")
    if isinstance(value, int):
        return f"image-{value}"
    if isinstance(value, str):
        match = _IMAGE_ID.match(value)
        if match:
            return f"image-{int(match.group(1))}"
    raise ValueError(f"expected an image id like 'image-0', got {_short(value)}")


def convert(kind: str, name: str, value: Any, lookup: ImageLookup) -> Any:
    if kind == IMAGE:
        return lookup(image_id(value))
    if kind == IMAGES:
        return [lookup(image_id(v)) for v in as_list(name, value)]
    if kind == BBOX:
        return check_bbox(value)
    if kind == TEXT:
        if isinstance(value, (dict, list)) or value is None:
            raise TypeError(f"'{name}' must be a string, got {_short(value)}")
        return str(value)
    if kind == TEXTS:
        items = as_list(name, value)
        if not items or not all(isinstance(v, (str, int, float)) for v in items):
            raise TypeError(f"'{name}' must be a non-empty list of strings, got {_short(value)}")
        return [str(v) for v in items]
    if kind == NUMBER:
        return _number(name, value)
    return value


def check_bbox(value: Any) -> list[float]:
    """A normalised ``[left, top, right, bottom]`` box, each in 0..1, with left<right, top<bottom."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"bbox must be a list of 4 numbers [left, top, right, bottom], got {_short(value)}") from None
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ValueError(f"bbox must be a list of 4 numbers [left, top, right, bottom], got {_short(value)}")
    box = [_number("bbox", v) for v in value]
    if not all(0.0 <= v <= 1.0 for v in box):
        raise ValueError(f"Bounding box coordinates must be between 0 and 1 (fractions of the image width/height), got {box}")
    left, top, right, bottom = box
    if left >= right or top >= bottom:
        raise ValueError(f"bbox must have left < right and top < bottom, got {box}")
    return box


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(f"'{name}' must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise TypeError(f"'{name}' must be a number, got {_short(value)}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"'{name}' must be a finite number, got {_short(value)}")
    return float(value)


def as_list(name: str, value: Any) -> list[Any]:
    """A list argument as given, or parsed from a JSON string, or a lone value wrapped in a list."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = [value]
        value = parsed if isinstance(parsed, list) else [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"'{name}' must be a list, got {_short(value)}")
    return list(value)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
