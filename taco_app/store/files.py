"""Content-addressed image files under ``TACO_HOME/images``: each distinct image stored once."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from pathlib import Path

from PIL import Image


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that it appears whole or not at all, even with several writers at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")  # unique: threads may write the same file
    tmp.write_bytes(data)
    os.replace(tmp, path)  # atomic: a crash never leaves half a file under the final name


class ImageFiles:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def save(self, image: Image.Image) -> tuple[str, Path]:
        """Store an image as PNG; returns its sha256 and path. Idempotent."""
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=1)  # speed over size: tool outputs are many
        return self.save_bytes(buf.getvalue(), "png")

    def save_bytes(self, data: bytes, ext: str) -> tuple[str, Path]:
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / digest[:2] / f"{digest}.{ext}"
        if not path.exists():
            write_atomic(path, data)
        return digest, path

    def save_file(self, source: str | Path) -> tuple[str, Path]:
        """Store an input file as it is (its original bytes and format)."""
        source = Path(source)
        ext = source.suffix.lstrip(".").lower() or "bin"
        return self.save_bytes(source.read_bytes(), ext)
