"""Opening awkward image files: each loads as upright RGB or fails with a message for a person."""

from __future__ import annotations

import subprocess
import sys
import time
import traceback
from pathlib import Path

import PIL
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from taco_app.media import ImageLoadError, load_image, load_image_info

from .conftest import ROOT
from .corpus.make_corpus import GIF_COLOURS, ROTATED_STORED_SIZE, make

# name -> (size, pixel to check, its colour, notes) for the files that must load
LOADS = {
    "one_pixel.png": ((1, 1), (0, 0), (10, 20, 30), []),
    "wide.png": ((20000, 200), (19999, 199), (128, 128, 128), []),
    "cmyk.jpg": ((64, 48), (32, 24), (255, 0, 0), []),
    "gray16.png": ((256, 16), (128, 8), (128, 128, 128), []),  # mid-grey, not clipped to white
    "transparent.png": ((40, 30), (0, 0), (255, 255, 255), []),
    "palette_transparent.png": ((40, 30), (0, 0), (255, 255, 255), []),
    "la.png": ((20, 10), (5, 5), (255, 255, 255), []),
    "animated.gif": ((32, 24), (5, 5), GIF_COLOURS[0], ["animated.gif has 3 frames; using the first"]),
    "animated.webp": ((32, 24), (5, 5), GIF_COLOURS[0], ["animated.webp has 3 frames; using the first"]),
    "two_pages.tiff": ((32, 24), (5, 5), GIF_COLOURS[0], ["two_pages.tiff has 2 pages; using the first"]),
    "photo.webp": ((300, 200), None, None, []),
    "photo.bmp": ((300, 200), None, None, []),
    "photo.jpg": ((300, 200), None, None, []),
}

# name -> words the message must hold
REFUSED = {
    "truncated.jpg": "the file is cut short",
    "truncated_header.jpg": "the file is cut short",
    "truncated.png": "the file is cut short",
    "corrupt_middle.jpg": "the file is damaged",
    "text.jpg": "is not an image format this app can read (PNG, JPEG, WebP, GIF, BMP, TIFF)",
    "html_saved_as.png": "is text (HTML or XML), not an image format this app can read",
    "photo.heic": "is a HEIC photo (convert it to JPEG or PNG), not an image format this app can read",
    "empty.png": "is empty (0 bytes)",
    "bomb.png": "too large to open safely (900 megapixels); the limit is 64 megapixels",
    "gif_frame_bomb.gif": "too large to open safely (900 megapixels); the limit is 64 megapixels",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make(tmp_path_factory.mktemp("corpus"))


PILLOW = Path(PIL.__file__).resolve().parent


def refused_by_pillow(err: ImageLoadError) -> bool:
    """Whether Pillow refused the file, rather than our own code failing after it.

    load_image_info turns every exception into an ImageLoadError, so a bug in our conversion would
    pass for a bad file. Its own checks raise ImageLoadError directly (no cause); anything else must
    have come out of a call from our decoding (media._decode, which load_image_info and load_image_bytes
    share) straight into Pillow.
    """
    cause = err.__cause__
    if cause is None:
        return True
    frames = traceback.extract_tb(cause.__traceback__)
    ours = [i for i, frame in enumerate(frames) if frame.name in ("load_image_info", "_decode")]
    below = ours[-1] + 1 if ours else len(frames)
    return below < len(frames) and Path(frames[below].filename).resolve().is_relative_to(PILLOW)


def failure(err: ImageLoadError) -> str:
    return "".join(traceback.format_exception(err.__cause__ or err))


def close(a, b, tolerance=8):
    return all(abs(x - y) <= tolerance for x, y in zip(a, b))


def test_the_corpus_is_fully_covered(corpus):
    assert set(corpus) == set(LOADS) | set(REFUSED) | {"exif_rotated.jpg"}


@pytest.mark.parametrize("name", sorted(LOADS))
def test_loads_as_rgb(corpus, name):
    size, xy, colour, expected_notes = LOADS[name]
    img, notes = load_image_info(corpus[name])
    assert img.mode == "RGB" and img.size == size
    if xy is not None:
        assert close(img.getpixel(xy), colour), img.getpixel(xy)
    assert notes == expected_notes


def test_sixteen_bit_grey_keeps_its_ramp(corpus):
    img = load_image(corpus["gray16.png"])
    row = [img.getpixel((x, 0))[0] for x in range(0, 256, 32)]
    assert row == sorted(row) and row[0] == 0 and img.getpixel((255, 0)) == (255, 255, 255)


def test_transparency_goes_on_white_and_the_opaque_part_keeps_its_colour(corpus):
    assert close(load_image(corpus["transparent.png"]).getpixel((15, 15)), (0, 0, 255))
    assert close(load_image(corpus["palette_transparent.png"]).getpixel((15, 15)), (0, 128, 0))


def test_exif_orientation_is_applied(corpus):
    img = load_image(corpus["exif_rotated.jpg"])
    width, height = ROTATED_STORED_SIZE
    assert img.size == (height, width)  # shown portrait
    assert close(img.getpixel((5, 5)), (255, 0, 0), 24)  # the marker, where a person sees it: top left
    for corner in [(height - 5, 5), (5, width - 5), (height - 5, width - 5)]:
        assert close(img.getpixel(corner), (255, 255, 255), 24)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_with_a_message_for_a_person(corpus, name):
    with pytest.raises(ImageLoadError) as err:
        load_image(corpus[name])
    assert REFUSED[name] in str(err.value)
    assert "\n" not in str(err.value)


def test_a_bomb_is_refused_quickly_without_decoding(corpus, monkeypatch):
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or real_load(self))
    for name in ("bomb.png", "gif_frame_bomb.gif"):
        start = time.perf_counter()
        with pytest.raises(ImageLoadError, match="too large"):
            load_image(corpus[name])
        assert time.perf_counter() - start < 1
    assert loads == []


def test_our_limit_refuses_below_pillows_from_the_header(tmp_path, monkeypatch):
    monkeypatch.setenv("TACO_MAX_IMAGE_PIXELS", "1000000")
    path = tmp_path / "big.png"
    Image.new("1", (2000, 1000)).save(path)
    with pytest.raises(ImageLoadError, match=r"2000x1000 \(2 megapixels\); the limit is 1 megapixels"):
        load_image(path)


def test_a_raised_limit_is_not_undercut_by_pillows(tmp_path, monkeypatch):
    monkeypatch.setenv("TACO_MAX_IMAGE_PIXELS", "400000000")
    path = tmp_path / "big.png"
    Image.new("1", (20000, 10000)).save(path)  # 200 megapixels: over Pillow's own default of 179
    assert load_image(path).size == (20000, 10000)


def test_every_corpus_file_loads_or_raises_image_load_error(corpus):
    for path in corpus.values():
        try:
            load_image_info(path)
        except ImageLoadError as err:
            assert refused_by_pillow(err), failure(err)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a",
                                                                  b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"II*\x00", b"BM"]))
def test_random_bytes_never_raise_anything_else(tmp_path, data, prefix):
    path = tmp_path / "random.img"
    path.write_bytes(prefix + data)
    try:
        img, notes = load_image_info(path)
    except ImageLoadError as err:
        assert str(err) and "\n" not in str(err)
        assert refused_by_pillow(err), failure(err)
    else:
        assert img.mode == "RGB" and isinstance(notes, list)


def app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120)


def test_cli_refuses_bad_images_in_one_line(corpus):
    for name in ("photo.heic", "empty.png", "bomb.png", "truncated.png"):
        result = app("run", "--image", str(corpus[name]), "--question", "q", "--backend", "replay:x.json")
        assert result.returncode == 2, (name, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and REFUSED[name] in result.stderr, (name, result.stderr)
        assert result.stdout == ""


def test_the_person_is_told_when_only_a_first_frame_is_used(tmp_path):
    import subprocess
    import sys

    from tests.corpus.make_corpus import make

    from .conftest import ROOT

    files = make(tmp_path / "corpus")
    script = tmp_path / "s.json"
    script.write_text('["{\\"thought\\":\\"done\\",\\"actions\\":[{\\"name\\":\\"Terminate\\",\\"arguments\\":{\\"answer\\":\\"ok\\"}}]}"]')
    done = subprocess.run([sys.executable, "app.py", "run", "--image", str(files["animated.gif"]), "--question", "q",
                           "--backend", f"replay:{script}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "note: image-0: animated.gif has 3 frames; using the first" in done.stderr
