"""The running web app's temporary files: one private folder per instance, removed when it stops.

Everything the app writes for the page lives under ``TACO_HOME/tmp/app-<host>-<pid>-<random>/``
(mode 700): Gradio's cache and uploads (``gradio/``, through ``GRADIO_TEMP_DIR``), the drawn
overlays (``overlays/``) and the work folders of web exports (``exports/``). Nothing goes to the
system temp folder, where other users could list and read people's photos and exports, and where
one instance stopping deleted files that another instance on the machine was still serving.

A folder left by an instance that was killed (its process is gone) is removed when the next
instance on this machine starts with the same data folder.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import tempfile
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Hashable

from PIL import Image

from taco_app.store.files import ImageFiles

OVERLAY_FORMAT = "webp"  # what Gradio made of a PIL image: small, and the page looks as it did


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with this pid: not ours to judge
        return True
    return True


class Scratch:
    """One instance's private temporary folder under ``root`` (``TACO_HOME/tmp``)."""

    def __init__(self, root: str | Path):
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        self._reap(root)
        # mkdtemp makes the folder 0700 with an unguessable name.
        self.path = Path(tempfile.mkdtemp(prefix=f"app-{_host()}-{os.getpid()}-", dir=root))
        self.gradio = self.path / "gradio"
        self.exports = self.path / "exports"
        for folder in (self.gradio, self.exports, self.path / "overlays"):
            folder.mkdir(mode=0o700)
        self.overlays = ImageFiles(self.path / "overlays")
        self._previous: str | None = None
        self._active = False
        self._lock = threading.Lock()

    @staticmethod
    def _reap(root: Path) -> None:
        """Remove the folders of this machine's instances whose process is gone (killed, crashed)."""
        prefix = f"app-{_host()}-"
        for folder in root.glob(prefix + "*"):
            pid = folder.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)

    def activate(self) -> None:
        """Point Gradio's cache and uploads here. Call before the Blocks is built: each component
        reads ``GRADIO_TEMP_DIR`` when it is created, the server when it starts."""
        with self._lock:
            self._previous = os.environ.get("GRADIO_TEMP_DIR")
            os.environ["GRADIO_TEMP_DIR"] = str(self.gradio)
            self._active = True

    def remove(self) -> None:
        """Delete the folder and give ``GRADIO_TEMP_DIR`` back its earlier value. Safe to call twice."""
        with self._lock:
            if self._active and os.environ.get("GRADIO_TEMP_DIR") == str(self.gradio):
                if self._previous is None:
                    os.environ.pop("GRADIO_TEMP_DIR", None)
                else:
                    os.environ["GRADIO_TEMP_DIR"] = self._previous
            self._active = False
            shutil.rmtree(self.path, ignore_errors=True)

    def lifespan(self, _app: Any) -> Any:
        """A FastAPI lifespan that removes the folder when the server shuts down."""

        @asynccontextmanager
        async def span() -> AsyncIterator[None]:
            try:
                yield
            finally:
                self.remove()

        return span()

    def picture(self, image: Image.Image | None) -> str | None:
        """A drawn overlay as a file for the page: content-addressed and written whole (atomically).

        Gradio is handed the path of a file that never changes once written. Handing it a PIL
        image made it re-encode the picture into the same cache file, truncating it, each time it
        was shown, while another tab was still downloading that file: a cut or empty image.
        """
        if image is None:
            return None
        buffer = io.BytesIO()
        # method 0: WebP's fastest encoder, same quality, a fifth larger: 12 ms instead of 65 ms for a
        # 512 x 512 overlay here, paid on every step shown in Review and every redraw of a live run.
        image.save(buffer, format=OVERLAY_FORMAT, method=0)
        return str(self.overlays.save_bytes(buffer.getvalue(), OVERLAY_FORMAT)[1])


class LatestFolders:
    """Each browser tab's latest folder of served files (an export's zip, a report's plots), removed when
    the tab's next one replaces it or the tab closes.

    Keyed by :func:`~taco_app.ui.live.owner`, not the session hash alone: another client could name it.
    """

    def __init__(self) -> None:
        self._folders: dict[Hashable, Path] = {}
        self._lock = threading.Lock()

    def replace(self, key: Hashable, folder: Path) -> None:
        with self._lock:
            previous, self._folders[key] = self._folders.get(key), folder
        if previous is not None and previous != folder:  # what it showed before is replaced by this
            shutil.rmtree(previous, ignore_errors=True)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            previous = self._folders.pop(key, None)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
