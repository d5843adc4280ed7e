"""A ``cota-llava`` export is read unchanged by LLaVA-NeXT's own training data loader.

TACO's Qwen2 (LLaVA-OneVision) checkpoints were trained with LLaVA-NeXT's ``llava/train/train.py``; its data
path is vendored in ``tests/vendor/llava_next`` (see the README there). The export is loaded as the README
tells a trainer to, ``--data_path EXPORT/data.json --image_folder EXPORT``, through
``make_supervised_data_module`` and ``LazySupervisedDataset``, with both chat templates LLaVA-NeXT has a
``preprocess_*`` for: ``--version qwen_1_5`` (``preprocess_qwen``) and ``--version llava_llama_3``
(``preprocess_llama3``). What the data path is given is set up as ``train()`` sets it up:

- ``--image_aspect_ratio anyres_max_9 --image_grid_pinpoints "(1x1),...,(6x6)"`` as in TACO's OneVision
  scripts (``llava/scripts/train/finetune_onevision_*.sh``), with LLaVA-NeXT's own ``SigLipImageProcessor``
  made tiny (32 px instead of 384, so the grid is 32..192 px; rows with several images take the ``pad``
  path, as LLaVA-NeXT forces for them); ``--mm_use_im_start_end False``;
- tiny tokenizers (``tests/tiny/chat_tokenizer.py``) laid out like the checkpoints' own: see
  ``llava_tokenizer`` for what is added and why.

For every row: ``__getitem__`` returns that row (no retry, no neighbour), there are as many images as
``<image>`` placeholders in the text and ``IMAGE_TOKEN_INDEX`` in the token ids, and the labels are the
assistant turns and nothing of the user's text but the template tokens LLaVA-NeXT itself unmasks.
"""

from __future__ import annotations

import copy
import inspect
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from PIL import Image

from tests.tiny import chat_tokenizer
from tests.vendor.llava_next import conversation as conversation_lib
from tests.vendor.llava_next import train
from tests.vendor.llava_next.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from tests.vendor.llava_next.siglip_encoder import SigLipImageProcessor


TEMPLATES = ("qwen_1_5", "llava_llama_3")  # --version; train() sets conversation_lib.default_conversation from it
FAMILY = {"qwen_1_5": "qwen2", "llava_llama_3": "mantis"}  # which tiny tokenizer stands in for the checkpoint's
PATCH = 32  # the tiny SigLIP's image size (the real one: 384)
# train() turns --image_grid_pinpoints "(1x1),...,(6x6)" into this list, with the processor's size as patch_size.
GRID = [[i * PATCH, j * PATCH] for i in range(1, 7) for j in range(1, 7)]

# Meta-Llama-3-8B-Instruct's chat template (its tokenizer_config.json), which preprocess_llama3 applies.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# How each template lays out one turn, and the tokens LLaVA-NeXT labels in every turn (its unmask_tokens:
# preprocess_qwen's [198, im_start, im_end], 198 being Qwen2's "\n"; preprocess_llama3's list, whose "\n\n" is
# no token of Llama-3's, so it unmasks nothing).
LAYOUT = {
    "qwen_1_5": {"starts": "<|im_start|>", "head": "<|im_start|>{role}\n", "end": "<|im_end|>\n",
                 "unmasked": ["<|im_start|>", "<|im_end|>", "\n"]},
    "llava_llama_3": {"starts": "<|start_header_id|>", "head": "<|start_header_id|>{role}<|end_header_id|>\n\n",
                      "end": "<|eot_id|>",
                      "unmasked": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]},
}
ROLES = {"human": "user", "gpt": "assistant"}
SYSTEM = {  # preprocess_qwen's and preprocess_llama3's own default system messages
    "qwen_1_5": inspect.signature(train.preprocess_qwen).parameters["system_message"].default,
    "llava_llama_3": inspect.signature(train.preprocess_llama3).parameters["system_message"].default,
}


# --- what the trainer is given ------------------------------------------------------------------


class _AsInTransformers4:
    """The two tokenizer behaviours of transformers 4.x that preprocess_qwen / preprocess_llama3 rely on.

    LLaVA-NeXT pins transformers 4.x (TACO's requirements_llava.txt: 4.46.3). There, ``apply_chat_template``
    returns a list of ids and the extra special tokens are ``additional_special_tokens_ids``; transformers 5
    returns a BatchEncoding by default (``input_id += ...`` would then add its keys) and calls them
    ``extra_special_tokens_ids``. Nothing else is changed.
    """

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return self.extra_special_tokens_ids

    def apply_chat_template(self, conversation, *args, **kwargs):
        kwargs.setdefault("return_dict", False)
        return super().apply_chat_template(conversation, *args, **kwargs)


def _as_in_transformers_4(tokenizer):
    if int(transformers.__version__.split(".")[0]) >= 5:
        cls = type(tokenizer)
        tokenizer.__class__ = type(f"{cls.__name__}AsIn4", (_AsInTransformers4, cls), {})
    return tokenizer


def llava_tokenizer(folder: Path, version: str):
    """A tiny tokenizer laid out like the checkpoint's own, as preprocess_qwen / preprocess_llama3 expect it.

    Built on ``chat_tokenizer.build``, with what LLaVA-NeXT's code needs of it:

    - no ``<image>`` (nor Mantis's ``<pad>``) in the vocabulary: the real Qwen2 and Llama-3 tokenizers have
      none, and ``preprocess_*`` adds ``<image>`` itself to a copy of the tokenizer;
    - qwen_1_5: ``<|im_start|>`` and ``<|im_end|>`` as the additional special tokens (as Qwen2's
      tokenizer_config.json has them: preprocess_qwen unpacks exactly these two), and ``"\\n"`` at id 198,
      Qwen2's id for it, which preprocess_qwen labels by number in every turn;
    - llava_llama_3: Meta-Llama-3-8B-Instruct's chat template, which preprocess_llama3 applies turn by turn.
    """
    from tokenizers import Tokenizer

    family = FAMILY[version]
    base = chat_tokenizer.build(folder, family)
    spec = json.loads(base.backend_tokenizer.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in chat_tokenizer.ADDED[family]]
    if version == "qwen_1_5":
        vocab = spec["model"]["vocab"]
        newline = "\u010a"  # byte-level BPE's symbol for "\n"
        other = next(token for token, i in vocab.items() if i == 198)
        vocab[newline], vocab[other] = 198, vocab[newline]
        tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                                         eos_token="<|im_end|>", pad_token="<|endoftext|>")
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        assert tokenizer("a\nb").input_ids[1] == 198
    else:
        tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                                         bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
        tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    assert DEFAULT_IMAGE_TOKEN not in tokenizer.get_vocab()
    return _as_in_transformers_4(tokenizer)


def data_args(data_path: Path, image_folder: Path) -> train.DataArguments:
    """DataArguments as train() leaves them for the flags in FLAGS (tiny image processor aside)."""
    args = train.DataArguments(data_path=str(data_path), lazy_preprocess=True, is_multimodal=True,
                               image_folder=str(image_folder), image_aspect_ratio="anyres_max_9",
                               image_grid_pinpoints=GRID)
    args.image_processor = SigLipImageProcessor(size=(PATCH, PATCH), crop_size={"height": PATCH, "width": PATCH})
    args.mm_use_im_start_end = False
    return args


FLAGS = ("--data_path EXPORT/data.json --image_folder EXPORT --version qwen_1_5 --image_aspect_ratio anyres_max_9 "
         '--image_grid_pinpoints "(1x1),...,(6x6)" --mm_use_im_start_end False --mm_use_im_patch_token False')


class _Retried(Exception):
    pass


class _NoRetry:
    """LazySupervisedDataset.__getitem__ sleeps and retries, then returns the NEXT row; here a failure is final."""

    @staticmethod
    def sleep(_seconds):
        raise _Retried


def _item(dataset, i: int) -> dict[str, Any]:
    try:
        return dataset[i]
    except _Retried as retried:
        error, row = retried.__context__, dataset.list_data_dict[i]
        raise AssertionError(f"LazySupervisedDataset rejects row {i} ({row.get('sample_id')}): {error!r}") from error


@dataclass
class Reading:
    version: str
    export: Path
    rows: list[dict[str, Any]]
    items: list[dict[str, Any]]
    tokenizer: Any
    dataset: Any
    collator: Any
    seconds: float


def read(export: Path, version: str, folder: Path, data_path: Path | None = None) -> Reading:
    """Every row of ``data_path`` (``export/data.json``) through make_supervised_data_module, as train() builds
    it, with template ``version`` and ``export`` as the image folder."""
    data_path = data_path or export / "data.json"
    tokenizer = llava_tokenizer(folder / f"tokenizer-{version}", version)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conversation_lib, "default_conversation", conversation_lib.conv_templates[version])
        patch.setattr(train, "time", _NoRetry)
        started = time.perf_counter()
        module = train.make_supervised_data_module(tokenizer=tokenizer, data_args=data_args(data_path, export))
        dataset = module["train_dataset"]
        items = [_item(dataset, i) for i in range(len(dataset))]
        seconds = time.perf_counter() - started
    rows = json.loads(data_path.read_text("utf-8"))
    return Reading(version, export, rows, items, tokenizer, dataset, module["data_collator"], seconds)


# --- the checks ---------------------------------------------------------------------------------


def check_images(reading: Reading, i: int, row: dict[str, Any]) -> int:
    """As many images as ``<image>`` placeholders, in the text and in the token ids; each image its file."""
    item = reading.items[i]
    placeholders = sum(turn["value"].count(DEFAULT_IMAGE_TOKEN) for turn in row["conversations"])
    in_ids = int((item["input_ids"] == IMAGE_TOKEN_INDEX).sum())
    images = len(row["image"])
    assert placeholders == images, f"row {i}: {placeholders} <image> placeholders, {images} images"
    assert in_ids == len(item["image"]) == images, (
        f"row {i}: {in_ids} image tokens, {len(item['image'])} image tensors, {images} images")
    for path, (pixels, size, modality) in zip(row["image"], item["image"]):
        with Image.open(reading.export / path) as picture:
            assert size == picture.size, f"row {i}: {path} is {picture.size}, the loader read {size}"
        assert modality == "image" and isinstance(pixels, torch.Tensor)
        assert pixels.shape[-3:] == (3, PATCH, PATCH) and pixels.dim() == (3 if images > 1 else 4)
    return in_ids


def _text(tokenizer, ids: list[int]) -> str:
    """Decode ids, IMAGE_TOKEN_INDEX as ``<image>``."""
    parts, run = [], []
    for token in ids + [IMAGE_TOKEN_INDEX]:
        if token == IMAGE_TOKEN_INDEX:
            parts.append(tokenizer.decode(run, skip_special_tokens=False))
            run = []
        else:
            run.append(token)
    return DEFAULT_IMAGE_TOKEN.join(parts)


def _single_token(tokenizer, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == 1, f"{text!r} is {len(ids)} tokens"
    return ids


def check_labels(reading: Reading, i: int, row: dict[str, Any]) -> tuple[int, int]:
    """The labels are the assistant turns, whole, and of the other turns only LLaVA-NeXT's template tokens.

    Returns (tokens labelled in assistant turns, template tokens labelled elsewhere)."""
    layout, tokenizer = LAYOUT[reading.version], reading.tokenizer
    ids, labels = reading.items[i]["input_ids"].tolist(), reading.items[i]["labels"].tolist()
    assert len(ids) == len(labels)
    unmasked = {token for text in layout["unmasked"] for token in _single_token(tokenizer, text)}
    starts = [p for p, token in enumerate(ids) if token == tokenizer.convert_tokens_to_ids(layout["starts"])]
    turns = [("system", SYSTEM[reading.version])] + [(ROLES[t["from"]], t["value"]) for t in row["conversations"]]
    assert len(starts) == len(turns), f"row {i}: {len(starts)} turns in the tokens, {len(turns)} in the row"
    assistant = elsewhere = 0
    for p in range(starts[0]):  # Llama-3's <|begin_of_text|>
        assert labels[p] == IGNORE_INDEX or (labels[p] == ids[p] and ids[p] in unmasked)
        elsewhere += labels[p] != IGNORE_INDEX
    for k, ((role, value), a, b) in enumerate(zip(turns, starts, starts[1:] + [len(ids)])):
        head, end = layout["head"].format(role=role), layout["end"]
        text = _text(tokenizer, ids[a:b])
        assert text.startswith(head) and text.endswith(end), f"row {i}, turn {k} ({role}) reads {text!r}"
        if role == "assistant":
            assert labels[a:b] == ids[a:b], f"row {i}, turn {k} (assistant) is not labelled whole"
            assert _text(tokenizer, labels[a:b]) == head + value + end, f"row {i}, turn {k}: the labels read {text!r}"
            assistant += b - a
        else:
            content = text[len(head):len(text) - len(end)]
            assert content.count(DEFAULT_IMAGE_TOKEN) == value.count(DEFAULT_IMAGE_TOKEN), f"row {i}, turn {k}: images"
            # preprocess_multimodal moves a turn's only <image> to its front: compare the text around it.
            words = content.replace(DEFAULT_IMAGE_TOKEN, "").strip()
            assert words == value.replace(DEFAULT_IMAGE_TOKEN, "").strip(), f"row {i}, turn {k} ({role}) reads {text!r}"
            marked = [p for p in range(a, b) if labels[p] != IGNORE_INDEX]
            assert all(labels[p] == ids[p] and ids[p] in unmasked for p in marked), (
                f"row {i}, turn {k}: {role} text is labelled: {_text(tokenizer, [ids[p] for p in marked])!r}")
            elsewhere += len(marked)
    return assistant, elsewhere


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export_dir(reference_exports) -> Path:
    """All reference traces exported as cota-llava."""
    out = reference_exports.export("cota-llava")
    assert (out / "data.json").is_file()
    return out


@pytest.fixture(scope="module", params=TEMPLATES)
def reading(request, export_dir, tmp_path_factory) -> Reading:
    return read(export_dir, request.param, tmp_path_factory.mktemp(f"llava-{request.param}"))


# --- tests --------------------------------------------------------------------------------------


def test_every_row_is_read_through_the_json_load_route(reading):
    rows = reading.rows
    assert isinstance(rows, list) and len(rows) == 132
    assert reading.dataset.data_args.dataset_paths == [str(reading.export / "data.json")]
    assert reading.dataset.list_data_dict == rows  # json.load of the one array: one dict per row, in order
    assert len(reading.items) == len(rows)
    for i, item in enumerate(reading.items):
        assert item["id"] == i, f"row {i}: the loader returned row {item['id']} instead"  # no row has an `id`
        assert item["input_ids"].dtype == torch.long and item["labels"].shape == item["input_ids"].shape
    images = sum(check_images(reading, i, row) for i, row in enumerate(rows))
    labelled = [check_labels(reading, i, row) for i, row in enumerate(rows)]
    tokens = sum(len(item["input_ids"]) for item in reading.items)
    assistant, elsewhere = sum(a for a, _ in labelled), sum(e for _, e in labelled)
    assistant_turns = sum(t["from"] == "gpt" for row in rows for t in row["conversations"])
    print(f"\n{reading.version}: {len(rows)} rows, {images} images, {tokens} tokens, {assistant + elsewhere} labelled: "
          f"{assistant} in {assistant_turns} assistant turns + {elsewhere} template tokens of other turns; "
          f"read in {reading.seconds:.2f}s")
    # The whole export as one batch, as the trainer's collator makes it.
    batch = reading.collator(reading.items)
    longest = max(len(item["input_ids"]) for item in reading.items)
    assert batch["input_ids"].shape == batch["labels"].shape == (len(rows), longest)
    assert len(batch["images"]) == len(batch["image_sizes"]) == images and set(batch["modalities"]) == {"image"}
    assert int((batch["labels"] != IGNORE_INDEX).sum()) == assistant + elsewhere


@pytest.mark.parametrize("version", TEMPLATES)
def test_tacos_own_rows_pass_the_same_checks(reference, version, tmp_path):
    """The two cota-llava rows TACO's own pipeline built, in a folder laid out like an export."""
    rows = []
    for name in ("TACO-Llama3-SigLIP-125", "TACO-Qwen2-SigLIP-21"):
        row = json.loads((reference / "training-rows" / f"cota-llava.{name}.json").read_text("utf-8"))
        trace = json.loads((reference / "traces" / f"{name}.json").read_text("utf-8"))
        pictures = [part["path"] for message in trace["messages"] if isinstance(message["content"], list)
                    for part in message["content"] if part["type"] == "image"]
        assert len(pictures) == len(row["image"])
        for picture, path in zip(pictures, row["image"]):  # the rows rename them images/<trace>-<k>.png
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(reference / "traces" / picture, tmp_path / path)
        rows.append(row)
    (tmp_path / "data.json").write_text(json.dumps(rows), "utf-8")
    reading = read(tmp_path, version, tmp_path / "work")
    assert [item["id"] for item in reading.items] == [0, 1]
    assert sum(check_images(reading, i, row) for i, row in enumerate(rows)) == 4
    for i, row in enumerate(rows):
        check_labels(reading, i, row)


def test_the_image_check_catches_a_row_with_one_image_too_few(export_dir, tmp_path):
    rows = json.loads((export_dir / "data.json").read_text("utf-8"))
    row = next(row for row in rows if len(row["image"]) >= 2)
    broken = {**copy.deepcopy(row), "image": row["image"][:-1]}
    data = tmp_path / "data.json"
    data.write_text(json.dumps([row, broken]), "utf-8")
    reading = read(export_dir, "qwen_1_5", tmp_path, data)
    check_images(reading, 0, reading.rows[0])  # the row as exported passes
    with pytest.raises(AssertionError, match="placeholders"):
        check_images(reading, 1, reading.rows[1])


def test_the_label_check_catches_user_text_labelled_and_a_speaker_changed(export_dir, tmp_path):
    rows = json.loads((export_dir / "data.json").read_text("utf-8"))
    speaker_changed = copy.deepcopy(rows[0])
    speaker_changed["conversations"][1]["from"] = "human"  # the first assistant turn, read as the user's
    data = tmp_path / "data.json"
    data.write_text(json.dumps([rows[0], speaker_changed]), "utf-8")
    reading = read(export_dir, "qwen_1_5", tmp_path, data)
    check_labels(reading, 0, rows[0])  # the row as exported passes
    with pytest.raises(AssertionError, match=r"row 1, turn 2 \(assistant\) reads '<\|im_start\|>user"):
        check_labels(reading, 1, rows[0])
    ids, labels = reading.items[0]["input_ids"], reading.items[0]["labels"]
    user = int((ids == reading.tokenizer.convert_tokens_to_ids("<|im_start|>")).nonzero()[1])
    labels[user:] = ids[user:]  # everything after the system turn labelled, the user's turns too
    with pytest.raises(AssertionError, match="user text is labelled"):
        check_labels(reading, 0, rows[0])


def test_one_row_a_line_is_not_json_to_the_loader(export_dir, tmp_path):
    """Why the export is one JSON array: a ``.json`` --data_path is read with json.load, so JSON Lines fail."""
    rows = json.loads((export_dir / "data.json").read_text("utf-8"))
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    with pytest.raises(json.JSONDecodeError, match="Extra data"):
        train.LazySupervisedDataset(str(data), llava_tokenizer(tmp_path / "tokenizer", "qwen_1_5"),
                                    data_args(data, export_dir))
