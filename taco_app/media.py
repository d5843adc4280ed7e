"""Opening the images people give us, with messages that say what went wrong."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError


class ImageLoadError(ValueError):
    """An image that cannot be used; the message is meant for the person who gave it."""


# 64 megapixels (8000 x 8000): above any phone camera, far below what would exhaust memory once
# the tools make copies. Checked from the header, before anything is decoded.
MAX_PIXELS = 64_000_000


def max_pixels() -> int:
    value = os.environ.get("TACO_MAX_IMAGE_PIXELS", "")
    return int(value) if value.isdigit() and int(value) > 0 else MAX_PIXELS


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as upright RGB (EXIF rotation applied), fully decoded."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels():
                raise ImageLoadError(
                    f"image {path.name} is {width}x{height} ({width * height / 1e6:.0f} megapixels); the limit is"
                    f" {max_pixels() / 1e6:.0f} megapixels: resize it (or raise TACO_MAX_IMAGE_PIXELS)")
            img.load()
            upright = ImageOps.exif_transpose(img)
            return upright.convert("RGB")
    except Image.DecompressionBombError as err:
        raise ImageLoadError(f"image {path} is too large to open safely ({err})") from err
    except UnidentifiedImageError as err:
        raise ImageLoadError(f"{path} is not an image format this app can read (PNG, JPEG, WebP, GIF, BMP, TIFF)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"cannot read image {path}: {err}") from err
