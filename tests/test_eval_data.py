"""Reading a benchmark: the same items from JSONL, a saved dataset and parquet; every bad row reported
with its number and skipped; a file that cannot be read refused whole; the fingerprint; the pixels."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from taco_app.evaluation.data import DataError, ImageRef, Item, load_benchmark
from taco_app.media import ImageLoadError

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

datasets.disable_progress_bars()

COLOURS = {"red.png": (255, 0, 0), "green.png": (0, 200, 0), "blue.png": (0, 0, 255)}
ROWS = [
    {"id": "q1", "question": "What colour is it?", "answer": "red", "images": ["red.png"], "category": "colour"},
    {"id": "q2", "question": "Which one is green?", "answer": ["A", "the first"], "images": ["green.png", "blue.png"],
     "choices": ["the first", "the second"], "category": "choice"},
    {"id": "q3", "question": "How many?", "answer": 2.5, "images": [], "category": None},
    {"id": "q4", "question": "Text \x00 with a NUL", "answer": 7, "images": ["blue.png"]},
]


def png(colour, size=(6, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path) -> Path:
    for name, colour in COLOURS.items():
        (tmp_path / name).write_bytes(png(colour))
    return tmp_path


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), "utf-8")
    return path


def image_column(folder: Path) -> list[list[dict]]:
    """Each row's images as datasets' Image feature stores them: the file's bytes and its name."""
    return [[{"bytes": (folder / name).read_bytes(), "path": name} for name in row["images"]] for row in ROWS]


def dataset(folder: Path):
    columns = {key: [row.get(key) for row in ROWS] for key in ("id", "question", "choices", "category")}
    columns["answers"] = [row["answer"] if isinstance(row["answer"], list) else [str(row["answer"])] for row in ROWS]
    columns["images"] = image_column(folder)
    features = datasets.Features({
        "id": datasets.Value("string"), "question": datasets.Value("string"),
        "choices": datasets.List(datasets.Value("string")), "category": datasets.Value("string"),
        "answers": datasets.List(datasets.Value("string")), "images": datasets.List(datasets.Image()),
    })
    return datasets.Dataset.from_dict(columns, features=features)


def summary(benchmark) -> list[tuple]:
    return [(item.id, item.question, item.answers, item.choices, item.category, len(item.images))
            for item in benchmark.items]


def pixels(item: Item) -> list[tuple]:
    return [image.image.getpixel((0, 0)) for image in item.open_images()]


# --- the three forms ------------------------------------------------------------------------------


def test_jsonl_loads_every_field_with_images_relative_to_the_file(folder):
    benchmark = load_benchmark(write_jsonl(folder / "bench.jsonl", ROWS))
    assert benchmark.kind == "jsonl" and benchmark.problems == []
    assert summary(benchmark) == [
        ("q1", "What colour is it?", ("red",), None, "colour", 1),
        ("q2", "Which one is green?", ("A", "the first"), ("the first", "the second"), "choice", 2),
        ("q3", "How many?", (2.5,), None, None, 0),
        ("q4", "Text \x00 with a NUL", (7,), None, None, 1),  # kept as text
    ]
    q2 = benchmark.items[1]
    assert q2.images == (ImageRef(path=folder / "green.png", name="green.png"),
                         ImageRef(path=folder / "blue.png", name="blue.png"))
    assert pixels(q2) == [(0, 200, 0), (0, 0, 255)]
    assert [image.path for image in q2.open_images()] == [folder / "green.png", folder / "blue.png"]


def test_a_lone_surrogate_is_kept_as_text(folder):
    """JSON can write one (a datasets table cannot: Arrow holds only valid UTF-8); the store escapes it."""
    path = folder / "b.jsonl"
    path.write_text('{"id": "s\\ud800", "question": "half a pair: \\udc00", "answer": "\\ud83d"}\n', "ascii")
    [item] = load_benchmark(path).items
    assert (item.id, item.question, item.answers) == ("s\ud800", "half a pair: \udc00", ("\ud83d",))


def test_an_absolute_image_path_and_a_path_in_a_subfolder_are_read(folder, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "far.png"
    elsewhere.write_bytes(png((9, 9, 9)))
    (folder / "sub").mkdir()
    (folder / "sub" / "near.png").write_bytes(png((1, 2, 3)))
    benchmark = load_benchmark(write_jsonl(folder / "b.jsonl", [
        {"id": 1, "question": "q", "answer": "a", "images": [str(elsewhere), "sub/near.png"]}]))
    assert benchmark.items[0].id == "1"  # a numbered id is read as text
    assert pixels(benchmark.items[0]) == [(9, 9, 9), (1, 2, 3)]


def test_the_same_rows_load_alike_from_jsonl_a_saved_dataset_and_parquet(folder):
    jsonl = load_benchmark(write_jsonl(folder / "bench.jsonl", ROWS))
    dataset(folder).save_to_disk(str(folder / "saved"))
    dataset(folder).to_parquet(str(folder / "bench.parquet"))
    saved, parquet = load_benchmark(folder / "saved"), load_benchmark(folder / "bench.parquet")
    assert (saved.kind, parquet.kind) == ("hf", "parquet")
    as_text = [(i, q, tuple(str(a) for a in answers), c, cat, n) for i, q, answers, c, cat, n in summary(jsonl)]
    assert summary(saved) == summary(parquet) == as_text
    for form in (saved, parquet):
        assert form.problems == []
        assert all(ref.data is not None and ref.path is None for item in form.items for ref in item.images)
        assert [pixels(item) for item in form.items] == [pixels(item) for item in jsonl.items]
    # The image bytes are the files' bytes, so only the answers' types (numbers vs texts) differ.
    assert saved.fingerprint == parquet.fingerprint != jsonl.fingerprint
    numbers_as_text = [{**row, "answer": row["answer"] if isinstance(row["answer"], list) else [str(row["answer"])]}
                       for row in ROWS]
    assert load_benchmark(write_jsonl(folder / "text.jsonl", numbers_as_text)).fingerprint == saved.fingerprint


def test_a_dataset_split_is_chosen_or_the_splits_are_named(folder):
    one = dataset(folder)
    datasets.DatasetDict({"validation": one}).save_to_disk(str(folder / "single"))
    assert [i.id for i in load_benchmark(folder / "single").items] == ["q1", "q2", "q3", "q4"]
    datasets.DatasetDict({"train": one.select([0]), "test": one.select([1, 2])}).save_to_disk(str(folder / "split"))
    assert [i.id for i in load_benchmark(folder / "split").items] == ["q2", "q3"]
    datasets.DatasetDict({"train": one, "dev": one}).save_to_disk(str(folder / "two"))
    with pytest.raises(DataError, match=r"'train', 'dev'.*no 'test'"):
        load_benchmark(folder / "two")


def test_dataset_columns_by_their_other_names_and_a_class_label_category(folder):
    features = datasets.Features({
        "question_id": datasets.Value("int64"), "question": datasets.Value("string"),
        "answer": datasets.Value("string"), "options": datasets.List(datasets.Value("string")),
        "category": datasets.ClassLabel(names=["count", "read"]), "image": datasets.Image(),
    })
    rows = datasets.Dataset.from_dict({
        "question_id": [10, 11], "question": ["a?", "b?"], "answer": ["x", "y"], "options": [["x", "y"], []],
        "category": [1, 0], "image": [{"bytes": png((5, 5, 5)), "path": None}, None]}, features=features)
    rows.save_to_disk(str(folder / "saved"))
    rows.to_parquet(str(folder / "rows.parquet"))
    for form in ("saved", "rows.parquet"):
        benchmark = load_benchmark(folder / form)
        assert summary(benchmark) == [("10", "a?", ("x",), ("x", "y"), "read", 1),
                                      ("11", "b?", ("y",), None, "count", 0)]
        assert pixels(benchmark.items[0]) == [(5, 5, 5)]


def test_parquet_images_as_raw_bytes_or_paths_and_ids_from_the_row_number(folder):
    table = pa.table({"question": ["q?", "r?", "s?"], "answer": ["a", "b", "c"],
                      "image": [png((1, 1, 1)), None, None]})
    pq.write_table(table, folder / "raw.parquet")
    benchmark = load_benchmark(folder / "raw.parquet")
    assert [(item.id, len(item.images)) for item in benchmark.items] == [("1", 1), ("2", 0), ("3", 0)]
    assert pixels(benchmark.items[0]) == [(1, 1, 1)]
    table = pa.table({"index": [0, 1], "question": ["q?", "r?"], "answer": ["a", "b"],
                      "images": [["red.png", str(folder / "blue.png")], ["nowhere.png"]]})
    pq.write_table(table, folder / "paths.parquet")
    benchmark = load_benchmark(folder / "paths.parquet")
    assert [item.id for item in benchmark.items] == ["0"]
    assert pixels(benchmark.items[0]) == [(255, 0, 0), (0, 0, 255)]
    assert [str(p) for p in benchmark.problems] == ["row 2 (1): image 'nowhere.png' does not exist"
                                                    f" (looked for {folder / 'nowhere.png'})"]


# --- bad rows -----------------------------------------------------------------------------------


def fifo(folder: Path) -> str:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(folder / "pipe.png")
    return "pipe.png"


BAD_LINES = {
    "not JSON": ("{'id': 'x'}", "not JSON: Expecting property name enclosed in double quotes at column 2"),
    "not an object": ('["x", "q", "a"]',
                      "each line must be a JSON object with 'id', 'question' and 'answer', not a list"),
    "bad UTF-8": (b'{"id": "x", "question": "caf\xe9", "answer": "a"}', "not UTF-8 text (byte 29 is 0xe9)"),
    "nested too deeply": ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    "an integer too long": ('{"id": "x", "question": "q", "answer": ' + "9" * 5000 + "}", "not usable JSON"),
    "a line over the limit": ('{"id": "x", "question": "' + "a" * (1 << 20) + '", "answer": "a"}',
                              "the line is longer than the limit of 1,048,576 bytes"),
    "no id": ({"question": "q", "answer": "a"}, "no 'id'"),
    "an id of the wrong type": ({"id": True, "question": "q", "answer": "a"},
                                "'id' must be a text or a whole number, not true"),
    "an empty id": ({"id": " ", "question": "q", "answer": "a"}, "'id' is empty"),
    "no question": ({"id": "x", "answer": "a"}, "no 'question'"),
    "a question that is a number": ({"id": "x", "question": 5, "answer": "a"},
                                    "'question' must be a text, not a number (5)"),
    "an empty question": ({"id": "x", "question": " \n", "answer": "a"}, "'question' is empty"),
    "no answer": ({"id": "x", "question": "q"}, "no 'answer'"),
    "an answer that is an object": ({"id": "x", "question": "q", "answer": {}},
                                    "'answer' must be a text, a number or a list of them, not an empty object"),
    "an answer that is a boolean": ({"id": "x", "question": "q", "answer": True}, "not true"),
    "no accepted answer": ({"id": "x", "question": "q", "answer": []}, "'answer' is an empty list"),
    "a list holding an object": ({"id": "x", "question": "q", "answer": ["a", {"b": 1}]}, "answer 1 is an object"),
    "an empty answer": ({"id": "x", "question": "q", "answer": ""}, "'answer' must not hold an empty answer"),
    "an answer that is not a number": ('{"id": "x", "question": "q", "answer": NaN}', "must hold finite numbers", "x"),
    "images as one text": ({"id": "x", "question": "q", "answer": "a", "images": "red.png"},
                           """'images' must be a list of images, not a text ('red.png'): write ["red.png"]"""),
    "an image that is a number": ({"id": "x", "question": "q", "answer": "a", "images": [5]},
                                  "image 0 must be a path (a text), not a number (5)"),
    "a missing image": ({"id": "x", "question": "q", "answer": "a", "images": ["red.png", "imgs/7.png"]},
                        "image 'imgs/7.png' does not exist"),
    "an image that is a folder": ({"id": "x", "question": "q", "answer": "a", "images": ["sub"]},
                                  "image 'sub' cannot be used: not a regular file (a folder)"),
    "an image that is not an image": ({"id": "x", "question": "q", "answer": "a", "images": ["notes.png"]},
                                      "image 'notes.png' is not an image format this app can read"),
    "an image path with a NUL": ({"id": "x", "question": "q", "answer": "a", "images": ["red\x00.png"]},
                                 "holds a NUL character"),
    "choices not a list": ({"id": "x", "question": "q", "answer": "a", "choices": "a, b"},
                           "'choices' must be a list of texts (the options, in order), not a text ('a, b')"),
    "choices not texts": ({"id": "x", "question": "q", "answer": "a", "choices": ["a", 2]},
                          "'choices' must be a list of texts; option 1 is a number (2)"),
    "a category that is a number": ({"id": "x", "question": "q", "answer": "a", "category": 3},
                                    "'category' must be a text, not a number (3)"),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_bad_line_is_reported_with_its_number_and_skipped(folder, case):
    (folder / "sub").mkdir()
    (folder / "notes.png").write_text("these are notes, not a picture")
    bad, reason, *named = BAD_LINES[case]
    item_id = named[0] if named else ("x" if isinstance(bad, dict) and bad.get("id") == "x" else None)
    path = folder / "bench.jsonl"
    with path.open("wb") as file:
        file.write(json.dumps(ROWS[0]).encode() + b"\n\n")  # a blank line is no row, but it is counted
        text = bad if isinstance(bad, (bytes, str)) else json.dumps(bad)
        file.write((text if isinstance(text, bytes) else text.encode()) + b"\n")
        file.write(json.dumps(ROWS[1]).encode() + b"\n")
    benchmark = load_benchmark(path)
    assert [item.id for item in benchmark.items] == ["q1", "q2"]
    [problem] = benchmark.problems
    assert problem.row == 3 and problem.unit == "line"
    assert problem.item_id == item_id
    assert reason in problem.reason
    assert str(problem) == (f"line 3 ({item_id}): " if item_id else "line 3: ") + problem.reason


def test_an_image_that_is_a_fifo_is_a_bad_row_and_is_not_waited_for(folder):
    name = fifo(folder)
    benchmark = load_benchmark(write_jsonl(folder / "b.jsonl", [
        ROWS[0], {"id": "x", "question": "q", "answer": "a", "images": [name]}]))
    assert [str(p) for p in benchmark.problems] == [
        "line 2 (x): image 'pipe.png' cannot be used: not a regular file (a FIFO)"]


def test_a_repeated_id_is_a_problem_on_its_later_row_only(folder):
    benchmark = load_benchmark(write_jsonl(folder / "b.jsonl", [
        ROWS[0], ROWS[1], {**ROWS[2], "id": "q1"}, {"id": "q9", "question": "broken", "answer": {}},
        {**ROWS[3], "id": "q9"}]))
    assert [item.id for item in benchmark.items] == ["q1", "q2", "q9"]  # the broken q9 took no id
    assert [item.question for item in benchmark.items][2] == ROWS[3]["question"]
    assert [str(p) for p in benchmark.problems] == [
        "line 3 (q1): the id is already used by line 1: ids must be unique",
        "line 4 (q9): 'answer' must be a text, a number or a list of them, not an empty object"]


def test_a_byte_order_mark_is_not_a_problem(folder):
    path = folder / "b.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS[0]).encode() + b"\n")
    assert [item.id for item in load_benchmark(path).items] == ["q1"]


def test_bad_dataset_rows_are_reported_by_row_number(folder):
    table = pa.table({
        "id": ["a", "b", "a", "d", "e", "f"],
        "question": ["q?", None, "q?", "q?", "q?", "q?"],
        "answer": ["x", "x", "x", "x", "x", "x"],
        "image": [{"bytes": png((1, 2, 3)), "path": None}, None, None, {"bytes": b"not an image", "path": "d.png"},
                  {"bytes": None, "path": "gone.png"}, {"bytes": None, "path": None}],
    })
    pq.write_table(table, folder / "bad.parquet")
    datasets.Dataset(table).save_to_disk(str(folder / "bad-saved"))
    # A path without bytes is relative to the parquet file's folder, or to the saved dataset's.
    for form, base in (("bad.parquet", folder), ("bad-saved", folder / "bad-saved")):
        benchmark = load_benchmark(folder / form)
        assert [item.id for item in benchmark.items] == ["a"]
        assert [str(problem) for problem in benchmark.problems] == [
            "row 2 (b): no 'question': every item needs the question to ask, a text",
            "row 3 (a): the id is already used by row 1: ids must be unique",
            "row 4 (d): row 4 image 0 (d.png) is not an image format this app can read"
            " (PNG, JPEG, WebP, GIF, BMP, TIFF)",
            f"row 5 (e): image 'gone.png' does not exist (looked for {base / 'gone.png'})",
            "row 6 (f): image 0 has neither bytes nor a path",
        ]


# --- files that cannot be read ---------------------------------------------------------------------


def test_files_that_cannot_be_read_are_refused_whole(folder):
    (folder / "empty.jsonl").write_bytes(b"")
    (folder / "blank.jsonl").write_text("\n  \n")
    (folder / "bench.csv").write_text("id,question,answer\n")
    (folder / "fake.parquet").write_text("not parquet")
    (folder / "plain").mkdir()
    pq.write_table(pa.table({"prompt": ["q"], "answer": ["a"]}), folder / "columns.parquet")
    cases = {
        folder / "nowhere.jsonl": "does not exist: give a .jsonl file, a .parquet file or a folder",
        folder / "empty.jsonl": r"is empty \(0 bytes\)",
        folder / "blank.jsonl": "has no items: it holds no lines",
        folder / "bench.csv": "a .csv cannot be read as a benchmark",
        folder / "fake.parquet": "is not a parquet file this app can read",
        folder / "plain": "is a folder but not a dataset written by datasets' save_to_disk",
        folder / "columns.parquet": r"has no 'question' column \(its columns: prompt, answer\)",
    }
    if os.path.exists("/dev/zero"):
        cases[Path("/dev/zero")] = "is a character device, not a file"
    for path, message in cases.items():
        with pytest.raises(DataError, match=message):
            load_benchmark(path)
    assert issubclass(DataError, ValueError)


def test_a_fifo_is_refused_without_waiting_for_a_writer(folder):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(folder / "bench.jsonl")
    with pytest.raises(DataError, match="is a FIFO, not a file"):
        load_benchmark(folder / "bench.jsonl")


def test_no_valid_row_says_how_many_were_bad_and_the_first_reasons(folder):
    path = write_jsonl(folder / "b.jsonl", ["nope", {"id": "a", "question": 5, "answer": "x"}, "[]",
                                            {"id": "b", "question": "q"}])
    with pytest.raises(DataError) as raised:
        load_benchmark(path)
    message = str(raised.value)
    assert "no item that can be used: all 4 lines have problems" in message
    assert "line 1: not JSON" in message and "line 2 (a): 'question' must be a text" in message
    assert "line 3: each line must be a JSON object" in message and "line 4" not in message


# --- the fingerprint and the pixels ---------------------------------------------------------------


def test_the_fingerprint_is_stable_and_follows_every_part_of_an_item(folder):
    path = write_jsonl(folder / "b.jsonl", ROWS)
    first = load_benchmark(path).fingerprint
    assert len(first) == 64 and load_benchmark(path).fingerprint == first
    write_jsonl(path, [*ROWS, "not json"])  # a bad row is not part of it
    assert load_benchmark(path).fingerprint == first
    changed = {
        "answer": [{**ROWS[0], "answer": "crimson"}, *ROWS[1:]],
        "accepted answers": [ROWS[0], {**ROWS[1], "answer": ["A"]}, *ROWS[2:]],
        "number vs text": [*ROWS[:2], {**ROWS[2], "answer": "2.5"}, ROWS[3]],
        "question": [{**ROWS[0], "question": "What colour?"}, *ROWS[1:]],
        "id": [{**ROWS[0], "id": "q0"}, *ROWS[1:]],
        "choices": [ROWS[0], {**ROWS[1], "choices": ["the second", "the first"]}, *ROWS[2:]],
        "category": [{**ROWS[0], "category": "hue"}, *ROWS[1:]],
        "image order": [ROWS[0], {**ROWS[1], "images": ["blue.png", "green.png"]}, *ROWS[2:]],
        "order": [ROWS[1], ROWS[0], *ROWS[2:]],
    }
    for what, rows in changed.items():
        write_jsonl(path, rows)
        assert load_benchmark(path).fingerprint != first, what
    write_jsonl(path, ROWS)
    (folder / "red.png").write_bytes(png((254, 0, 0)))  # one channel of every pixel, same size and name
    assert load_benchmark(path).fingerprint != first
    (folder / "red.png").write_bytes(png((255, 0, 0)))
    assert load_benchmark(path).fingerprint == first


def test_images_are_decoded_only_when_opened_with_the_checks_an_upload_gets(folder, monkeypatch):
    """EXIF orientation applied, transparency on white, the pixel limit, a damaged file: from bytes as from a path."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned 90 degrees clockwise
    buffer = io.BytesIO()
    Image.new("RGB", (8, 2), (10, 20, 30)).save(buffer, "JPEG", exif=exif.tobytes())
    sideways = buffer.getvalue()
    buffer = io.BytesIO()
    Image.new("RGBA", (3, 3), (0, 0, 0, 0)).save(buffer, "PNG")
    clear = buffer.getvalue()
    (folder / "sideways.jpg").write_bytes(sideways)
    (folder / "clear.png").write_bytes(clear)
    for ref in (ImageRef(data=sideways, name="row 1 image 0"), ImageRef(path=folder / "sideways.jpg")):
        assert ref.open().image.size == (2, 8)
    for ref in (ImageRef(data=clear, name="row 1 image 1"), ImageRef(path=folder / "clear.png")):
        assert ref.open().image.getpixel((1, 1)) == (255, 255, 255)
    assert ImageRef(data=clear, name="row 1 image 1").open().path is None
    big = png((0, 0, 0), size=(2000, 1000))
    monkeypatch.setenv("TACO_MAX_IMAGE_PIXELS", "1000000")
    with pytest.raises(ImageLoadError, match=r"row 2 image 0 is 2000x1000 \(2 megapixels\); the limit is 1 megapixels"):
        ImageRef(data=big, name="row 2 image 0").open()
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).save(buffer, "PNG")
    cut = buffer.getvalue()[:2000]  # the header whole, the pixels cut short
    with pytest.raises(ImageLoadError, match="cut short"):
        ImageRef(data=cut, name="row 3 image 0").open()
    # At load the header is read, not the pixels: an oversized image is a bad row, a cut one waits for open.
    (folder / "big.png").write_bytes(big)
    (folder / "cut.png").write_bytes(cut)
    (folder / "cut.jpg").write_bytes(sideways[:-40])  # Pillow reads a JPEG's header to its end: that fails at load
    benchmark = load_benchmark(write_jsonl(folder / "b.jsonl", [
        {"id": "big", "question": "q", "answer": "a", "images": ["big.png"]},
        {"id": "cut", "question": "q", "answer": "a", "images": ["cut.png"]},
        {"id": "cut-jpeg", "question": "q", "answer": "a", "images": ["cut.jpg"]}]))
    assert [str(p) for p in benchmark.problems] == [
        "line 1 (big): image 'big.png' is 2000x1000 (2 megapixels); the limit is 1 megapixels:"
        " resize it (or raise TACO_MAX_IMAGE_PIXELS)",
        "line 3 (cut-jpeg): image 'cut.jpg' is damaged or cut short (Truncated File Read)"]
    with pytest.raises(ImageLoadError, match="cut short"):
        benchmark.items[0].open_images()


def test_a_multiple_choice_item_is_asked_with_its_options_as_taco_laid_them_out():
    from taco_app.evaluation.data import Item

    item = Item("q1", "Which is bigger?", ("B",), (), choices=("the cat", "the dog"))
    assert item.prompt == ("Question: Which is bigger?\nOptions:\nA. the cat\nB. the dog\n"
                           "Please select the correct answer from the options above. \n")
    assert Item("q2", "What is 2+2?", ("4",), ()).prompt == "What is 2+2?"
