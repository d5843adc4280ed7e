"""Backends: where model text comes from. Heavy ones import their libraries only when chosen.

:data:`BACKENDS` names them for the command line (``--backend NAME[:ARG]``); :func:`create_backend`
and the CLI's help read it, so adding a backend is one module (a :class:`Backend` subclass) and one
entry there. Manual mode (a person writes each step) is the web app's own, made by the Ask tab.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from taco_app.cota.backend import Backend, BackendError
from taco_app.backends.replay import ReplayBackend

__all__ = ["BACKENDS", "Backend", "BackendError", "BackendOptions", "ReplayBackend", "auto_choice", "create_backend"]

EXAMPLE_REPLAY = "replay:assets/examples/fuel_prices.replay.json"


@dataclass(frozen=True)
class BackendOptions:
    """Choices for one backend (None: the setting's value, from its flag, the environment or its default)."""

    family: str | None = None
    device: str | None = None
    quantisation: str | None = None
    revision: str | None = None
    max_new_tokens: int | None = None
    base_url: str | None = None
    api_model: str | None = None


def create_backend(spec: str, options: BackendOptions | None = None) -> Backend:
    """A backend from its command-line name, ``NAME[:ARG]`` (see :data:`BACKENDS`)."""
    name, _, arg = spec.partition(":")
    kind = BACKENDS.get(name)
    if kind is None:
        raise BackendError(f"unknown backend {spec!r}; use {', '.join(k.usage for k in BACKENDS.values())}")
    return kind.create(arg, options or BackendOptions())


def _replay(script: str, options: BackendOptions) -> Backend:
    if not script:
        raise BackendError("--backend replay needs a script: replay:FILE (a JSON list of model outputs)")
    return ReplayBackend.from_file(script, family=options.family or "mantis")


def _openai(_: str, options: BackendOptions) -> Backend:
    from taco_app.backends.openai import OpenAIBackend

    return OpenAIBackend.from_options(options)


def _auto(_: str, options: BackendOptions) -> Backend:
    choice, reason = auto_choice(options)
    if choice is None:
        raise BackendError(f"no TACO model can run here: {reason}. To replay an example: --backend {EXAMPLE_REPLAY}")
    return choice


def _transformers(model_id: str, options: BackendOptions) -> Backend:
    from taco_app.backends.transformers.loading import LoadOptions
    from taco_app.backends.transformers.backend import TransformersBackend

    backend = TransformersBackend(LoadOptions.from_env(
        model_id=model_id or None, device=options.device, quantisation=options.quantisation, revision=options.revision,
        max_new_tokens=options.max_new_tokens,
    ))
    family = backend.family  # reads the checkpoint's config now: missing weights are reported before any session
    if options.family and options.family != family:
        raise BackendError(f"{backend.model_id} speaks the {family} prompt format, not {options.family}; drop --family")
    return backend


def auto_choice(options: BackendOptions | None = None) -> tuple[Backend | None, str]:
    """The local TACO checkpoint when it can run here, else None and the reason in words."""
    try:
        return _transformers("", options or BackendOptions()), ""
    except BackendError as err:
        return None, str(err)


@dataclass(frozen=True)
class BackendKind:
    usage: str  # how it is written after --backend
    about: str  # what it is, in a few words
    create: Callable[[str, BackendOptions], Backend]  # (the text after "NAME:", the options) -> the backend


BACKENDS: dict[str, BackendKind] = {
    "replay": BackendKind("replay:FILE", "recorded model outputs, played back (demos without a GPU, tests)", _replay),
    "transformers": BackendKind("transformers[:MODEL]", "a TACO checkpoint on this machine", _transformers),
    "openai": BackendKind("openai", "an OpenAI-compatible server, e.g. vLLM serving a TACO checkpoint", _openai),
    "auto": BackendKind("auto", "the local checkpoint when CUDA and its weights are here; else it says why not", _auto),
}


def backend_help() -> str:
    """What ``--backend`` takes, for the command line's help."""
    return "; ".join(f"{kind.usage}: {kind.about}" for kind in BACKENDS.values())


def doctor_rows() -> list[tuple[str, str, str, str, str]]:
    """(backend, model, weights here, runs now, fix) for ``python app.py doctor``; loads nothing heavy."""
    from taco_app.backends.transformers.loading import LoadOptions, resolve
    from taco_app.weights import cuda_available

    options = LoadOptions.from_env()
    try:
        resolve(options.model_id, options.revision)
        weights, weights_fix = "yes", ""
    except BackendError:
        weights, weights_fix = "no", "python app.py download --taco"
    cuda = cuda_available()
    fix = weights_fix or ("" if cuda else "needs a CUDA GPU (or --device cpu, slow)")
    rows = [("transformers", options.model_id, weights, "yes" if cuda and weights == "yes" else "no", fix)]
    from taco_app.settings import current

    base_url = current().openai_base_url
    rows.append(("openai", base_url or "(no server set)", "-", "yes" if base_url else "no",
                 "" if base_url else "--backend openai --base-url URL"))
    rows.append(("replay", EXAMPLE_REPLAY.split(":", 1)[1], "-", "yes", ""))
    return rows
