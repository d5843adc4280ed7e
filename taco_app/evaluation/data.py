"""Reading a benchmark: its items (a question, the accepted answers, the images) from a file.

Three forms are read: a JSONL file (one item per line, image paths relative to the file's folder or
absolute), a folder written by ``datasets.Dataset.save_to_disk`` (or a ``DatasetDict`` with one
split, or a ``test`` split), and a parquet file (an ``image`` or ``images`` column holding what
datasets' ``Image`` feature stores, raw bytes, or paths).

Whatever is named may be anything, as for an import (:mod:`taco_app.store.reading`): the file is read
only if it is a regular file, a line at a time, and a line over ``MAX_LINE_BYTES`` is skipped
without being held. A row that cannot be used (not JSON, a field of the wrong type, an image that is
missing or not an image, a repeated id) is a :class:`RowProblem` that says what is wrong and what
would be right; the other rows load. Only a file that cannot be read at all, or that has no usable
row, is a :class:`DataError`.

Images are checked at load (a regular file, an image header this app can read, within the pixel
limit) and hashed for the fingerprint, but decoded only by :meth:`Item.open_images`, with the checks
an upload gets.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import math
import os
import stat
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from PIL import Image

from taco_app import media
from taco_app.runner import InputImage
from taco_app.store.reading import Unreadable, kind, lines, open_regular

MAX_FILE_BYTES = 16 * 1024 ** 3  # a benchmark's file, read a row at a time
MAX_LINE_BYTES = 1024 * 1024  # one item of a JSONL file: a question and a few paths fit many times over
MAX_IMAGE_BYTES = 100 * 1024 * 1024  # as for uploads to the web app
MAX_ID_CHARS = 1000  # ids go into messages and the store; a longer one is a mistake
_BATCH = 64  # dataset rows read at a time
_SHOWN = 3  # problems quoted when no row can be used
_FORMS = "a .jsonl file, a .parquet file or a folder written by datasets' save_to_disk"
LETTERS = string.ascii_uppercase  # the options' letters, in order
_COLUMNS = ("id", "index", "question_id", "question", "answer", "answers", "image", "images", "choices",
            "options", "category")


class DataError(ValueError):
    """The benchmark file as a whole cannot be read; the message says what and what to do."""


@dataclass(frozen=True)
class ImageRef:
    """One input image of an item: a file, or encoded bytes from a dataset column."""

    path: Path | None = None
    data: bytes | None = None
    name: str = ""  # for messages: the path as written, or "row 3 image 0"

    def open(self) -> InputImage:
        """The image decoded now, upright RGB; raises ``media.ImageLoadError`` saying why not."""
        if self.data is not None:
            image, notes = media.load_image_bytes(self.data, self.name or "image")
            return InputImage(image, None, tuple(notes))
        if self.path is None:
            raise media.ImageLoadError(f"image {self.name or ''} has neither a file nor bytes")
        return InputImage.open(self.path)


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    answers: tuple[str | int | float, ...]  # one or more accepted answers
    images: tuple[ImageRef, ...]
    choices: tuple[str, ...] | None = None
    category: str | None = None

    @property
    def prompt(self) -> str:
        """What the model is asked: the question, and for multiple choice its options as TACO's harness
        wrote them (``AgentDataset.build_mcq_prompt``: "Question: …", "Options:", "A. …", and the request
        to pick one)."""
        if not self.choices:
            return self.question
        options = "".join(f"{letter}. {choice}\n" for letter, choice in zip(LETTERS, self.choices))
        return (f"Question: {self.question}\nOptions:\n{options}"
                "Please select the correct answer from the options above. \n")

    def open_images(self) -> list[InputImage]:
        """Every image decoded now, in order; raises ``media.ImageLoadError`` for the first that fails."""
        return [ref.open() for ref in self.images]


@dataclass(frozen=True)
class RowProblem:
    row: int  # 1-based line (JSONL) or row (dataset) number
    item_id: str | None
    reason: str
    unit: str = "line"  # "row" for datasets

    def __str__(self) -> str:
        where = f"{self.unit} {self.row}" + (f" ({self.item_id})" if self.item_id is not None else "")
        return f"{where}: {self.reason}"


@dataclass
class Benchmark:
    path: Path
    kind: str  # "jsonl" | "hf" | "parquet"
    items: list[Item]
    problems: list[RowProblem]
    fingerprint: str  # sha256 hex over every valid item's content, in order


class _Bad(Exception):
    """One row cannot be used; ``reason`` says why, for a person."""

    def __init__(self, reason: str, item_id: str | None = None):
        super().__init__(reason)
        self.reason, self.item_id = reason, item_id


@dataclass
class _Source:
    kind: str
    base: Path  # where relative image paths start
    rows: Iterator[tuple[int, dict | _Bad]]
    category_names: list[str] | None = None  # a ClassLabel's names, when the category is stored as its number
    within: Path | None = None  # the folder every image file must lie in (the web app's benchmarks folder)

    @property
    def unit(self) -> str:  # how a row is named in messages
        return "line" if self.kind == "jsonl" else "row"


def load_benchmark(path: str | Path, *, within: str | Path | None = None) -> Benchmark:
    """Every usable item of the benchmark at ``path``, and a problem for each row that is not.

    ``within``: a folder the benchmark and every image file it names must lie in, links resolved (the web
    app's benchmarks folder: a person on the page cannot make the server read any other file).
    """
    path = Path(path)
    if within is not None:
        within = Path(os.path.realpath(within))
        if not _inside(path, within):
            raise DataError(f"{path} is not in the benchmarks folder {within}: put the benchmark there")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist: give {_FORMS}") from None
    except OSError as err:
        raise DataError(f"{path} cannot be read: {err.strerror or err}") from None
    except ValueError:
        raise DataError(f"{path!r} cannot be a path: it holds a NUL character") from None
    suffix = path.suffix.lower()
    if stat.S_ISDIR(info.st_mode):
        source = _saved_dataset(path)
    elif not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path} is {kind(info.st_mode)}, not a file: give {_FORMS}")
    elif suffix not in (".jsonl", ".parquet"):
        raise DataError(f"{path}: a {suffix or 'file without a suffix'} cannot be read as a benchmark; give {_FORMS}")
    elif info.st_size == 0:
        raise DataError(f"{path} is empty (0 bytes): it has no items")
    elif suffix == ".jsonl":
        source = _jsonl(path)
    else:
        source = _parquet(path)
    source.within = within
    return _collect(path, source)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, links resolved, lies in ``folder`` (already resolved)."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(folder)
    except ValueError:  # a NUL in the path
        return False


# --- the three forms -------------------------------------------------------------------------------


def _jsonl(path: Path) -> _Source:
    try:
        file = open_regular(path, MAX_FILE_BYTES)
    except Unreadable as err:
        raise DataError(f"{path} cannot be read: {err}") from None
    return _Source("jsonl", _folder(path.parent), _jsonl_rows(path, file))


def _jsonl_rows(path: Path, file: BinaryIO) -> Iterator[tuple[int, dict | _Bad]]:
    with file:
        try:
            for number, line in lines(file, MAX_LINE_BYTES):
                if line is None:
                    yield number, _Bad(f"the line is longer than the limit of {MAX_LINE_BYTES:,} bytes")
                elif line.strip():
                    yield number, _json_row(line, first=number == 1)
        except OSError as err:
            raise DataError(f"{path}: reading stopped: {err.strerror or err}") from None


def _json_row(line: bytes, first: bool) -> dict | _Bad:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return _Bad(f"not UTF-8 text (byte {err.start + 1} is 0x{line[err.start]:02x}): save the file as UTF-8")
    if first:
        text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        return _Bad(f"not JSON: {err.msg} at column {err.colno}")
    except RecursionError:
        return _Bad("not usable JSON: nested too deeply")
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        return _Bad(f"not usable JSON: {err}")
    if not isinstance(row, dict):
        return _Bad(f"each line must be a JSON object with 'id', 'question' and 'answer', not {_what(row)}")
    return row


def _saved_dataset(folder: Path) -> _Source:
    if not any((folder / name).is_file() for name in ("state.json", "dataset_dict.json")):
        raise DataError(f"{folder} is a folder but not a dataset written by datasets' save_to_disk (it has no"
                        f" state.json or dataset_dict.json): give {_FORMS}")
    datasets = _require("datasets", "reading a saved dataset")
    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as err:  # noqa: BLE001 - whatever the folder holds, it is the folder's fault
        raise DataError(f"{folder} cannot be read as a saved dataset: {err}") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if len(splits) == 1:
            loaded = loaded[splits[0]]
        elif "test" in loaded:
            loaded = loaded["test"]
        else:
            raise DataError(f"{folder} holds the splits {', '.join(map(repr, splits)) or 'none'}, and no 'test'"
                            " split: save the split to evaluate on its own, or name it 'test'")
    columns = list(loaded.column_names)
    _check_columns(folder, columns)
    names = getattr(loaded.features.get("category"), "names", None)
    # Arrow rows, not Python ones: no image is decoded (as Image(decode=False) would do) and nothing
    # else is converted; only the columns a benchmark uses are read.
    table = loaded.with_format("arrow", columns=[c for c in columns if c in _COLUMNS])
    return _Source("hf", _folder(folder), _table_rows(folder, table, len(loaded)), names)


def _table_rows(folder: Path, table: Any, count: int) -> Iterator[tuple[int, dict]]:
    for start in range(0, count, _BATCH):
        try:
            rows = table[start:start + _BATCH].to_pylist()
        except Exception as err:  # noqa: BLE001 - a damaged shard
            raise DataError(f"{folder}: reading stopped at row {start + 1}: {err}") from None
        yield from enumerate(rows, start + 1)


def _parquet(path: Path) -> _Source:
    pq = _require("pyarrow.parquet", "reading a parquet file")
    try:
        file = open_regular(path, MAX_FILE_BYTES)
    except Unreadable as err:
        raise DataError(f"{path} cannot be read: {err}") from None
    try:
        parquet = pq.ParquetFile(file)
        columns = list(parquet.schema_arrow.names)
        _check_columns(path, columns)
    except DataError:
        file.close()
        raise
    except Exception as err:  # noqa: BLE001 - not parquet, or damaged
        file.close()
        raise DataError(f"{path} is not a parquet file this app can read: {err}") from None
    names = _parquet_category_names(parquet.schema_arrow.metadata)
    rows = _parquet_rows(path, file, parquet, [c for c in columns if c in _COLUMNS])
    return _Source("parquet", _folder(path.parent), rows, names)


def _parquet_rows(path: Path, file: BinaryIO, parquet: Any, columns: list[str]) -> Iterator[tuple[int, dict]]:
    number = 0
    with file:
        try:
            for batch in parquet.iter_batches(batch_size=_BATCH, columns=columns):
                for row in batch.to_pylist():
                    number += 1
                    yield number, row
        except Exception as err:  # noqa: BLE001 - a damaged page
            raise DataError(f"{path}: reading stopped at row {number + 1}: {err}") from None


def _parquet_category_names(metadata: dict | None) -> list[str] | None:
    """A ClassLabel's names, from the features datasets writes into a parquet file's metadata."""
    try:
        feature = json.loads(metadata[b"huggingface"])["info"]["features"]["category"]
        names = feature["names"] if feature.get("_type") == "ClassLabel" else None
    except Exception:  # noqa: BLE001 - no such metadata, or not as datasets writes it
        return None
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def _check_columns(path: Path, columns: list[str]) -> None:
    missing = [need for need in ("question", "answer") if need not in columns and f"{need}s" not in columns]
    if missing:
        raise DataError(f"{path} has no {' and no '.join(repr(m) for m in missing)} column (its columns:"
                        f" {', '.join(columns) or 'none'}): a benchmark needs question and answer (or answers),"
                        " and may have id, image or images, choices and category")


def _require(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{what} needs the datasets package: pip install datasets") from None


def _folder(path: Path) -> Path:
    return Path(os.path.abspath(path))


# --- rows to items ---------------------------------------------------------------------------------


def _collect(path: Path, source: _Source) -> Benchmark:
    items: list[Item] = []
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}  # id → the row that holds it
    files: dict[Path, str | _Bad] = {}  # an image file read once, however many items show it
    digest = hashlib.sha256()
    total = 0
    for number, row in source.rows:
        total += 1
        try:
            if isinstance(row, _Bad):
                raise row
            item, images = _item(row, number, source, seen, files)
        except _Bad as bad:
            problems.append(RowProblem(number, bad.item_id, bad.reason, source.unit))
            continue
        seen[item.id] = number
        items.append(item)
        record = [item.id, item.question, item.answers, item.choices, item.category, images]  # tuples are JSON lists
        digest.update(json.dumps(record, separators=(",", ":")).encode("ascii") + b"\n")
    if not total:
        raise DataError(f"{path} has no items: it holds no {source.unit}s")
    if not items:
        shown = "; ".join(str(problem) for problem in problems[:_SHOWN])
        raise DataError(f"{path} has no item that can be used: all {total} {source.unit}s have problems"
                        f" (the first {min(_SHOWN, total)}: {shown})")
    return Benchmark(path, source.kind, items, problems, digest.hexdigest())


def _item(row: dict, number: int, source: _Source, seen: dict[str, int],
          files: dict[Path, str | _Bad]) -> tuple[Item, list[str]]:
    item_id = _id(row, number, source)
    try:
        if item_id in seen:
            raise _Bad(f"the id is already used by {source.unit} {seen[item_id]}: ids must be unique")
        question = _question(row)
        answers = _answers(row)
        choices = _choices(row)
        category = _category(row, source.category_names)
        refs, digests = _images(row, number, source, files)
    except _Bad as bad:
        bad.item_id = item_id
        raise
    return Item(item_id, question, answers, refs, choices, category), digests


def _id(row: dict, number: int, source: _Source) -> str:
    keys = ("id",) if source.kind == "jsonl" else ("id", "index", "question_id")  # a dataset's own names for it
    key = next((key for key in keys if row.get(key) is not None), None)
    if key is None:
        if source.kind == "jsonl":
            raise _Bad("no 'id': every line needs one, a text or a whole number, unique in the file")
        return str(number)
    value = row[key]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _Bad(f"'{key}' must be a text or a whole number, not {_what(value)}")
    if not value.strip():
        raise _Bad(f"'{key}' is empty: give each item an id")
    if len(value) > MAX_ID_CHARS:
        raise _Bad(f"'{key}' is {len(value):,} characters long; an id has at most {MAX_ID_CHARS:,}")
    return value


def _question(row: dict) -> str:
    if "question" not in row or row["question"] is None:
        raise _Bad("no 'question': every item needs the question to ask, a text")
    value = row["question"]
    if not isinstance(value, str):
        raise _Bad(f"'question' must be a text, not {_what(value)}")
    if not value.strip():
        raise _Bad("'question' is empty: write the question to ask")
    return value


def _answers(row: dict) -> tuple[str | int | float, ...]:
    key = next((key for key in ("answer", "answers") if row.get(key) is not None), None)
    if key is None:
        raise _Bad("no 'answer': give the accepted answer (a text or a number), or a list of them")
    value = row[key]
    if isinstance(value, list):
        if not value:
            raise _Bad(f"'{key}' is an empty list: give at least one accepted answer")
        return tuple(_answer(key, one, f"; answer {i} is") for i, one in enumerate(value))
    return (_answer(key, value, ", not"),)


def _answer(key: str, value: Any, which: str) -> str | int | float:
    """One accepted answer; ``which`` says where it sits, for the message ("; answer 2 is" or ", not")."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Bad(f"'{key}' must be a text, a number or a list of them{which} {_what(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Bad(f"'{key}' must hold finite numbers{which} {value}")
    if isinstance(value, str) and not value.strip():
        raise _Bad(f"'{key}' must not hold an empty answer (it can never be matched){which} {_what(value)}")
    return value


def _choices(row: dict) -> tuple[str, ...] | None:
    key = next((key for key in ("choices", "options") if row.get(key) is not None), None)
    if key is None:
        return None
    value = row[key]
    if not isinstance(value, list):
        raise _Bad(f"'{key}' must be a list of texts (the options, in order), not {_what(value)}")
    for i, choice in enumerate(value):
        if not isinstance(choice, str):
            raise _Bad(f"'{key}' must be a list of texts; option {i} is {_what(choice)}")
    if len(value) > len(LETTERS):
        raise _Bad(f"'{key}' has {len(value)} options; an item can have at most {len(LETTERS)} (A to Z)")
    return tuple(value) or None  # an empty list: not a multiple-choice item


def _category(row: dict, names: list[str] | None) -> str | None:
    value = row.get("category")
    if value is None or isinstance(value, str):
        return value or None
    if names is not None and isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    raise _Bad(f"'category' must be a text, not {_what(value)}")


# --- images ----------------------------------------------------------------------------------------


def _images(row: dict, number: int, source: _Source,
            files: dict[Path, str | _Bad]) -> tuple[tuple[ImageRef, ...], list[str]]:
    if row.get("images") is not None:
        values = row["images"]
        if not isinstance(values, list):
            hint = f": write [{json.dumps(values)[:80]}]" if isinstance(values, str) else ""
            raise _Bad(f"'images' must be a list of images, not {_what(values)}{hint}")
    elif row.get("image") is not None:
        values = [row["image"]]
    else:
        return (), []
    refs, digests = [], []
    for index, value in enumerate(values):
        ref, digest = _image(value, f"{source.unit} {number} image {index}", index, source, files)
        refs.append(ref)
        digests.append(digest)
    return tuple(refs), digests


def _image(value: Any, label: str, index: int, source: _Source,
           files: dict[Path, str | _Bad]) -> tuple[ImageRef, str]:
    if isinstance(value, dict):  # datasets' Image feature: {"bytes": …, "path": …}
        data, written = value.get("bytes"), value.get("path")
        if isinstance(data, (bytes, bytearray)) and data:
            # The file's name only: media names an image by its last path part.
            name = f"{label} ({Path(written).name})" if isinstance(written, str) and Path(written).name else label
            return _image_bytes(bytes(data), name)
        if isinstance(written, str):
            return _image_file(written, index, source, files)
        raise _Bad(f"image {index} has neither bytes nor a path")
    if isinstance(value, (bytes, bytearray)):
        return _image_bytes(bytes(value), label)
    if isinstance(value, str):
        return _image_file(value, index, source, files)
    raise _Bad(f"image {index} must be a path (a text), not {_what(value)}")


def _image_bytes(data: bytes, name: str) -> tuple[ImageRef, str]:
    if not data:
        raise _Bad(f"{name} is empty (0 bytes)")
    if len(data) > MAX_IMAGE_BYTES:
        raise _Bad(f"{name} is {len(data):,} bytes, over the limit of {MAX_IMAGE_BYTES:,}")
    _check_header(io.BytesIO(data), name)
    return ImageRef(data=data, name=name), hashlib.sha256(data).hexdigest()


def _image_file(written: str, index: int, source: _Source, files: dict[Path, str | _Bad]) -> tuple[ImageRef, str]:
    shown = _short(written)
    if not written.strip():
        raise _Bad(f"image {index} has an empty path")
    target = source.base / written  # an absolute path stays as it is
    if source.within is not None and not _inside(target, source.within):
        raise _Bad(f"image {shown} is not in the benchmarks folder {source.within}")
    if target not in files:
        files[target] = _file_digest(target, written, shown)
    found = files[target]
    if isinstance(found, _Bad):
        raise _Bad(found.reason)
    return ImageRef(path=target, name=written), found


def _file_digest(target: Path, written: str, shown: str) -> str | _Bad:
    """The sha256 of an image file, once it is known to be a readable image; or why it cannot be used."""
    if "\0" in written:
        return _Bad(f"image {shown} cannot be a path: it holds a NUL character")
    try:
        file = open_regular(target, MAX_IMAGE_BYTES)
    except Unreadable as err:
        if not os.path.lexists(target):
            where = "" if written == str(target) else f" (looked for {target})"
            return _Bad(f"image {shown} does not exist{where}")
        return _Bad(f"image {shown} cannot be used: {err}")
    with file:
        try:
            _check_header(file, f"image {shown}")
            file.seek(0)
            digest = hashlib.sha256()
            while chunk := file.read(1 << 20):
                digest.update(chunk)
        except _Bad as bad:
            return bad
        except OSError as err:
            return _Bad(f"image {shown} cannot be read: {err.strerror or err}")
    return digest.hexdigest()


def _check_header(file: BinaryIO, name: str) -> None:
    """Raise unless ``file`` starts like an image this app opens, within the pixel limit (nothing decoded)."""
    try:
        with Image.open(file, formats=media.FORMATS) as img:
            width, height = img.size
    except Image.UnidentifiedImageError:
        raise _Bad(f"{name} is not an image format this app can read ({media.FORMAT_NAMES})") from None
    except Image.DecompressionBombError:
        raise _Bad(f"{name} is too large to open safely: resize it (or raise TACO_MAX_IMAGE_PIXELS)") from None
    except OSError as err:
        if err.errno:  # the disk's failure, not the image's: the caller says so
            raise
        raise _Bad(f"{name} is damaged or cut short ({err})") from None
    except Exception as err:  # noqa: BLE001 - a decoder's failure on a bad header is the file's fault
        raise _Bad(f"{name} is damaged ({err or type(err).__name__})") from None
    limit = media.max_pixels()
    if width * height > limit:
        raise _Bad(f"{name} is {width}x{height} ({width * height / 1e6:.0f} megapixels); the limit is"
                   f" {limit / 1e6:.0f} megapixels: resize it (or raise TACO_MAX_IMAGE_PIXELS)")


# --- words ------------------------------------------------------------------------------------------


def _what(value: Any) -> str:
    """A value's kind in words, with a short quote of it: "a number (5)", "an object", "true"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"a number ({_short(value)})"
    if isinstance(value, str):
        return f"a text ({_short(value)})"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "an object" if value else "an empty object"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    return f"a {type(value).__name__}"


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 40:
        return "a very large number"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "…" + text[-2:]
