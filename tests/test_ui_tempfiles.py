"""What the web app leaves in temporary folders: private while it runs, nothing once it stops.

The app runs as a real process (``python app.py``) with its data folder in a test folder and the
system temp folder (``TMPDIR``) pointed at a fresh, world-writable folder like ``/tmp``; it is
driven through its API and stopped with SIGINT (Ctrl-C), then both folders are inspected. Two
instances with different data folders must not break each other when one stops.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image

from .conftest import ROOT
from .ui_server import free_port, submit_when_waiting

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

EXAMPLES = ROOT / "assets" / "examples"
FUEL = EXAMPLES / "fuel_prices.png"


def system_tmp(tmp_path: Path) -> Path:
    """A fresh folder like /tmp: anyone may create files in it (mode 1777)."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    folder.chmod(0o1777)
    return folder


@contextmanager
def app_process(home: Path, tmp: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python app.py`` with TACO_HOME=home and TMPDIR=tmp; its URL once it answers. Killed if left running."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    env.update(TACO_HOME=str(home), TMPDIR=str(tmp))
    home.parent.mkdir(parents=True, exist_ok=True)
    log = (home.parent / f"app-{port}.log").open("wb")
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (home.parent / f"app-{port}.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "the app did not answer"
                time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        log.close()


def interrupt(process: subprocess.Popen) -> None:
    """Ctrl-C, and wait for the app to exit."""
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) in (0, 130)


def readable_by_others(root: Path) -> list[str]:
    """Files under ``root`` that a user other than the owner (a group member or anyone) can read.

    ``root`` itself is taken to be reachable (like /tmp); below it, every folder on the way must
    let that user in (x) and the file must let them read (r).
    """
    exposed = []

    def walk(folder: Path, reach: int) -> None:
        for entry in folder.iterdir():
            mode = entry.lstat().st_mode
            if stat.S_ISDIR(mode):
                if mode & reach & 0o011:  # listable or enterable by someone else: look inside
                    exposed.extend([f"{entry}/ (mode {stat.S_IMODE(mode):o})"] if mode & reach & 0o044 else [])
                    walk(entry, reach & ((mode & 0o011) * 4 | (mode & 0o011)))
            elif mode & reach & 0o044:
                exposed.append(f"{entry} (mode {stat.S_IMODE(mode):o})")

    walk(root, 0o055)
    return exposed


def everything(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_temporary_files_are_private_and_gone_after_ctrl_c(tmp_path):
    home, tmp = tmp_path / "home", system_tmp(tmp_path)
    with app_process(home, tmp) as (url, process):
        client = Client(url, verbose=False, download_files=False)
        # A few sessions, with uploaded photos: a replayed example and a manual one.
        job = client.submit([handle_file(str(FUEL))], "How much gas can I buy with $50?",
                            "Replay example: fuel_prices", False, api_name="/ask")
        final = job.result(timeout=240)
        assert "gallons" in str(final[0])
        job = client.submit([handle_file(str(EXAMPLES / "astronaut.png"))], "Crop it",
                            "Manual: write each step yourself", False, api_name="/ask")
        submit_when_waiting(client, "Closer.", "Crop", '{"image": "image-0", "bbox": [0.2, 0.1, 0.7, 0.6]}')
        submit_when_waiting(client, "Done.", "Terminate", '{"answer": "cropped"}')
        session = job.result(timeout=240)[5].split("`")[1]
        picture = client.predict(session, 1, api_name="/show_stored_step")[2]
        # Two web exports: the second replaces the first's download.
        first, _count = client.predict("cota-mantis", "any", False, "", api_name="/export")
        second, _count = client.predict("cota-mantis", "any", False, "", api_name="/export")
        with urllib.request.urlopen(second["url"], timeout=30) as response:
            archive = tmp_path / "export.zip"
            archive.write_bytes(response.read())
        with zipfile.ZipFile(archive) as zipped:
            assert session in zipped.read("data.jsonl").decode()

        assert not readable_by_others(tmp), readable_by_others(tmp)
        private = home.resolve()
        for path in (picture["path"], first["path"], second["path"]):  # everything served comes from the data folder
            assert Path(path).resolve().is_relative_to(private), path
        assert not Path(first["path"]).exists(), "a replaced export is deleted"
        assert stat.S_IMODE((home / "tmp").stat().st_mode) == 0o700
        assert not [p for p in everything(tmp) if "taco" in p or p.endswith(".zip")], everything(tmp)
        assert not [p for p in everything(home / "tmp") if "/exports/" in p and "/gradio/" not in p], \
            "an export's folder is removed once it is zipped"

        interrupt(process)
    assert everything(tmp) == [], "the app left files in the system temp folder"
    assert everything(home / "tmp") == [], "the app left temporary files in its data folder"


def test_stopping_one_instance_does_not_break_another(tmp_path):
    """Two instances on one machine (one system temp folder), each with its own data folder."""
    tmp = system_tmp(tmp_path)
    with app_process(tmp_path / "one" / "home", tmp) as (url_one, one), \
            app_process(tmp_path / "two" / "home", tmp) as (url_two, _two):
        def example_image(url: str) -> str:
            """The URL of the fuel-prices example's picture, as the page gets it when the example is clicked."""
            files = Client(url, verbose=False, download_files=False).predict(0, api_name="/load_example")[0]["value"]
            assert Path(files[0]["path"]).name == "fuel_prices.png"
            return files[0]["url"]

        def fetch(image_url: str) -> Image.Image:
            import io

            with urllib.request.urlopen(image_url, timeout=30) as response:
                image = Image.open(io.BytesIO(response.read()))
                image.load()
                return image

        before = example_image(url_two)
        assert fetch(before).size == Image.open(FUEL).size
        interrupt(one)
        assert fetch(example_image(url_two)).size == Image.open(FUEL).size
        assert fetch(before).size == Image.open(FUEL).size
        # And a run with a new upload works in the instance that is left.
        client = Client(url_two, verbose=False, download_files=False)
        final = client.submit([handle_file(str(FUEL))], "How much gas can I buy with $50?",
                              "Replay example: fuel_prices", False, api_name="/ask").result(timeout=240)
        assert "gallons" in str(final[0])


def test_an_overlay_file_is_written_once_and_never_rewritten(tmp_path, monkeypatch):
    """The same picture shown again is the same file, untouched: a download in progress is never cut."""
    from taco_app.ui.scratch import Scratch

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    scratch = Scratch(tmp_path / "tmp")
    picture = Image.new("RGB", (64, 48), (200, 30, 30))
    first = Path(scratch.picture(picture))
    before = first.stat()
    again = Path(scratch.picture(picture.copy()))
    assert again == first and (again.stat().st_ino, again.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert first.is_relative_to(scratch.path) and Image.open(first).size == (64, 48)
    assert scratch.picture(None) is None
    assert not list(first.parent.glob("*.tmp")), "no half-written file is left beside it"
    scratch.activate()
    assert os.environ["GRADIO_TEMP_DIR"] == str(scratch.gradio)
    scratch.remove()
    assert "GRADIO_TEMP_DIR" not in os.environ and not scratch.path.exists()


def test_a_killed_instances_folder_is_removed_by_the_next_one(tmp_path):
    from taco_app.ui.scratch import Scratch

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    root = tmp_path / "tmp"
    running = Scratch(root)  # this process: alive
    made = Scratch(root).path
    killed = made.with_name(made.name.replace(f"-{os.getpid()}-", f"-{gone.pid}-"))
    made.rename(killed)  # as if a process that is gone had made it and been killed
    newcomer = Scratch(root)
    assert not killed.exists(), "the folder of a process that is gone is removed"
    assert running.path.exists() and newcomer.path.exists(), "a running instance's folder is kept"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and stat.S_IMODE(newcomer.path.stat().st_mode) == 0o700
