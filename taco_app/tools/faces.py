"""DetectFaces: find human faces offline with the Haar cascades bundled in OpenCV.

TACO's DetectFaces returns the image with the faces drawn on it and one region per face,
``{"label": "face" | "face-2" | ..., "bbox": [left, top, right, bottom]}`` normalised to 0..1 with
two decimals, ordered left to right. The cascades ship inside the OpenCV 4.x wheel (``cv2/data``),
so this tool needs no download and no network; they are loaded once per process.

How it decides, measured on 230 real faces (the astronaut photo in 10 variants: enlarged, on a
white or black canvas, darkened, low contrast; 220 LFW faces pasted into the coffee photo at
40-100 px, some darkened) and on 14 face-free scikit-image photos and textures:

* ``haarcascade_frontalface_default`` finds candidates; those whose last-stage score is at least
  ``MIN_SCORE`` hold 221 of the 230 faces and 22 false faces on textures (coins, cells, a retina,
  the moon, the astronaut's suit when enlarged).
* A candidate is kept only if a second, differently trained cascade (``frontalface_alt``) also
  finds a face of its size there: this leaves 2 of the 22 false faces (a frontal head on one of
  the coins, a suit fold in the 6x enlarged astronaut) and keeps all 221 faces.
* The profile cascade is not used: it found no face the frontal one missed and put a false face
  on the cat photo (chelsea) and a second box on the astronaut.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
from PIL import Image

from taco_app.drawing import draw_regions
from taco_app.tools.base import IMAGE, ProducedImage, Tool, ToolResult, ToolStatus

FINDER_FILE = "haarcascade_frontalface_default.xml"
CHECKER_FILE = "haarcascade_frontalface_alt.xml"
OPENCV_HINT = 'pip install "opencv-python-headless<5"'

MAX_SIDE = 1600  # larger images are shrunk for detection: Haar cost grows with pixel count
MIN_SIDE = 480  # smaller images are enlarged, so faces under the 24 px cascade window still count
EQUALISE_CLIP = 4.0  # see equalise(); 3 and 6 gave the same results
SCALE_FACTOR = 1.1  # pyramid step: finer steps find more faces but cost more time
MIN_NEIGHBORS = 5  # overlapping hits a face needs; 3 gave false faces on textures (hubble, retina)
MIN_FACE_FRACTION = 1 / 40  # smallest face, as a fraction of the shorter (detection) image side
MIN_FACE_PX = 24  # the cascade's own window size
MIN_SCORE = 1.5  # last-stage score: real faces scored 1.1-10.7 (astronaut 7.45), most false ones under 2
CHECK_MARGIN = 0.3  # the checker sees the candidate with this much context on each side
CHECK_NEIGHBORS = 2
OVERLAP = 0.5  # boxes overlapping more than this (of the smaller box) are one face

_cascade_lock = threading.Lock()
_cascades: tuple[Any, Any] | None = None


class FaceDetectionUnavailable(RuntimeError):
    pass


def cascade_dir() -> str:
    """Where OpenCV keeps its Haar cascades; raises with the fix if this OpenCV lacks them."""
    try:
        import cv2
    except ImportError as err:
        raise FaceDetectionUnavailable(f"DetectFaces needs OpenCV: `{OPENCV_HINT}` ({err})") from err
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder:
        # OpenCV 5 wheels dropped cv2/data; the 4.x wheels still ship the cascades.
        raise FaceDetectionUnavailable(
            f"this OpenCV ({cv2.__version__}) has no bundled Haar cascades (cv2.data); "
            f"install a 4.x wheel: `{OPENCV_HINT}`"
        )
    return folder


def get_cascades() -> tuple[Any, Any]:
    """The process-wide (finder, checker) cascade classifiers, loaded on first use."""
    global _cascades
    with _cascade_lock:
        if _cascades is None:
            import cv2

            loaded = []
            for name in (FINDER_FILE, CHECKER_FILE):
                path = os.path.join(cascade_dir(), name)
                classifier = cv2.CascadeClassifier(path)
                if classifier.empty():
                    raise FaceDetectionUnavailable(
                        f"could not load the face cascade {path}; reinstall OpenCV: `{OPENCV_HINT}`"
                    )
                loaded.append(classifier)
            _cascades = (loaded[0], loaded[1])
        return _cascades


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Intersection over the smaller box's area: catches a face box nested in a bigger one."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    return (iw * ih) / min(aw * ah, bw * bh)


def _prepare(image: Image.Image) -> np.ndarray:
    """Equalised greyscale pixels at detection size (see MAX_SIDE and MIN_SIDE)."""
    width, height = image.size
    longest = max(width, height)
    scale = MAX_SIDE / longest if longest > MAX_SIDE else (MIN_SIDE / longest if longest < MIN_SIDE else 1.0)
    grey = image.convert("L")  # PIL handles every mode (RGBA, P, LA, CMYK, I;16) the same way
    if scale != 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = grey.resize(size, Image.BILINEAR if scale > 1 else Image.BOX)
    return equalise(np.asarray(grey, dtype=np.uint8))


def equalise(pixels: np.ndarray) -> np.ndarray:
    """Histogram equalisation with each grey level's count capped at ``EQUALISE_CLIP`` x the mean.

    Plain ``cv2.equalizeHist`` lets a large flat area (a white page or border around a photo)
    take most of the grey range, which crushed the astronaut's face on a white canvas until it
    was missed; capping keeps the stretch that dark or flat photos need (8 more of 40 faces
    found in darkened photos than with no equalisation).
    """
    counts = np.bincount(pixels.ravel(), minlength=256).astype(np.float64)
    counts = np.minimum(counts, EQUALISE_CLIP * pixels.size / 256)
    cdf = np.cumsum(counts)
    span = cdf[-1] - cdf[0]
    if span <= 0:  # a single grey level: nothing to stretch
        return pixels
    lut = np.round((cdf - cdf[0]) / span * 255).astype(np.uint8)
    return lut[pixels]


def detect(image: Image.Image) -> list[list[float]]:
    """Face boxes as normalised ``[left, top, right, bottom]`` (full precision), left to right."""
    pixels = _prepare(image)
    h, w = pixels.shape
    smallest = max(MIN_FACE_PX, round(min(h, w) * MIN_FACE_FRACTION))
    if min(h, w) < smallest:
        return []
    finder, checker = get_cascades()
    with _cascade_lock:  # the classifiers are shared: do not run one on two threads at once
        boxes, _levels, scores = finder.detectMultiScale3(
            pixels, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS, minSize=(smallest, smallest),
            outputRejectLevels=True,
        )
        candidates = [(tuple(int(v) for v in box), float(score)) for box, score in zip(boxes, np.ravel(scores))]
        confirmed = [(box, score) for box, score in candidates if score >= MIN_SCORE and _confirm(checker, pixels, box)]
    # Where boxes still overlap after OpenCV's own grouping, keep the best-scored one.
    kept: list[tuple[int, ...]] = []
    for box, _score in sorted(confirmed, key=lambda item: -item[1]):
        if all(_overlap(box, other) <= OVERLAP for other in kept):
            kept.append(box)
    found = [[max(0.0, x / w), max(0.0, y / h), min(1.0, (x + bw) / w), min(1.0, (y + bh) / h)]
             for x, y, bw, bh in kept]
    return sorted(found, key=lambda b: (b[0], b[1]))


def _confirm(checker: Any, pixels: np.ndarray, box: tuple[int, ...]) -> bool:
    """Whether the second cascade also sees a face of about this size in and around the box."""
    x, y, bw, bh = box
    margin = int(CHECK_MARGIN * max(bw, bh))
    crop = pixels[max(0, y - margin) : y + bh + margin, max(0, x - margin) : x + bw + margin]
    least = int(0.6 * min(bw, bh))  # a face of about the same size, not a small one inside
    found = checker.detectMultiScale(crop, scaleFactor=1.05, minNeighbors=CHECK_NEIGHBORS, minSize=(least, least))
    return len(found) > 0


def face_label(index: int) -> str:
    """TACO numbers repeated labels: 'face', 'face-2', 'face-3', ..."""
    return "face" if index == 0 else f"face-{index + 1}"


class DetectFaces(Tool):
    name = "DetectFaces"
    inputs = {"image": IMAGE}
    model_id = f"OpenCV Haar cascades {FINDER_FILE} + {CHECKER_FILE} (bundled with opencv-python-headless 4.x)"

    def setup(self) -> None:
        get_cascades()

    def status(self) -> ToolStatus:
        try:
            folder = cascade_dir()
            here = all(os.path.isfile(os.path.join(folder, name)) for name in (FINDER_FILE, CHECKER_FILE))
        except FaceDetectionUnavailable:
            here = False
        return ToolStatus(self.model_id, "yes" if here else "no", here, "" if here else OPENCV_HINT)

    def forward(self, image: Image.Image) -> ToolResult:
        regions = [{"label": face_label(i), "bbox": [round(v, 2) for v in box]} for i, box in enumerate(detect(image))]
        return ToolResult(
            output={"image": ProducedImage(draw_regions(image, regions)), "regions": regions},
            overlays={"regions": regions},
        )
