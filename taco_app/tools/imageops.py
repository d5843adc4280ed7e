"""Crop and ZoomIn with TACO's semantics.

Boxes are normalised ``[left, top, right, bottom]`` in 0..1. Like TACO, Crop outlines the
requested region on the image, then cuts it out with a margin of half its size around it for
context; ZoomIn does the same and enlarges the result by ``zoom_factor``. The outline is drawn
by :func:`taco_app.drawing.draw_regions`, like every tool's boxes.
"""

from __future__ import annotations

from PIL import Image

from taco_app.drawing import draw_regions, to_pixels
from taco_app.tools.base import BBOX, IMAGE, NUMBER, ProducedImage, Tool, ToolResult

CONTEXT_MARGIN = 0.5  # TACO's expand_bbox: the crop is 1.5x the region, centred on it
MAX_SIDE = 4096  # a zoomed image never exceeds this many pixels per side


def expand_bbox(bbox: list[float], margin: float = CONTEXT_MARGIN) -> list[float]:
    """The box grown by ``margin`` of its size around its centre, clipped to the image."""
    left, top, right, bottom = bbox
    half_w = (right - left) * (1 + margin) / 2
    half_h = (bottom - top) * (1 + margin) / 2
    cx, cy = (left + right) / 2, (top + bottom) / 2
    return [max(0.0, cx - half_w), max(0.0, cy - half_h), min(1.0, cx + half_w), min(1.0, cy + half_h)]


def crop_region(image: Image.Image, bbox: list[float]) -> tuple[Image.Image, list[float]]:
    """Outline ``bbox`` and crop it with context; returns the crop and the region it shows."""
    outlined = draw_regions(image, [{"label": "", "bbox": bbox}])
    region = expand_bbox(bbox)
    left, top, right, bottom = to_pixels(region, outlined.size)
    right, bottom = max(right, left + 1), max(bottom, top + 1)  # never an empty image
    return outlined.crop((left, top, right, bottom)), [round(v, 4) for v in region]


class Crop(Tool):
    name = "Crop"
    inputs = {"image": IMAGE, "bbox": BBOX}

    def forward(self, image: Image.Image, bbox: list[float]) -> ToolResult:
        cropped, region = crop_region(image, bbox)
        return ToolResult(
            output={"image": ProducedImage(cropped, bbox=region)},
            overlays={"regions": [{"label": "crop", "bbox": bbox}]},
        )


class ZoomIn(Tool):
    name = "ZoomIn"
    inputs = {"image": IMAGE, "bbox": BBOX, "zoom_factor": NUMBER}

    def forward(self, image: Image.Image, bbox: list[float], zoom_factor: float) -> ToolResult:
        if zoom_factor <= 1:
            raise ValueError("Zoom factor must be greater than 1 to zoom in")
        cropped, region = crop_region(image, bbox)
        width, height = cropped.size
        # Bound the output: a large factor on a large crop would make a huge image.
        factor = min(zoom_factor, MAX_SIDE / max(width, height))
        factor = max(factor, 1.0)
        size = (max(1, int(width * factor)), max(1, int(height * factor)))
        zoomed = cropped.resize(size, Image.LANCZOS)
        return ToolResult(
            output={"image": ProducedImage(zoomed, bbox=region)},
            overlays={"regions": [{"label": f"zoom x{zoom_factor:g}", "bbox": bbox}], "zoom_factor_applied": round(factor, 3)},
        )
