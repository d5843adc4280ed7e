"""Backends: ``replay`` here; heavy ones import their libraries only when chosen."""

from __future__ import annotations

from taco_app.backends.base import Backend, BackendError
from taco_app.backends.replay import ReplayBackend

__all__ = ["Backend", "BackendError", "ReplayBackend", "create_backend"]


def create_backend(spec: str, *, family: str | None = None) -> Backend:
    """A backend from its command-line name: ``replay:FILE``, ``auto``, …"""
    name, _, arg = spec.partition(":")
    if name == "replay":
        if not arg:
            raise BackendError("--backend replay needs a script: replay:FILE (a JSON list of model outputs)")
        return ReplayBackend.from_file(arg, family=family or "mantis")
    if name in ("auto", "transformers", "openai"):
        raise BackendError(
            f"the '{name}' backend (a TACO checkpoint on a GPU, or an OpenAI-compatible server) is not"
            " part of this build yet; use --backend replay:FILE to play recorded model outputs"
        )
    raise BackendError(f"unknown backend {spec!r}; use replay:FILE")
