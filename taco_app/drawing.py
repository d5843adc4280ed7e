"""Drawing on images: region boxes with labels, the depth colour map and its scales, downscaling.

The pictures the tools produce (LocalizeObjects' and DetectFaces' annotated photos, Crop's outline,
the depth tool's coloured map) and the pictures the web app draws for a step (``ui/overlays.py``)
come from these functions, so a box or a depth map looks the same wherever it is shown.

Pillow and numpy only: this is a base module below the tools and the UI, and imports neither.
Boxes are normalised ``[left, top, right, bottom]`` in 0..1.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# One colour per region, in order; the first is the one a single box gets.
COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]
# A depth map with a side under this many pixels is too small for the scale bar drawn on it.
LEGEND_MIN_SIDE = 64

# matplotlib's "inferno" at 11 evenly spaced stops; interpolated below so matplotlib is not needed.
_INFERNO = np.array([
    (0, 0, 4), (22, 11, 57), (66, 10, 104), (106, 23, 110), (147, 38, 103), (188, 55, 84),
    (221, 81, 58), (243, 120, 25), (252, 165, 10), (246, 215, 70), (252, 255, 164),
], dtype=np.float32)
_DARK = (32, 32, 32)  # behind the depth scale's ramp and labels


# --- text and boxes ------------------------------------------------------------------------------


@cache
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` pixels (no font file needed), loaded once per size."""
    return ImageFont.load_default(size=size)


def label_size(size: tuple[int, int]) -> int:
    """The text size of region labels on an image of ``size``: 1/30 of its shorter side, 12 px at least."""
    return max(12, round(min(size) / 30))


def to_pixels(bbox: list[float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A normalised box as pixel coordinates on an image of ``size``."""
    width, height = size
    left, top, right, bottom = bbox
    return round(left * width), round(top * height), round(right * width), round(bottom * height)


def draw_regions(image: Image.Image, regions: Iterable[dict[str, Any]]) -> Image.Image:
    """An RGB copy of the image with each region's box and label (and score, if any) drawn on it.

    A region is ``{"bbox": [l, t, r, b], "label": str, "score": float}`` (label and score optional).
    The label sits above the box, or inside its top edge when there is no room above.
    """
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width, height = out.size
    line = max(2, round(min(width, height) / 200))
    text_font = font(label_size(out.size))
    for i, region in enumerate(regions):
        colour = COLOURS[i % len(COLOURS)]
        left, top, right, bottom = to_pixels(region["bbox"], out.size)
        draw.rectangle([left, top, right, bottom], outline=colour, width=line)
        label = str(region.get("label") or "")
        if "score" in region and region["score"] is not None:
            label = f"{label} {region['score']:.2f}".strip()
        if label:
            x0, y0, x1, y1 = draw.textbbox((left, top), label, font=text_font)
            y_shift = (y1 - y0) + 2 * line if top - (y1 - y0) - 2 * line >= 0 else 0
            draw.rectangle([x0, y0 - y_shift, x1 + 2 * line, y1 - y_shift + line], fill=colour)
            draw.text((left + line, top - y_shift), label, fill="white", font=text_font)
    return out


# --- depth maps ----------------------------------------------------------------------------------


def colormap(nearness: np.ndarray) -> np.ndarray:
    """Inferno colours for values in 0..1 (1 = nearest = bright): (..., 3) uint8."""
    positions = np.clip(nearness, 0.0, 1.0) * (len(_INFERNO) - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, len(_INFERNO) - 1)
    frac = (positions - low)[..., None]
    return (_INFERNO[low] * (1 - frac) + _INFERNO[high] * frac + 0.5).astype(np.uint8)


def depth_ramp(width: int, height: int) -> Image.Image:
    """The colour ramp of a depth scale: near (bright) on the left to far (dark) on the right."""
    ramp = colormap(np.linspace(1.0, 0.0, width))
    return Image.fromarray(np.repeat(ramp[None], height, axis=0), "RGB")


def colorize_depth(depth: np.ndarray) -> Image.Image:
    """A depth map (smaller = nearer) coloured near = bright, far = dark, with a scale bar drawn on it.

    The scale bar (the ramp, with the nearest and farthest depths) sits in the bottom-left corner;
    maps with a side under :data:`LEGEND_MIN_SIDE` get none (see :func:`depth_legend`).
    """
    low, high = float(depth.min()), float(depth.max())
    span = high - low
    nearness = (high - depth) / span if span > 0 else np.ones_like(depth)
    picture = Image.fromarray(colormap(nearness), "RGB")
    width, height = picture.size
    if min(width, height) < LEGEND_MIN_SIDE:  # too small for a legible legend
        return picture
    draw = ImageDraw.Draw(picture)
    pad = max(4, min(width, height) // 60)
    text_font = font(max(10, min(width, height) // 40))
    near_label, far_label = f"near {low:.2f}", f"far {high:.2f}"
    text_h = draw.textbbox((0, 0), near_label, font=text_font)[3]
    bar_w = min(width - 4 * pad, max(60, width // 3))
    bar_h = max(6, height // 50)
    x0, y0 = 2 * pad, height - 2 * pad - bar_h - text_h - pad
    draw.rectangle([x0 - pad, y0 - pad, x0 + bar_w + pad, height - pad], fill=_DARK)
    picture.paste(depth_ramp(bar_w, bar_h), (x0, y0))
    draw.rectangle([x0, y0, x0 + bar_w - 1, y0 + bar_h - 1], outline=(200, 200, 200))
    draw.text((x0, y0 + bar_h + pad // 2), near_label, fill="white", font=text_font)
    far_w = draw.textlength(far_label, font=text_font)
    draw.text((x0 + bar_w - far_w, y0 + bar_h + pad // 2), far_label, fill="white", font=text_font)
    return picture


def depth_legend(picture: Image.Image, low: float, high: float) -> Image.Image:
    """The picture with a band below it: the colour ramp from near (bright) to far (dark), with values.

    For maps too small to carry the scale bar :func:`colorize_depth` draws on larger ones. Drawn
    below, not on, the map, so it never hides the region.
    """
    width, height = picture.size
    size = label_size(picture.size)  # the same text size as the region labels
    text_font = font(size)
    pad = max(4, size // 2)
    bar_h = max(8, size)
    band = Image.new("RGB", (width, height + 3 * pad + bar_h + size), _DARK)
    band.paste(picture, (0, 0))
    band.paste(depth_ramp(max(1, width - 2 * pad), bar_h), (pad, height + pad))  # left = near, as on the map
    draw = ImageDraw.Draw(band)
    near, far = f"near {low:g}", f"far {high:g}"
    text_y = height + 2 * pad + bar_h - size // 6
    draw.text((pad, text_y), near, fill="white", font=text_font)
    draw.text((width - pad - draw.textlength(far, font=text_font), text_y), far, fill="white", font=text_font)
    return band


# --- size ----------------------------------------------------------------------------------------


def fit_within(image: Image.Image, max_side: int, *, reducing_gap: float | None = None) -> Image.Image:
    """``image`` with no side over ``max_side`` pixels, aspect kept (Lanczos); the same object if it fits.

    Normalised boxes still line up on the result. ``reducing_gap``: Pillow's option to shrink by a
    whole factor first, much faster on huge images at a small cost in quality (None: exact Lanczos).
    """
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=reducing_gap)
