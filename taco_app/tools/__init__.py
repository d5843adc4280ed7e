"""Tools: one module per family of actions, and the :class:`Toolbox` that holds one of each.

Importing this package is cheap; each tool imports and loads its heavy model on first use.
"""

from __future__ import annotations

from typing import Iterable

from taco_app.cota.registry import action_specs
from taco_app.tools.base import ImageLookup, ProducedImage, Tool, ToolResult
from taco_app.tools.calculator import Calculate, SolveMathEquation
from taco_app.tools.control import Terminate
from taco_app.tools.depth import EstimateObjectDepth, EstimateRegionDepth
from taco_app.tools.detection import LocalizeObjects
from taco_app.tools.faces import DetectFaces
from taco_app.tools.imageops import Crop, ZoomIn
from taco_app.tools.knowledge import QueryKnowledgeBase
from taco_app.tools.language import QueryLanguageModel
from taco_app.tools.ocr import OCR
from taco_app.tools.similarity import GetImageToImagesSimilarity, GetImageToTextsSimilarity, GetTextToImagesSimilarity
from taco_app.tools.tagging import GetObjects

__all__ = ["Toolbox", "Tool", "ToolResult", "ProducedImage", "ImageLookup", "default_tools"]

IMPLEMENTED: tuple[type[Tool], ...] = (
    OCR, LocalizeObjects, GetObjects, EstimateRegionDepth, EstimateObjectDepth, Crop, ZoomIn, QueryLanguageModel,
    GetImageToImagesSimilarity, GetImageToTextsSimilarity, GetTextToImagesSimilarity, DetectFaces, QueryKnowledgeBase,
    Calculate, SolveMathEquation, Terminate,
)


class UnknownAction(ValueError):
    pass


class Toolbox:
    """The tools of a session, by action name, in TACO's order."""

    def __init__(self, tools: Iterable[Tool]):
        self.tools = {tool.name: tool for tool in tools}

    def __contains__(self, name: str) -> bool:
        return name in self.tools

    def get(self, name: str) -> Tool:
        tool = self.tools.get(name)
        if tool is None:
            raise UnknownAction(f"Unknown action '{name}'. The available actions are: {', '.join(self.tools)}")
        return tool

    def replace(self, *tools: Tool) -> "Toolbox":
        """A toolbox with some tools swapped for others of the same names (a fake, a differently set up one)."""
        return Toolbox([*self.tools.values(), *tools])


_shared: Toolbox | None = None


def default_tools() -> Toolbox:
    """The process-wide toolbox: every TACO action, each tool created once and kept warm."""
    global _shared
    if _shared is None:
        by_name = {cls.name: cls for cls in IMPLEMENTED}
        _shared = Toolbox(by_name[spec.name]() for spec in action_specs())
    return _shared
