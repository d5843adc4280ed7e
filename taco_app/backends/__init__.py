"""Backends: where model text comes from. Heavy ones import their libraries only when chosen.

- ``replay:FILE`` plays recorded model outputs (demos without a GPU, tests).
- ``transformers[:MODEL]`` runs a TACO checkpoint on this machine (the ``transformers`` package).
- ``openai`` talks to any OpenAI-compatible server, e.g. vLLM serving a TACO checkpoint.
- ``auto`` is the local checkpoint when CUDA and its weights are here; otherwise it says why not.
"""

from __future__ import annotations

from dataclasses import dataclass

from taco_app.cota.backend import Backend, BackendError
from taco_app.backends.replay import ReplayBackend

__all__ = ["Backend", "BackendError", "BackendOptions", "ReplayBackend", "create_backend", "auto_choice"]

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
    """A backend from its command-line name: ``replay:FILE``, ``transformers[:MODEL]``, ``openai``, ``auto``."""
    options = options or BackendOptions()
    name, _, arg = spec.partition(":")
    if name == "replay":
        if not arg:
            raise BackendError("--backend replay needs a script: replay:FILE (a JSON list of model outputs)")
        return ReplayBackend.from_file(arg, family=options.family or "mantis")
    if name == "transformers":
        return _transformers(arg or None, options)
    if name == "openai":
        from taco_app.backends.openai import OpenAIBackend

        return OpenAIBackend.from_options(options)
    if name == "auto":
        choice, reason = auto_choice(options)
        if choice is None:
            raise BackendError(f"no TACO model can run here: {reason}. To replay an example: --backend {EXAMPLE_REPLAY}")
        return choice
    raise BackendError(f"unknown backend {spec!r}; use replay:FILE, transformers[:MODEL], openai or auto")


def _transformers(model_id: str | None, options: BackendOptions) -> Backend:
    from taco_app.backends.transformers.loading import LoadOptions
    from taco_app.backends.transformers.backend import TransformersBackend

    backend = TransformersBackend(LoadOptions.from_env(
        model_id=model_id, device=options.device, quantisation=options.quantisation, revision=options.revision,
        max_new_tokens=options.max_new_tokens,
    ))
    family = backend.family  # reads the checkpoint's config now: missing weights are reported before any session
    if options.family and options.family != family:
        raise BackendError(f"{backend.model_id} speaks the {family} prompt format, not {options.family}; drop --family")
    return backend


def auto_choice(options: BackendOptions | None = None) -> tuple[Backend | None, str]:
    """The local TACO checkpoint when it can run here, else None and the reason in words."""
    try:
        return _transformers(None, options or BackendOptions()), ""
    except BackendError as err:
        return None, str(err)


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
