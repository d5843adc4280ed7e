"""Publishing an export folder as a Hugging Face dataset repository (``export --push-to-hub REPO``).

The only part of the exporter that touches the network. The folder is already a dataset repository
(data file, images, provenance, a dataset card with its metadata), so it is uploaded as it is.
"""

from __future__ import annotations

from pathlib import Path


class PushError(Exception):
    """The upload failed; the message says why in one line and what to do."""


def check_repo(repo: str) -> str:
    """``ValueError`` unless ``repo`` is a valid Hub repository id (checked before anything is exported)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise ValueError(f"--push-to-hub needs a repository id like 'you/my-dataset', not {repo!r}") from None
    return repo


def push_to_hub(folder: Path, repo: str, *, private: bool = True) -> str:
    """Create (if needed) the dataset repository ``repo`` and upload ``folder``; returns its URL."""
    from huggingface_hub import HfApi

    try:
        check_repo(repo)
    except ValueError as err:
        raise PushError(str(err)) from None
    api = HfApi()
    try:
        url = api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="dataset",
                          commit_message="Upload a TACO Studio export")
    except Exception as err:  # offline, no token, no rights, a server error: all are one line for a person
        raise PushError(f"cannot push to the Hugging Face Hub ({repo}): {_reason(err)}") from None
    return str(url)


_UNREACHABLE = "the Hub cannot be reached (offline?); the export is complete on disk: push it later"


def _reason(err: Exception) -> str:
    """One line for a person: no network, no permission, or what the Hub said."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        return f"not allowed (HTTP {status}): log in with `hf auth login` or set HF_TOKEN to a token with write access"
    # huggingface_hub's OfflineModeIsEnabled is a ConnectionError; its HTTP client's errors name themselves.
    if isinstance(err, (ConnectionError, TimeoutError)) or any(
            word in type(err).__name__ for word in ("Connect", "Timeout", "Network", "Transport")):
        return _UNREACHABLE
    return (" ".join(str(err).split()) or type(err).__name__)[:300]
