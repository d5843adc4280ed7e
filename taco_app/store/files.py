"""Content-addressed image files under ``TACO_HOME/images``: each distinct image stored once."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from PIL import Image

from taco_app.store import StoreError


@contextmanager
def atomic_writer(path: Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file to stream into that appears under ``path`` whole, or not at all.

    The bytes go to a unique temp file beside ``path`` (the same folder, so the same filesystem
    and an atomic rename), which replaces ``path`` only when the block ends without an error and
    is removed when it raises. A process killed mid-write leaves ``path`` as it was, plus a stray
    ``<name>.<hex>.tmp``. ``durable`` also flushes the bytes to disk before the rename, so a power
    cut cannot leave the new name on an empty file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")  # unique: threads may write the same file
    try:
        with open(tmp, "xb") as file:
            yield file
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(tmp, path)  # atomic: a crash never leaves half a file under the final name
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that it appears whole or not at all, even with several writers at once."""
    with atomic_writer(path) as file:
        file.write(data)


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
            try:
                write_atomic(path, data)
            except OSError as err:  # a full disk, a read-only or vanished folder: not the model's doing
                reason = os.strerror(err.errno) if err.errno else str(err)
                raise StoreError(f"An image could not be saved in {self.root} ({reason}). Nothing more was saved;"
                                 " free some space or fix the folder, then try again.") from err
        return digest, path

    def save_file(self, source: str | Path) -> tuple[str, Path]:
        """Store an input file as it is (its original bytes and format)."""
        source = Path(source)
        ext = source.suffix.lstrip(".").lower() or "bin"
        return self.save_bytes(source.read_bytes(), ext)
