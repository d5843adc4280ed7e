"""TACO Studio: run, watch, judge and improve TACO multimodal action models.

Importing the package is cheap: no torch, no gradio. Heavy libraries are imported by the
tools and backends that need them, when they are first used.
"""

__version__ = "0.1.0"
