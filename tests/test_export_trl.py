"""The trl-sft export, read by TRL's own code: its chat-template helpers and the vision collator SFTTrainer uses.

The tiny processor is built here without the Hub: the Qwen2 tokenizer of tests/tiny/chat_tokenizer.py
with Qwen2-VL's vision tokens, transformers' Qwen2-VL image processor set to a few patches an image,
and the Qwen2.5-VL chat template as TRL ships it (TRL swaps in its training variant, with
``{% generation %}`` markers, for ``assistant_only_loss``). Qwen2-VL writes images where they are in
the text, as TACO's rows do.
"""

from __future__ import annotations

import json
import pytest

from taco_app.cota.prompt import ImagePart, assistant_turn, observation_turn, user_request
from taco_app.cota.training import goal
from taco_app.store.export import FORMATS, Sample
from taco_app.store.export.trl_sft import LOAD, TRAIN, user_content
from taco_app.store.queries import LatestFeedback
from taco_app.store.schema import SessionRow


trl_data = pytest.importorskip("trl.data_utils", reason="`trl` is not installed: the TRL checks are skipped")

TACO_IMAGE = "<image>\n"  # an image in TACO's training text
VISION = "<|vision_start|><|image_pad|><|vision_end|>"  # an image in Qwen2-VL's chat template
QWEN_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
BATCH = 8


# --- what the tests check ------------------------------------------------------------------------


def image_parts(row: dict) -> int:
    return sum(part["type"] == "image" for message in row["messages"] for part in message["content"])


def check_images(row: dict) -> None:
    """One image part per image, all in user turns."""
    assert image_parts(row) == len(row["images"]), row["id"]
    assert all(part["type"] != "image" for m in row["messages"] if m["role"] == "assistant" for part in m["content"])


def as_training_text(content: list[dict]) -> str:
    """A message's parts written as TACO's pipeline writes a turn: ``<image>\\n`` for each image."""
    return "".join(TACO_IMAGE if part["type"] == "image" else part["text"] for part in content)


def check_same_text(row: dict, mantis_row: dict) -> None:
    """The trl-sft row says, turn for turn, exactly what the cota-mantis row says."""
    assert row["id"] == mantis_row["id"] and row["images"] == mantis_row["images"]
    assert [(m["role"], as_training_text(m["content"])) for m in row["messages"]] == \
        [(m["role"], m["content"]) for m in mantis_row["conversation"]], row["id"]


def runs(values: list, wanted) -> list[tuple[int, int]]:
    """``(start, end)`` of each maximal run of items equal to ``wanted`` (or, given a callable, passing it)."""
    test = wanted if callable(wanted) else (lambda v: v == wanted)
    found, start = [], None
    for i, value in enumerate([*values, object()]):
        if i < len(values) and test(value):
            start = i if start is None else start
        elif start is not None:
            found.append((start, i))
            start = None
    return found


# --- fixtures ------------------------------------------------------------------------------------


def _sample() -> Sample:
    """Two input images, a literal "<image>" in the question, a tool image in an observation."""
    zoom = '{"thought":"Zoom in.","actions":[{"name":"ZoomIn","arguments":{"image":"image-0","box":[0,0,1,1]}}]}'
    done = '{"thought":"Done.","actions":[{"name":"Terminate","arguments":{"answer":"a <image> tag"}}]}'
    turns = [
        user_request("What is the <image> tag here?", ["image-0", "image-1"]),
        assistant_turn(zoom),
        observation_turn({"image": ImagePart("image-2"), "note": "zoomed"}),
        assistant_turn(done),
    ]
    images = ["images/aa.png", "images/bb.jpg", "images/cc.png"]
    return Sample("taco-studio-s1", "taco-studio", SessionRow(id="s1"), turns, images, LatestFeedback())


@pytest.fixture(scope="module")
def exports(reference_exports, tmp_path_factory) -> dict:
    """All reference traces exported as trl-sft and as cota-mantis."""
    folders = {fmt: reference_exports.export(fmt) for fmt in ("trl-sft", "cota-mantis")}
    rows = {fmt: [json.loads(line) for line in (folder / "data.jsonl").read_text("utf-8").splitlines()]
            for fmt, folder in folders.items()}
    return {"dir": folders["trl-sft"], "rows": rows["trl-sft"], "mantis": rows["cota-mantis"],
            "tmp": tmp_path_factory.mktemp("trl")}


@pytest.fixture(scope="module")
def loaded(exports):
    """The export as the card loads it: its code, run as it stands, with the folder filled in."""
    datasets = pytest.importorskip("datasets", reason="`datasets` is not installed: the load check is skipped")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", str(exports["tmp"] / "hf-cache"))
        namespace: dict = {}
        exec(LOAD.replace('"EXPORT"', json.dumps(str(exports["dir"]))), namespace)
    return namespace["dataset"]


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    """A tiny Qwen2-VL processor: tiny tokenizer, real image processor, TRL's copy of the chat template."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor
    from trl.chat_template_utils import qwen2_5_vl_chat_template

    from tests.tiny.chat_tokenizer import build

    tokenizer = build(tmp_path_factory.mktemp("qwen2-tokenizer"), family="qwen2")
    tokenizer.add_tokens(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"], special_tokens=True)
    # 28 x 28 pixels is one merged patch (patch 14, merge 2): at most 4 image tokens an image.
    images = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=4 * 28 * 28)
    return Qwen2VLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
                            chat_template=qwen2_5_vl_chat_template)


def _collator(processor):
    """The collator as SFTTrainer builds it for a vision dataset with ``assistant_only_loss=True``.

    TRL code path: ``SFTTrainer.__init__`` sees an ``images`` column, so it builds
    ``trl.trainer.sft_trainer.DataCollatorForVisionLanguageModeling`` with the chat template from
    ``get_training_chat_template`` (the template has no generation markers); rows with ``messages``
    go through ``_collate_language_modeling``: ``prepare_multimodal_messages`` fills the image parts,
    ``processor.apply_chat_template`` tokenizes and returns the assistant mask that becomes the labels.
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    assert not has_generation_markers(processor.chat_template)
    return DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True,
                                                 chat_template=get_training_chat_template(processor))


# --- one row, by hand --------------------------------------------------------------------------


def test_a_row_is_typed_parts_in_the_words_of_the_training_text():
    sample = _sample()
    row = FORMATS["trl-sft"].row(sample)
    assert set(row) == {"id", "messages", "images"}
    assert row["id"] == "taco-studio-s1" and row["images"] == sample.images
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
    assert row["messages"][0]["content"] == [
        {"type": "text", "text": goal() + "\n\n# USER REQUEST #:\nimage-0: \n"},
        {"type": "image"},
        {"type": "text", "text": "\nimage-1: \n"},
        {"type": "image"},
        {"type": "text", "text": "\nWhat is the <image > tag here?\n\nNow please generate your response:\n\n"},
    ]
    observation = row["messages"][2]["content"]
    assert [part["type"] for part in observation] == ["text", "image", "text"]
    assert observation[0]["text"].startswith("OBSERVATION:\n{'image': 'image-2: \n")  # no goal after the first turn
    assert row["messages"][3]["content"] == [{"type": "text", "text": sample.turns[3].text}]
    check_images(row)
    check_same_text(row, FORMATS["cota-mantis"].row(sample))
    assert trl_data.is_conversational(row)
    assert json.loads(json.dumps(row)) == row


def test_only_empty_pieces_are_dropped():
    assert user_content("<image>\n<image>\n") == [{"type": "image"}, {"type": "image"}]
    assert user_content("a\n<image>\n\n") == [{"type": "text", "text": "a\n"}, {"type": "image"},
                                              {"type": "text", "text": "\n"}]


def test_the_checks_fail_on_a_broken_row(processor):
    """Negative controls: each check above catches the row it exists for, and so does TRL."""
    from PIL import Image

    row = FORMATS["trl-sft"].row(_sample())
    mantis = FORMATS["cota-mantis"].row(_sample())
    one_image_short = {**row, "images": row["images"][:-1]}
    extra_part = json.loads(json.dumps(row))
    extra_part["messages"][1]["content"].append({"type": "image"})
    for broken in (one_image_short, extra_part):
        with pytest.raises(AssertionError):
            check_images(broken)
    with pytest.raises(ValueError, match="does not match number of image placeholders"):
        trl_data.prepare_multimodal_messages(one_image_short["messages"], images=one_image_short["images"])
    pictures = [Image.new("RGB", (40, 30), colour) for colour in ("red", "green")]
    with pytest.raises(ValueError, match="does not match number of image placeholders"):
        _collator(processor)([{"messages": one_image_short["messages"], "images": pictures}])
    no_newline = json.loads(json.dumps(row))
    no_newline["messages"][2]["content"][-1]["text"] = no_newline["messages"][2]["content"][-1]["text"][:-1]
    with pytest.raises(AssertionError):
        check_same_text(no_newline, mantis)


# --- the 132 reference traces ----------------------------------------------------------------------


@pytest.mark.reference
def test_every_row_is_what_trl_renders_as_tacos_text(exports, processor):
    rows, mantis = exports["rows"], {r["id"]: r for r in exports["mantis"]}
    assert len(rows) == 132 and sum(len(r["images"]) for r in rows) == 136
    for row in rows:
        check_images(row)
        assert trl_data.is_conversational(row)
        text = trl_data.maybe_apply_chat_template(row, processor)["text"]
        assert text.count(VISION) == len(row["images"])
        # What the template wrote is TACO's training text, turn for turn, with Qwen2-VL's image markers.
        assert text == QWEN_SYSTEM + "".join(
            f"<|im_start|>{m['role']}\n{m['content'].replace(TACO_IMAGE, VISION)}<|im_end|>\n"
            for m in mantis[row["id"]]["conversation"])


@pytest.mark.reference
def test_the_same_text_as_the_cota_mantis_export(exports):
    mantis = {r["id"]: r for r in exports["mantis"]}
    assert set(mantis) == {r["id"] for r in exports["rows"]}
    for row in exports["rows"]:
        check_same_text(row, mantis[row["id"]])


@pytest.mark.reference
def test_the_cards_code_loads_every_image(exports, loaded):
    from PIL import Image

    assert LOAD in (exports["dir"] / "README.md").read_text("utf-8")  # the code run here is the card's
    assert TRAIN in (exports["dir"] / "README.md").read_text("utf-8")
    assert loaded.num_rows == 132
    for row, written in zip(loaded, exports["rows"]):
        assert row["id"] == written["id"] and image_parts(row) == len(written["images"]) == len(row["images"])
        for picture, rel in zip(row["images"], written["images"]):
            assert isinstance(picture, Image.Image)
            with Image.open(exports["dir"] / rel) as on_disk:  # the right picture, in the right place
                assert picture.tobytes() == on_disk.tobytes()


@pytest.mark.reference
def test_trls_vision_collator_takes_every_row(exports, loaded, processor):
    collate = _collator(processor)
    tokenizer = processor.tokenizer
    pad, start, end = tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|vision_start|>", "<|vision_end|>"])
    merge = processor.image_processor.merge_size
    written = exports["rows"]
    # Rows of like length together, as a length-grouped sampler would batch them: the assistant mask
    # is computed token by token over the padded length, so mixed lengths only cost time.
    order = sorted(range(len(written)), key=lambda i: len(json.dumps(written[i])))
    image_runs = labelled_turns = 0
    for first in range(0, len(order), BATCH):
        batch = [loaded[i] for i in order[first:first + BATCH]]
        out = collate(batch)
        grids = out["image_grid_thw"].tolist()
        assert out["pixel_values"].shape[0] == sum(t * h * w for t, h, w in grids)
        tokens_per_image = iter([t * h * w // merge ** 2 for t, h, w in grids])
        for b, row in enumerate(batch):
            ids = out["input_ids"][b][out["attention_mask"][b] == 1].tolist()
            found = runs(ids, pad)
            assert len(found) == len(row["images"]), row["id"]  # one image-token run per image
            for s, e in found:
                assert ids[s - 1] == start and ids[e] == end and e - s == next(tokens_per_image)
            image_runs += len(found)
            # The loss is on the assistant turns, each one whole with its end-of-turn, and on nothing else.
            labels = out["labels"][b].tolist()
            spans = [tokenizer.decode(labels[s:e]) for s, e in runs(labels, lambda v: v != -100)]
            steps = [m["content"][0]["text"] + "<|im_end|>\n" for m in row["messages"] if m["role"] == "assistant"]
            assert spans == steps, row["id"]
            labelled_turns += len(spans)
        assert next(tokens_per_image, None) is None
    assert image_runs == 136
    assert labelled_turns == sum(m["role"] == "assistant" for r in written for m in r["messages"])


@pytest.mark.reference
def test_the_cards_training_code_trains(loaded, processor, monkeypatch, tmp_path):
    """The card's SFTTrainer code, run as it stands on a tiny Qwen2-VL model instead of the Hub's.

    Only what needs the Hub or a long run is swapped: the model (a 1-layer Qwen2-VL built here, with
    this processor), and two steps on the CPU writing to a temp folder. The card's own settings
    (``max_length=None``, ``assistant_only_loss=True``) go to TRL unchanged.
    """
    import torch
    import trl
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from trl.chat_template_utils import get_training_chat_template
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    tokenizer = processor.tokenizer
    names = ["vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id"]
    special = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    torch.manual_seed(0)
    tiny = Qwen2VLForConditionalGeneration(Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "bos_token_id": None,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2},
        **dict(zip(names, special))))

    class TinySFTTrainer(trl.SFTTrainer):
        def __init__(self, model: str, **kwargs):
            assert model == "Qwen/Qwen2.5-VL-3B-Instruct"  # the card's model, which needs the Hub
            super().__init__(model=tiny, processing_class=processor, **kwargs)

    real_config = trl.SFTConfig

    def config(**card_settings):
        assert card_settings == {"output_dir": "taco-sft", "max_length": None, "assistant_only_loss": True}
        return real_config(**{**card_settings, "output_dir": str(tmp_path / "taco-sft")}, max_steps=2,
                           per_device_train_batch_size=2, use_cpu=True, report_to="none", save_strategy="no",
                           logging_steps=1, seed=0)

    monkeypatch.setattr(trl, "SFTTrainer", TinySFTTrainer)
    monkeypatch.setattr(trl, "SFTConfig", config)
    namespace = {"dataset": loaded}
    exec(TRAIN, namespace)
    trainer = namespace["trainer"]
    assert isinstance(trainer.data_collator, DataCollatorForVisionLanguageModeling)
    assert trainer.data_collator.assistant_only_loss
    assert trainer.data_collator.chat_template == get_training_chat_template(processor)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(losses) == 2
    assert all(0 < loss < 100 for loss in losses)
