"""Reading files that someone named to us (an import's traces, rows and images): any path may be anything.

A path can name a FIFO (opening it for reading waits for a writer, forever), a device (``/dev/zero``
never ends), a folder, or a file far larger than any trace. So a file is read only when it is a
regular file of at most a given size: checked with ``os.stat`` before it is opened (opening some
devices has effects of its own), opened without blocking, checked again on the opened descriptor
(what is read is what was checked, even if the path is swapped in between), and read no further
than the limit (a file can grow after it was checked). Every refusal is an ``Unreadable`` whose
message says why, in words.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
# Opening a FIFO without O_NONBLOCK waits for a writer; with it, the open returns at once.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


class Unreadable(ValueError):
    """A file that is not read: missing, not a regular file, or too large. The message says which."""


def kind(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO")."""
    return _KINDS.get(stat.S_IFMT(mode), "not a plain file")


def check_regular(info: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise Unreadable(f"not a regular file ({kind(info.st_mode)})")
    if info.st_size > limit:
        raise Unreadable(f"{info.st_size:,} bytes, over the limit of {limit:,} bytes")


def open_regular(path: str | Path, limit: int) -> BinaryIO:
    """``path`` opened for binary reading, if it is a regular file of at most ``limit`` bytes."""
    check_regular(_os_call(os.stat, path), limit)  # before opening: opening a device can do things
    fd = _os_call(os.open, path, _OPEN_FLAGS)
    try:
        check_regular(os.fstat(fd), limit)  # the file we opened, not whatever the path names now
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _os_call(function, path, *args):
    try:
        return function(path, *args)
    except OSError as err:
        raise Unreadable(f"cannot open it: {err.strerror or err}") from None
    except ValueError:  # os functions refuse a path with a NUL character in it
        raise Unreadable("cannot open it: the path holds a NUL character") from None


def read_regular(path: str | Path, limit: int) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes."""
    with open_regular(path, limit) as file:
        try:
            data = file.read(limit + 1)  # one byte more tells a file that grew past the limit
        except OSError as err:
            raise Unreadable(f"cannot read it: {err.strerror or err}") from None
    if len(data) > limit:
        raise Unreadable(f"more than {limit:,} bytes, over the limit")
    return data


def lines(file: BinaryIO, limit: int) -> Iterator[tuple[int, bytes | None]]:
    """Each line of ``file`` with its number from 1; ``None`` for a line over ``limit`` bytes.

    A line over the limit is skipped in chunks, never held whole in memory.
    """
    number = 0
    while line := file.readline(limit + 1):
        number += 1
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := file.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield number, None
        else:
            yield number, line
