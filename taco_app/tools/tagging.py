"""GetObjects: zero-shot image tagging with the shared CLIP model over a fixed tag vocabulary.

TACO ran RAM++ (Recognize Anything) for GetObjects; it has no maintained package and its weights are
not on the Hub in a transformers format, so TACO Studio tags with the CLIP model the similarity tools
already keep warm. The vocabulary (``data/tag_vocabulary.txt``) is the 80 COCO object categories
(CC BY 4.0) plus a short list of our own scene, people, food and text tags. Each tag is prompted as
"a photo of a {tag}."; the image's cosine similarity to every prompt, times the model's logit scale,
goes through a softmax over the whole vocabulary; tags with probability ≥ ``TACO_TAG_THRESHOLD``
(default 0.05) are kept, at most 20 and at least the top one, and returned sorted alphabetically as
TACO's ``{'objects': [...]}``. The vocabulary's text features are computed once per loaded model.

Limits: only the 183 tags in the file can ever come out (RAM++ knows thousands); CLIP ranks concepts
that describe the whole picture, so small or background objects are often missed and the softmax
makes tags compete (a busy scene spreads probability thinly and yields fewer tags); the output says
what is likely in the picture, not where, nor how many.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image

from taco_app.settings import current
from taco_app.tools.base import IMAGE, Tool, ToolResult
from taco_app.weights import CLIP
from taco_app.tools.similarity import embedder

VOCABULARY_FILE = Path(__file__).resolve().parent / "data" / "tag_vocabulary.txt"
PROMPT = "a photo of a {tag}."
TOP_K = 20  # RAM++ observations in TACO's traces hold 1 to 24 tags, 11 typically


@lru_cache(maxsize=4)
def load_vocabulary(path: Path = VOCABULARY_FILE) -> tuple[str, ...]:
    """The tags of a vocabulary file: one per line, '#' comments and blank lines skipped, no duplicates."""
    tags: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        tag = line.strip()
        if not tag or tag.startswith("#"):
            continue
        if tag in tags:
            raise ValueError(f"{path}:{number}: the tag {tag!r} is listed twice")
        tags.append(tag)
    if not tags:
        raise ValueError(f"{path} lists no tags")
    return tuple(tags)


def threshold() -> float:
    """The minimum probability a tag needs: the setting ``TACO_TAG_THRESHOLD``.

    Its default, 0.05, is ~9x the uniform share (1/183): only tags the model clearly favours. A bad
    value stops the command when it starts, so it never becomes a failed step the model can't fix.
    """
    return current().tag_threshold


def select(probabilities: list[float], tags: tuple[str, ...], minimum: float,
           top_k: int = TOP_K) -> list[tuple[str, float]]:
    """(tag, probability) pairs, most likely first: above ``minimum``, at most ``top_k``, never empty."""
    ranked = sorted(zip(tags, probabilities), key=lambda pair: -pair[1])
    kept = [pair for pair in ranked[:top_k] if pair[1] >= minimum]
    return kept or ranked[:1]


class GetObjects(Tool):
    name = "GetObjects"
    inputs = {"image": IMAGE}
    model_id = CLIP.default  # zero-shot over VOCABULARY_FILE
    slot = CLIP

    def setup(self) -> None:
        load_vocabulary()
        embedder()  # load (or fail with ModelUnavailable) before the first call

    def forward(self, image: Image.Image) -> ToolResult:
        import torch

        tags = load_vocabulary()
        model = embedder()
        # The prompts' features depend only on the model: computed on first use, kept with the model.
        bank = model.text_bank([PROMPT.format(tag=tag) for tag in tags])
        logits = model.logit_scale * (model.images([image]) @ bank.T)
        probabilities = torch.softmax(logits[0], dim=-1).tolist()
        kept = select(probabilities, tags, threshold())
        return ToolResult(
            output={"objects": sorted(tag for tag, _ in kept)},
            overlays={"tags": [{"tag": tag, "score": round(p, 3)} for tag, p in kept]},
        )
