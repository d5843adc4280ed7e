"""The CLIP tools (three similarity tools and GetObjects) end to end on a tiny random CLIP checkpoint.

The checkpoint (tests/tiny/clip.py) has the real architecture, processor and tokenizer, so loading,
preprocessing, batching and the observation formats are exercised for real; only the scores are
meaningless. The properties checked hold for any weights (e.g. identical pictures score 1.0).
"""

from __future__ import annotations

import time

import pytest
from PIL import Image

from taco_app.tools import similarity as sim
from taco_app.weights import CLIP, MODELS, ModelUnavailable
from taco_app.tools.similarity import GetImageToImagesSimilarity, GetImageToTextsSimilarity, GetTextToImagesSimilarity
from taco_app.tools.tagging import PROMPT, GetObjects, load_vocabulary, select
from tests.tiny.clip import build

TEXTS = ["an astronaut", "a cup of coffee", "a tabby cat"]


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    started = time.perf_counter()
    folder = build(tmp_path_factory.mktemp("tiny-clip"), extra_words=load_vocabulary())
    print(f"tiny CLIP built in {time.perf_counter() - started:.2f}s")
    return folder


@pytest.fixture(scope="module", autouse=True)
def release_tiny_clip(tiny_clip):
    yield
    MODELS.unload((CLIP.key, str(tiny_clip)))  # leave the process-wide manager as other test files expect it


@pytest.fixture
def clip_env(tiny_clip, monkeypatch):
    monkeypatch.setenv(CLIP.env, str(tiny_clip))
    monkeypatch.delenv("TACO_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.delenv("TACO_TAG_THRESHOLD", raising=False)
    return tiny_clip


@pytest.fixture(scope="session")
def photos():
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    return {
        "image-0": astronaut,
        "image-1": Image.fromarray(data.coffee()),
        "image-2": Image.fromarray(data.chelsea()),
        "image-3": astronaut.copy(),  # the same picture again, as another image of the session
    }


def lookup_in(images):
    def lookup(image_id: str) -> Image.Image:
        if image_id not in images:  # the same error as the session's lookup
            raise ValueError(f"{image_id} does not exist; the images in this session are {', '.join(images)}")
        return images[image_id]

    return lookup


def check_scores(similarity, count):
    assert isinstance(similarity, list) and len(similarity) == count
    for score in similarity:
        assert isinstance(score, float) and -1.0 <= score <= 1.0
        assert score == round(score, 2), f"{score} has more than 2 decimals"


def test_image_to_images(clip_env, photos):
    arguments = {"image": "image-0", "other_images": ["image-1", "Image 2"]}
    result = GetImageToImagesSimilarity()(arguments, lookup_in(photos))
    out = result.output
    assert set(out) == {"similarity", "best_image_index", "best_image"}
    check_scores(out["similarity"], 2)
    assert out["similarity"][out["best_image_index"]] == max(out["similarity"])
    assert out["best_image"] == ["image-1", "image-2"][out["best_image_index"]]  # the id, normalised
    assert result.overlays["best"] == out["best_image"] and len(result.overlays["scores"]) == 2


def test_identical_picture_scores_one(clip_env, photos):
    result = GetImageToImagesSimilarity()({"image": "image-0", "other_images": ["image-1", "image-3", "image-2"]},
                                          lookup_in(photos))
    assert result.output["similarity"][1] == 1.0
    assert result.output["best_image_index"] == 1 and result.output["best_image"] == "image-3"


def test_image_to_texts(clip_env, photos):
    out = GetImageToTextsSimilarity()({"image": "image-2", "texts": TEXTS}, lookup_in(photos)).output
    assert set(out) == {"similarity", "best_text_index", "best_text"}
    check_scores(out["similarity"], len(TEXTS))
    assert out["similarity"][out["best_text_index"]] == max(out["similarity"])
    assert out["best_text"] == TEXTS[out["best_text_index"]]


def test_text_to_images(clip_env, photos):
    out = GetTextToImagesSimilarity()({"text": "a black and white cat", "images": ["image-0", "image-1", "image-2"]},
                                      lookup_in(photos)).output
    assert set(out) == {"similarity", "best_image_index", "best_image"}
    check_scores(out["similarity"], 3)
    assert out["similarity"][out["best_image_index"]] == max(out["similarity"])
    assert out["best_image"] == f"image-{out['best_image_index']}"


def test_one_candidate_is_enough(clip_env, photos):
    out = GetImageToTextsSimilarity()({"image": "image-0", "texts": ["an astronaut"]}, lookup_in(photos)).output
    assert out["best_text_index"] == 0 and out["best_text"] == "an astronaut"


def test_get_objects(clip_env, photos, monkeypatch):
    MODELS.unload((CLIP.key, str(clip_env)))  # a fresh model, so the vocabulary is embedded here
    model = sim.embedder()
    calls = []
    real_texts = model.texts
    monkeypatch.setattr(model, "texts", lambda texts: calls.append(len(texts)) or real_texts(texts))
    tool, lookup = GetObjects(), lookup_in(photos)
    times = []
    for image in ("image-0", "image-2"):
        started = time.perf_counter()
        result = tool({"image": image}, lookup)
        times.append(time.perf_counter() - started)
        objects = result.output["objects"]
        assert set(result.output) == {"objects"}
        assert objects and objects == sorted(objects) and len(set(objects)) == len(objects)
        assert set(objects) <= set(load_vocabulary())
    print(f"GetObjects: first call {times[0] * 1000:.1f} ms (embeds {len(load_vocabulary())} prompts), "
          f"second {times[1] * 1000:.1f} ms")
    assert calls == [len(load_vocabulary())], "the vocabulary must be embedded once per model"


def test_get_objects_threshold(clip_env, photos, monkeypatch):
    tool, lookup = GetObjects(), lookup_in(photos)
    monkeypatch.setenv("TACO_TAG_THRESHOLD", "0")
    assert len(tool({"image": "image-1"}, lookup).output["objects"]) == 20  # capped at top-k
    monkeypatch.setenv("TACO_TAG_THRESHOLD", "1")
    assert len(tool({"image": "image-1"}, lookup).output["objects"]) == 1  # never empty


def test_select_keeps_likely_tags():
    tags = ("cat", "dog", "zebra", "apple")
    assert select([0.5, 0.3, 0.15, 0.05], tags, 0.1) == [("cat", 0.5), ("dog", 0.3), ("zebra", 0.15)]
    assert select([0.5, 0.3, 0.15, 0.05], tags, 0.1, top_k=2) == [("cat", 0.5), ("dog", 0.3)]
    assert select([0.25] * 4, tags, 0.9) == [("cat", 0.25)]


def test_vocabulary_file():
    tags = load_vocabulary()
    assert len(tags) == len(set(tags)) == 183
    assert tags[0] == "person" and tags[79] == "toothbrush"  # COCO's 80 categories come first, in order
    assert PROMPT.format(tag="cat") == "a photo of a cat."


def test_model_loaded_once_for_all_tools(clip_env, photos, monkeypatch):
    MODELS.unload((CLIP.key, str(clip_env)))
    loads = []
    real_loader = sim.load_embedder

    def counting_loader(model_id: str, device: str) -> sim.Embedder:
        loads.append(model_id)
        return real_loader(model_id, device)

    monkeypatch.setattr(sim, "load_embedder", counting_loader)
    lookup = lookup_in(photos)
    GetImageToImagesSimilarity()({"image": "image-0", "other_images": ["image-1"]}, lookup)
    GetImageToTextsSimilarity()({"image": "image-0", "texts": TEXTS}, lookup)
    GetTextToImagesSimilarity()({"text": "a cat", "images": ["image-2"]}, lookup)
    GetObjects()({"image": "image-0"}, lookup)
    assert loads == [str(clip_env)]
    assert [key for key in MODELS.loaded() if key[0] == CLIP.key] == [(CLIP.key, str(clip_env))]


@pytest.mark.parametrize("tool, arguments", [
    (GetImageToImagesSimilarity, {"image": "image-0", "other_images": []}),
    (GetImageToTextsSimilarity, {"image": "image-0", "texts": []}),
    (GetTextToImagesSimilarity, {"text": "a cat", "images": []}),
    (GetTextToImagesSimilarity, {"text": "a cat", "images": "[]"}),
])
def test_empty_list_is_a_value_error(clip_env, photos, tool, arguments):
    with pytest.raises(ValueError, match="at least one"):
        tool()(arguments, lookup_in(photos))


@pytest.mark.parametrize("tool, arguments", [
    (GetImageToImagesSimilarity, {"image": "image-0", "other_images": ["image-1", "image-9"]}),
    (GetImageToTextsSimilarity, {"image": "image-9", "texts": TEXTS}),
    (GetTextToImagesSimilarity, {"text": "a cat", "images": ["image-9"]}),
    (GetObjects, {"image": "image-9"}),
])
def test_missing_image_id_is_the_lookups_error(clip_env, photos, tool, arguments):
    with pytest.raises(ValueError, match="image-9 does not exist"):
        tool()(arguments, lookup_in(photos))


@pytest.mark.parametrize("tool, arguments", [
    (GetImageToImagesSimilarity, {"image": "image-0", "other_images": ["image-1"]}),
    (GetImageToTextsSimilarity, {"image": "image-0", "texts": TEXTS}),
    (GetTextToImagesSimilarity, {"text": "a cat", "images": ["image-0"]}),
    (GetObjects, {"image": "image-0"}),
])
def test_no_weights_says_how_to_get_them(photos, tool, arguments, monkeypatch):
    monkeypatch.setenv(CLIP.env, "nobody/no-such-model")
    monkeypatch.delenv("TACO_ALLOW_DOWNLOAD", raising=False)
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable, match="python app.py download"):
        tool()(arguments, lookup_in(photos))
    assert time.perf_counter() - started < 2.0
