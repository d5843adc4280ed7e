"""The project's own examples: pictures drawn here with PIL (or shipped by a package under a free
licence) and scripted CoTA replies.

They run with no GPU through the replay backend while the tools run live, so a new user sees a
whole chain of thought-and-action on first start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw

from taco_app.cota.actions import Action, step_text
from taco_app.drawing import font

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "examples"

FUEL_PRICES = {"Regular": "3.49", "Plus": "3.65", "Premium": "3.89", "Diesel": "4.15"}


def fuel_sign(prices: dict[str, str] = FUEL_PRICES, size: tuple[int, int] = (1024, 768)) -> Image.Image:
    """A roadside fuel-price sign: a title row, then one grade and its price per row."""
    width, height = size
    img = Image.new("RGB", size, "#6d8fb3")  # sky
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, int(height * 0.82), width, height], fill="#55584f")  # road
    draw.rectangle([int(width * 0.47), int(height * 0.7), int(width * 0.53), int(height * 0.82)], fill="#333")  # pole
    left, top, right, bottom = int(width * 0.12), int(height * 0.05), int(width * 0.88), int(height * 0.72)
    draw.rectangle([left, top, right, bottom], fill="#f4f1e8", outline="#1c3d7a", width=10)
    title = font(int(height * 0.075))
    row = font(int(height * 0.08))
    draw.text(((left + right) / 2, top + height * 0.07), "FUEL PRICES", font=title, fill="#1c3d7a", anchor="mm")
    pitch = (bottom - top - height * 0.16) / len(prices)
    for i, (grade, price) in enumerate(prices.items()):
        y = top + height * 0.15 + pitch * (i + 0.5)
        draw.text((left + width * 0.05, y), grade, font=row, fill="#111", anchor="lm")
        draw.text((right - width * 0.05, y), f"${price}", font=row, fill="#b3121b", anchor="rm")
    return img


def _step(thought: str, name: str, **arguments: object) -> str:
    return step_text(thought, Action(name, arguments))  # as a TACO checkpoint writes it


def fuel_script(budget: float = 50, grade: str = "Regular") -> list[str]:
    """OCR → Calculate → Terminate, the example from TACO's announcement."""
    price = FUEL_PRICES[grade]
    gallons = budget / float(price)
    return [
        _step("I need to read the prices on the sign first.", "OCR", image="image-0"),
        _step(f"The {grade.lower()} price is ${price} per gallon. I divide the budget by the price.",
              "Calculate", expression=f"{budget:g} / {price}"),
        _step(f"With ${budget:g} you can buy about {gallons:.2f} gallons of {grade.lower()} gas.",
              "Terminate", answer=f"About {gallons:.2f} gallons of {grade.lower()} gas"),
    ]


def astronaut() -> Image.Image:
    """Eileen Collins, NASA's portrait (public domain), as scikit-image ships it (512x512)."""
    from skimage import data

    return Image.fromarray(data.astronaut())


# Where OpenCV's face cascades find her face in that picture (normalised left, top, right, bottom).
ASTRONAUT_FACE = [0.35, 0.13, 0.53, 0.31]


def astronaut_script() -> list[str]:
    """DetectFaces → ZoomIn on the face → Terminate: boxes and a zoom region to look at."""
    return [
        _step("I should find the faces in the photo first.", "DetectFaces", image="image-0"),
        _step("There is one face. I zoom in on it to see it better.", "ZoomIn", image="image-0", bbox=ASTRONAUT_FACE, zoom_factor=2),
        _step("The photo shows one person's face: an astronaut in a white suit, smiling.",
              "Terminate", answer="One face: an astronaut in a white suit, smiling at the camera"),
    ]


@dataclass(frozen=True)
class Example:
    name: str
    question: str
    image: Callable[[], Image.Image]
    script: Callable[[], list[str]]

    def write(self, folder: Path = ASSETS) -> tuple[Path, Path]:
        """Write the picture and its replay script under ``assets/examples``."""
        folder.mkdir(parents=True, exist_ok=True)
        picture, script = folder / f"{self.name}.png", folder / f"{self.name}.replay.json"
        self.image().save(picture)
        script.write_text(json.dumps(self.script(), indent=1) + "\n", "utf-8")
        return picture, script


EXAMPLES = (
    Example("fuel_prices", "How much gas can I buy with $50?", fuel_sign, fuel_script),
    Example("astronaut", "How many faces are in this photo? Show me the face up close.", astronaut, astronaut_script),
)

if __name__ == "__main__":
    for example in EXAMPLES:
        print(*example.write())
