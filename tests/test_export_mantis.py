"""A cota-mantis export is read unchanged by Mantis's own training data loader.

Proof from outside: the loader is TACO's copy of Mantis (``tests/vendor/mantis``: ``mantis/train/data.py``,
its helpers, the conversation templates and ``MLlavaProcessor``), run the way ``mantis/train/train_mllava.py``
runs it for TACO's Llama-3 SigLIP checkpoints: ``load_data_from_config`` on the export's ``mantis_data.yaml``
from the export folder, the ``llama_3`` conversation template, an ``MLlavaProcessor`` over a SigLIP image
processor and a Llama-3-shaped tokenizer (tiny, built here: no Hub), ``max_seq_len`` 8192
(``train_mllava_siglip.sh``), and the Collator on batches of one (``per_device_train_batch_size=1``).

For every row of an export of the 132 reference traces: Mantis yields one item, holds the row's turns
unchanged, gets one image token and one picture per ``<image>`` placeholder, and labels exactly the assistant
turns. The two rows TACO's own pipeline built pass the same checks; rows made wrong on purpose (one image too
few, one placeholder too few, labels cut in the wrong place) fail them.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Mantis's data.py has a regex written as a plain string ("\d"): Python warns when it compiles the vendored copy.
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence")  # in the vendored code

IMAGE = "<image>"
IGNORE_INDEX = -100
MAX_SEQ_LEN = 8192  # mantis/train/scripts/train_mllava_siglip.sh: max_seq_len=8192
USER_HEADER = "<|start_header_id|>user<|end_header_id|>\n\n"
ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"
EOT = "<|eot_id|>"  # the llama_3 template's separator: every turn, the system one included, ends with it


@dataclass
class DataArguments:
    """train_mllava.py's DataArguments (its defaults), plus the two fields its main() sets before loading."""

    data_config_file: str
    conv_format: Any
    max_seq_len: int = MAX_SEQ_LEN
    dataset_balancing: bool = True
    is_master_worker: bool = True


@dataclass
class Item:
    """What Mantis made of one row: the Collator's batch of one, and the turns the dataset holds."""

    input_ids: list[int]
    labels: list[int]
    pixel_values: tuple[int, ...] | None  # the shape; the tensors themselves are not kept
    turns: list[list[str]]
    images: list[str]  # the image files the dataset holds, relative to the folder


@dataclass
class Read:
    rows: list[dict]  # data.jsonl, read here with json, not by Mantis
    items: list[Item]
    seconds: float


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    """An MLlavaProcessor built as train_mllava.py builds one from its parts (MLlavaProcessor(image, tokenizer))."""
    from tests.tiny import chat_tokenizer
    from tests.tiny.mantis import image_processor
    from tests.vendor.mantis import data as mantis_data
    from tests.vendor.mantis.processing_llava import MLlavaProcessor

    tokenizer = chat_tokenizer.build(tmp_path_factory.mktemp("mantis-tokenizer"), family="mantis")
    built = MLlavaProcessor(image_processor("siglip"), tokenizer)
    # The end of train_mllava.py's load_model, which the loader relies on.
    mantis_data.set_default_image_token(IMAGE)
    mantis_data.set_default_image_token_id(tokenizer.convert_tokens_to_ids(IMAGE))
    mantis_data.set_ignore_index(IGNORE_INDEX)
    return built


@pytest.fixture(scope="module")
def export_dir(reference_exports) -> Path:
    """A cota-mantis export of every reference trace."""
    return reference_exports.export("cota-mantis")


def llama_3():
    """The template train_mllava.py picks for a Llama-3 language model (TACO's Mantis checkpoints)."""
    from tests.vendor.mantis.conversation import conv_templates

    return conv_templates["llama_3"]


def read_with_mantis(folder: Path, processor) -> Read:
    """Mantis's load_data_from_config on the folder's mantis_data.yaml, started in the folder, every item read."""
    from tests.vendor.mantis import data as mantis_data

    started = time.perf_counter()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the config's path, and the rows' image paths, are relative to it
        patch.delenv("LOCAL_RANK", raising=False)  # ChatDataset sleeps LOCAL_RANK * 5 seconds
        args = DataArguments("mantis_data.yaml", conv_format=llama_3())
        train, val, test, collate = mantis_data.load_data_from_config(args, processor)
        assert val is None and test is None
        assert [type(d).__name__ for d in train.datasets] == ["ChatDataset"]
        batches = [collate([train[i]]) for i in range(len(train))]
    dataset = train.datasets[0]
    held = dataset.conversations  # after __getitem__, which edits them when it adds placeholders
    items = []
    for batch, turns, files in zip(batches, held, dataset.all_images, strict=True):
        pixels = batch["pixel_values"]
        assert isinstance(pixels, list) and len(pixels) == 1  # the processor's own collate: one list per batch
        items.append(Item(batch["input_ids"][0].tolist(), batch["labels"][0].tolist(),
                          None if pixels[0] is None else tuple(pixels[0].shape), [list(t) for t in turns],
                          [path.as_posix() for path in files or []]))
    rows = [json.loads(line) for line in (folder / "data.jsonl").read_text("utf-8").splitlines()]
    return Read(rows, items, time.perf_counter() - started)


@pytest.fixture(scope="module")
def read(export_dir, processor) -> Read:
    result = read_with_mantis(export_dir, processor)
    labelled = sum(sum(label != IGNORE_INDEX for label in item.labels) for item in result.items)
    tokens = sum(len(item.input_ids) for item in result.items)
    images = sum(item.pixel_values[0] for item in result.items if item.pixel_values)
    print(f"Mantis read {len(result.items)} items from {len(result.rows)} rows, {images} images, "
          f"{labelled} labelled of {tokens} tokens (longest {max(len(i.input_ids) for i in result.items)}), "
          f"in {result.seconds:.1f}s")
    return result


# The checks. Each returns what is wrong with one row as Mantis read it: nothing, for a good row.

def image_problems(row: dict, item: Item, image_id: int) -> list[str]:
    """One placeholder per image in the row, and one image token and one picture per image in what Mantis made.

    Mantis repairs a mismatch silently (ChatDataset prepends placeholders, MLlavaProcessor drops extra ones),
    so the row's own count is compared with what came out.
    """
    placeholders = sum(turn["content"].count(IMAGE) for turn in row["conversation"])
    tokens = item.input_ids.count(image_id)
    pictures = item.pixel_values[0] if item.pixel_values else 0
    counts = {"placeholders": placeholders, "images": len(row["images"]), "image tokens": tokens, "pictures": pictures}
    problems = [] if len(set(counts.values())) == 1 else [f"image counts differ: {counts}"]
    if item.pixel_values and item.pixel_values[1:] != (3, 384, 384):
        problems.append(f"pixel_values of shape {item.pixel_values}")
    return problems


def turn_problems(row: dict, item: Item) -> list[str]:
    """The turns Mantis holds (and formats) and the image files it opens are the row's, unchanged."""
    expected = [[turn["role"], turn["content"]] for turn in row["conversation"]]
    problems = [] if item.turns == expected else ["Mantis holds other turns than the row's"]
    if item.images != row["images"]:
        problems.append(f"Mantis opens other image files than the row's: {item.images}")
    return problems


def label_problems(row: dict, item: Item, tokenizer, system: str) -> list[str]:
    """The labelled spans are the assistant turns (with the header and <|eot_id|> the Llama-3 template puts
    around them, which Mantis labels too), the unlabelled ones the system prompt and the user turns."""
    if len(item.input_ids) >= MAX_SEQ_LEN:
        return [f"truncated at {len(item.input_ids)} tokens"]
    if any(label not in (IGNORE_INDEX, token) for label, token in zip(item.labels, item.input_ids)):
        return ["a label differs from its input token"]
    spans = {True: [], False: []}
    position = 0
    for labelled, run in itertools.groupby(item.labels, key=lambda label: label != IGNORE_INDEX):
        length = len(list(run))
        text = tokenizer.decode(item.input_ids[position:position + length], skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)
        spans[labelled].append(text)
        position += length
    assistant = [f"{ASSISTANT_HEADER}{t['content']}{EOT}" for t in row["conversation"] if t["role"] == "assistant"]
    user = [f"{USER_HEADER}{text}{EOT}" for text in numbered([t["content"] for t in row["conversation"]
                                                               if t["role"] == "user"])]
    user[0] = f"{tokenizer.bos_token}{system}{EOT}{user[0]}"
    problems = []
    if spans[True] != assistant:
        problems.append(f"labelled spans are not the assistant turns: {spans[True]!r}")
    if spans[False] != user:
        problems.append(f"unlabelled spans are not the system prompt and the user turns: {spans[False]!r}")
    return problems


def numbered(texts: list[str]) -> list[str]:
    """Each <image> as MLlavaProcessor writes it in the prompt: ``(image k: <Image><image></Image>)``, k from 1."""
    count = itertools.count(1)
    return ["".join(part if i == 0 else f"(image {next(count)}: <Image><image></Image>){part}"
                    for i, part in enumerate(text.split(IMAGE))) for text in texts]


def problems(row: dict, item: Item, processor) -> list[str]:
    tokenizer = processor.tokenizer
    return [*turn_problems(row, item),
            *image_problems(row, item, tokenizer.convert_tokens_to_ids(IMAGE)),
            *label_problems(row, item, tokenizer, llama_3().system)]


# The tests.

def test_the_config_yields_one_item_per_row(read, export_dir):
    assert len(read.rows) == 132
    assert len(read.items) == len(read.rows)
    assert (export_dir / "mantis_data.yaml").is_file()


def test_every_row_has_its_images_and_its_turns_unchanged(read, processor):
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE)
    wrong = {row["id"]: [*turn_problems(row, item), *image_problems(row, item, image_id)]
             for row, item in zip(read.rows, read.items)}
    assert {key: value for key, value in wrong.items() if value} == {}
    images = sum(len(row["images"]) for row in read.rows)
    assert images == sum(item.pixel_values[0] for item in read.items if item.pixel_values) > len(read.rows)


def test_exactly_the_assistant_turns_are_labelled(read, processor):
    system = llama_3().system
    wrong = {row["id"]: label_problems(row, item, processor.tokenizer, system)
             for row, item in zip(read.rows, read.items)}
    assert {key: value for key, value in wrong.items() if value} == {}
    turns = sum(turn["role"] == "assistant" for row in read.rows for turn in row["conversation"])
    print(f"{turns} assistant turns labelled, in {len(read.rows)} rows")


def test_tacos_own_rows_pass_the_same_check(reference, processor, tmp_path):
    """The two rows TACO's own pipeline built (training-rows/cota-mantis.*.json) pass the same checks: they ask
    for TACO's format, not for this exporter's habits. Their images are the traces' images, in order."""
    folder = tmp_path / "golden"
    (folder / "images").mkdir(parents=True)
    rows = []
    for path in sorted((reference / "training-rows").glob("cota-mantis.*.json")):
        row = json.loads(path.read_text("utf-8"))
        trace = json.loads((reference / "traces" / (path.stem.split(".", 1)[1] + ".json")).read_text("utf-8"))
        sources = [part["path"] for message in trace["messages"] if isinstance(message["content"], list)
                   for part in message["content"] if part["type"] == "image"]
        assert len(sources) == len(row["images"]) >= 2
        for rel, source in zip(row["images"], sources):
            shutil.copy(reference / "traces" / source, folder / rel)
        rows.append(row)
    assert len(rows) == 2
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    (folder / "mantis_data.yaml").write_text(
        "data:\n  - path: data.jsonl\n    name: cota-mantis\n    split: train\n    type: json\n    format: chat\n")

    golden = read_with_mantis(folder, processor)
    assert len(golden.items) == 2
    assert {r["id"]: problems(r, item, processor) for r, item in zip(golden.rows, golden.items)} == {
        r["id"]: [] for r in rows}


def test_the_check_fails_on_a_broken_row(read, export_dir, processor, tmp_path):
    """The negative control: the same loader and the same check, on a copy of one real row made wrong.

    One image too few (Mantis drops the extra placeholder without a word), one placeholder too few (Mantis
    adds one in front of the first turn), and an assistant turn that contains ``<|eot_id|>``, which cuts the
    labels in the wrong place. The untouched row, read beside them, passes.
    """
    row = next(r for r in read.rows if len(r["images"]) >= 2)
    short = {**row, "id": "one-image-short", "images": row["images"][:-1]}
    extra = {**row, "id": "one-placeholder-short", "conversation": [dict(t) for t in row["conversation"]]}
    extra["conversation"][0]["content"] = extra["conversation"][0]["content"].replace(IMAGE, "", 1)
    assert extra["conversation"][0]["content"] != row["conversation"][0]["content"]
    cut = {**row, "id": "eot-inside", "conversation": [dict(t) for t in row["conversation"]]}
    cut["conversation"][1]["content"] = cut["conversation"][1]["content"].replace('"actions"', EOT + '"actions"', 1)
    folder = tmp_path / "broken"
    (folder / "images").mkdir(parents=True)
    for rel in row["images"]:
        shutil.copy(export_dir / rel, folder / rel)
    shutil.copy(export_dir / "mantis_data.yaml", folder)
    rows = [row, short, extra, cut]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")

    broken = read_with_mantis(folder, processor)
    assert len(broken.items) == 4
    found = {r["id"]: problems(r, item, processor) for r, item in zip(broken.rows, broken.items)}
    print("\n".join(f"{key}: {[p[:100] for p in value]}" for key, value in found.items()))
    assert found[row["id"]] == []
    assert any("image counts differ" in p for p in found["one-image-short"]), found["one-image-short"]
    assert any("image counts differ" in p for p in found["one-placeholder-short"]), found["one-placeholder-short"]
    assert any("Mantis holds other turns" in p for p in found["one-placeholder-short"])
    assert any("labelled spans are not the assistant turns" in p for p in found["eot-inside"]), found["eot-inside"]
