"""Opening the images people give us, with messages that say what went wrong.

Every upload is untrusted: whatever the file holds, ``load_image_info`` returns an upright RGB
image or raises ``ImageLoadError`` with a message for a person, and never decodes more pixels
than the limit allows. ``identify_image`` applies the same checks to bytes already read (an import),
and ``load_image_bytes`` opens bytes as ``load_image_info`` opens a file (a dataset's image column).
"""

from __future__ import annotations

import io
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from taco_app.settings import current, default_of


class ImageLoadError(ValueError):
    """An image that cannot be used; the message is meant for the person who gave it."""


# 64 megapixels (8000 x 8000) unless TACO_MAX_IMAGE_PIXELS says otherwise: above any phone camera,
# far below what would exhaust memory once the tools make copies. Checked from the header, before
# anything is decoded.
MAX_PIXELS = default_of("TACO_MAX_IMAGE_PIXELS")

# Only the formats we name to people. Pillow can open many more, some through outside programs
# (EPS runs Ghostscript) or little-used decoders; an upload has no business reaching those.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG covers MPO, the multi-picture JPEG
FORMAT_NAMES = "PNG, JPEG, WebP, GIF, BMP, TIFF"

# Pillow's own limit is the backstop for sizes our header check cannot see (a GIF frame that grows
# the canvas, a TIFF tile): it raises above twice MAX_IMAGE_PIXELS. Its warning below that adds a
# stray line to the CLI's one-line errors and says nothing our check does not.
_PILLOW_DEFAULT_LIMIT = Image.MAX_IMAGE_PIXELS or 0
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Likewise Pillow's warnings about damaged metadata ("Corrupt EXIF data"): the image is still used.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def max_pixels() -> int:
    return current().max_image_pixels


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as upright RGB (EXIF rotation applied), fully decoded."""
    return load_image_info(path)[0]


def load_image_info(path: str | Path) -> tuple[Image.Image, list[str]]:
    """Open an image file as upright RGB, with notes for the person about what was done to it.

    A note says, for example, that an animation's first frame was used. Raises ``ImageLoadError``
    for anything that cannot be used, never another exception.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"image {path} is empty (0 bytes): upload it again")
    return _decode(path, path, lambda: _head(path))


def identify_image(data: bytes, name: str) -> tuple[str, tuple[int, int]]:
    """Decode image bytes whole, with the checks of ``load_image_info``: Pillow's format and the size.

    For bytes read once and then kept as they are (an import stores the original file): proof that
    they are an image this app can open, before they are stored. Raises ``ImageLoadError`` only.
    """
    path = Path(name)
    if not data:
        raise ImageLoadError(f"image {path.name} is empty (0 bytes)")
    limit = _pixel_limit()
    with _load_errors(path, limit, lambda: data[:32]):
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            _check_size(path, img.size, limit)
            img.load()
            return str(img.format), img.size


def load_image_bytes(data: bytes, name: str) -> tuple[Image.Image, list[str]]:
    """``load_image_info`` for image bytes already in memory (a dataset's image column).

    The same checks, the same upright RGB result and notes; ``name`` says which image in messages.
    """
    path = Path(name)
    if not data:
        raise ImageLoadError(f"image {path.name} is empty (0 bytes)")
    return _decode(io.BytesIO(data), path, lambda: data[:32])


def _decode(source: Any, path: Path, head: Callable[[], bytes]) -> tuple[Image.Image, list[str]]:
    """The picture in ``source`` (a path or a file object), checked, decoded whole, upright and RGB, and the
    notes on what was done to it; ``path`` names it in messages, ``head`` gives its first bytes."""
    limit = _pixel_limit()
    with _load_errors(path, limit, head):
        with Image.open(source, formats=FORMATS) as img:
            _check_size(path, img.size, limit)
            img.load()
            notes = _frame_notes(path, img)
            upright, note = _upright(path, img)
            return to_rgb(upright), notes + note


def _pixel_limit() -> int:
    limit = max_pixels()
    # Raised with TACO_MAX_IMAGE_PIXELS, our limit must not be undercut by Pillow's.
    Image.MAX_IMAGE_PIXELS = max(_PILLOW_DEFAULT_LIMIT, limit)
    return limit


@contextmanager
def _load_errors(path: Path, limit: int, head: Callable[[], bytes]) -> Iterator[None]:
    """Turn whatever opening an image raises into an ``ImageLoadError`` that says why, for a person."""
    try:
        yield
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f" ({int(found.group(1)) / 1e6:.0f} megapixels)" if found else ""
        raise ImageLoadError(f"image {path.name} is too large to open safely{size}; the limit is {limit / 1e6:.0f}"
                             " megapixels: resize it (or raise TACO_MAX_IMAGE_PIXELS)") from err
    except UnidentifiedImageError as err:
        raise ImageLoadError(f"{path} is {_known_kind(head())}not an image format this app can read ({FORMAT_NAMES})") from err
    except MemoryError as err:
        raise ImageLoadError(f"image {path.name} is too large to open with the memory left: resize it") from err
    except Exception as err:  # a decoder's failure on a bad file is the file's fault, not ours
        raise ImageLoadError(f"cannot read image {path}: {_describe(err)}") from err


def _check_size(path: Path, size: tuple[int, int], limit: int) -> None:
    width, height = size
    if width * height > limit:
        raise ImageLoadError(
            f"image {path.name} is {width}x{height} ({width * height / 1e6:.0f} megapixels); the limit is"
            f" {limit / 1e6:.0f} megapixels: resize it (or raise TACO_MAX_IMAGE_PIXELS)")


def _frame_notes(path: Path, img: Image.Image) -> list[str]:
    """Say when only the first of several frames or pages is used (MPO's extra pictures are previews)."""
    if img.format == "MPO":
        return []
    try:
        frames = int(getattr(img, "n_frames", 1))
    except Exception:  # noqa: BLE001 - a broken later frame does not spoil the first, already decoded
        return [f"{path.name} has more than one frame; using the first"]
    if frames <= 1:
        return []
    what = "pages" if img.format == "TIFF" else "frames"
    return [f"{path.name} has {frames} {what}; using the first"]


def _upright(path: Path, img: Image.Image) -> tuple[Image.Image, list[str]]:
    """Apply the EXIF orientation; a broken EXIF block costs the rotation, not the image."""
    try:
        return ImageOps.exif_transpose(img), []
    except Exception:  # noqa: BLE001 - any failure here is in the EXIF block
        return img.copy(), [f"could not read the orientation of {path.name}; it is shown as stored"]


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: transparency on white, 16-bit and float scaled to 0-255."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = _to_8bit_grey(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")  # uses a palette's or a colour key's transparency too
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _to_8bit_grey(img: Image.Image) -> Image.Image:
    """16-bit and wider greys: scale to 0-255 rather than let convert() clip everything to white."""
    values = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        top = 65535.0
    elif img.mode == "F" and values.size and 0 <= values.min() and values.max() <= 1:
        top = 1.0  # a float image in 0-1
    else:  # "I" holds 16-bit PNGs on older Pillow, 8-bit data on some TIFFs
        top = 65535.0 if values.size and values.max() > 255 else 255.0
    scaled = np.clip(np.nan_to_num(values) * (255.0 / top), 0, 255).round().astype(np.uint8)
    grey = Image.fromarray(scaled)
    grey.info = dict(img.info)
    return grey


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(32)
    except OSError:
        return b""


def _known_kind(head: bytes) -> str:
    """Name a common format Pillow cannot read (from a file's first bytes), so the person knows what to convert."""
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"):
            return "a HEIC photo (convert it to JPEG or PNG), "
        if brand in (b"avif", b"avis"):
            return "an AVIF image (convert it to JPEG or PNG), "
    if head.lstrip()[:1] == b"<":
        return "text (HTML or XML), "
    return ""


def _describe(err: Exception) -> str:
    text = str(err)
    if isinstance(err, EOFError) or "truncated" in text.lower() or "Truncated" in text:
        return "the file is cut short (was the upload or download interrupted?)"
    if "broken data stream" in text or "broken" in text.lower() or isinstance(err, SyntaxError):
        return f"the file is damaged ({text or type(err).__name__})"
    return text or f"the file is damaged ({type(err).__name__})"
