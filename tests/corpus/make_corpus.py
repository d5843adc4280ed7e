"""Writes a corpus of awkward image files (broken, huge, odd modes) for the image-loading tests.

The files are generated, not committed: ``make(folder)`` writes them and returns their paths by
name; ``python -m tests.corpus.make_corpus DIR`` does the same from a shell. PIL and numpy only.
"""

from __future__ import annotations

import io
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# The EXIF-rotated photo: stored 120x80 (landscape) with a red marker in its stored bottom-left
# corner and orientation 6 ("rotate 90 clockwise to show"), so a person sees an 80x120 portrait
# with the marker in the top-left corner.
ROTATED_STORED_SIZE = (120, 80)
GIF_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def _jpeg_bytes(img: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", **params)
    return buffer.getvalue()


def _photo(size=(300, 200)) -> Image.Image:
    """Something with detail, so compressed data is long enough to cut and corrupt."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _gif_frame_bomb() -> bytes:
    """A 10x10 GIF whose first frame claims to be 30000x30000: the canvas grows to fit it."""
    header = b"GIF89a" + struct.pack("<HH", 10, 10) + bytes([0x80, 0, 0]) + bytes([0, 0, 0, 255, 255, 255])
    frame = b"," + struct.pack("<HHHH", 0, 0, 30000, 30000) + b"\x00"
    data = b"\x02\x02\x4c\x01\x00"  # LZW minimum code size 2, one short sub-block, end of data
    return header + frame + data + b";"


def make(folder: str | Path) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = folder / name
        files[name].write_bytes(data)

    def save(name: str, img: Image.Image, **params) -> None:
        files[name] = folder / name
        img.save(files[name], **params)

    photo = _photo()
    jpeg = _jpeg_bytes(photo, quality=90)
    png = io.BytesIO()
    photo.save(png, "PNG")
    png = png.getvalue()

    # Broken files
    put("truncated.jpg", jpeg[: len(jpeg) // 2])
    put("truncated_header.jpg", jpeg[:200])
    put("truncated.png", png[: len(png) // 2])
    middle = len(jpeg) // 2
    put("corrupt_middle.jpg", jpeg[:middle] + bytes(range(256)) * 8 + jpeg[middle + 2048:])
    put("text.jpg", b"This is not a picture, just some notes saved with the wrong name.\n" * 4)
    put("empty.png", b"")
    # An ISO base media box as an iPhone writes it: brand "heic"; Pillow has no HEIC reader.
    put("photo.heic", struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + b"\x00" * 64)
    put("html_saved_as.png", b"<!DOCTYPE html><html><body>403 Forbidden</body></html>")

    # Too many pixels: mode "1" compresses to almost nothing, so these are tiny on disk.
    save("bomb.png", Image.new("1", (30000, 30000)))
    put("gif_frame_bomb.gif", _gif_frame_bomb())

    # Odd but fine
    save("one_pixel.png", Image.new("RGB", (1, 1), (10, 20, 30)))
    save("wide.png", Image.new("L", (20000, 200), 128))
    save("cmyk.jpg", Image.new("CMYK", (64, 48), (0, 255, 255, 0)), quality=95)  # red
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (16, 1))  # black to white, left to right
    save("gray16.png", Image.fromarray(ramp))  # uint16 -> mode "I;16"
    rgba = Image.new("RGBA", (40, 30), (0, 0, 0, 0))  # transparent everywhere but a blue square
    ImageDraw.Draw(rgba).rectangle([10, 10, 19, 19], fill=(0, 0, 255, 255))
    save("transparent.png", rgba)
    palette = Image.new("P", (40, 30), 0)
    palette.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)  # 0 black (made transparent), 1 green
    ImageDraw.Draw(palette).rectangle([10, 10, 19, 19], fill=1)
    save("palette_transparent.png", palette, transparency=0)
    save("la.png", Image.new("LA", (20, 10), (0, 0)))  # grey, fully transparent

    rotated = Image.new("RGB", ROTATED_STORED_SIZE, "white")
    height = ROTATED_STORED_SIZE[1]
    ImageDraw.Draw(rotated).rectangle([0, height - 20, 19, height - 1], fill=(255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    save("exif_rotated.jpg", rotated, exif=exif.tobytes(), quality=95)

    frames = [Image.new("RGB", (32, 24), colour) for colour in GIF_COLOURS]
    save("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=100, loop=0)
    save("animated.webp", frames[0], save_all=True, append_images=frames[1:], duration=100, lossless=True)
    save("two_pages.tiff", frames[0], save_all=True, append_images=frames[1:2])
    save("photo.webp", photo, quality=80)
    save("photo.bmp", photo)
    save("photo.jpg", photo, quality=90)
    return files


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.corpus.make_corpus DIR")
    for name, path in make(sys.argv[1]).items():
        print(f"{name}\t{path.stat().st_size} bytes")
