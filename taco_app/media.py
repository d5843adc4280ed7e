"""Opening the images people give us, with messages that say what went wrong."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError


class ImageLoadError(ValueError):
    """An image that cannot be used; the message is meant for the person who gave it."""


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as upright RGB (EXIF rotation applied), fully decoded."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)
            return upright.convert("RGB")
    except Image.DecompressionBombError as err:
        raise ImageLoadError(f"image {path} is too large to open safely ({err})") from err
    except UnidentifiedImageError as err:
        raise ImageLoadError(f"{path} is not an image format this app can read (PNG, JPEG, WebP, GIF, BMP, TIFF)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"cannot read image {path}: {err}") from err
