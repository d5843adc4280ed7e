"""Settings: one root directory (``TACO_HOME``) and the database URL.

Command-line flags override the environment, which overrides these defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def taco_home() -> Path:
    return Path(os.environ.get("TACO_HOME") or Path.home() / ".taco").expanduser()


class SettingsError(ValueError):
    """A ``TACO_*`` variable holds a value that cannot be used; the message names it."""


DEFAULT_DB_TIMEOUT = 30.0  # seconds: SQLite's wait for a lock; PostgreSQL's connect and statement limits


def seconds(name: str, default: float) -> float:
    """A ``TACO_*`` duration in seconds from the environment (``default`` when unset).

    A value that is not a positive number of seconds (at most a day) is a :class:`SettingsError`
    that names the variable.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86_400:
        raise SettingsError(f"{name} must be a positive number of seconds (at most 86400), got {raw!r}: fix or unset it")
    return value


def db_timeout() -> float:
    """``TACO_DB_TIMEOUT``: the longest wait on the database (default 30 s)."""
    return seconds("TACO_DB_TIMEOUT", DEFAULT_DB_TIMEOUT)


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    db_timeout: float = DEFAULT_DB_TIMEOUT

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @property
    def cache_dir(self) -> Path:
        """What libraries would otherwise keep in the system temp folder (e.g. torch's compile cache)."""
        return self.home / "cache"

    @property
    def temp_dir(self) -> Path:
        """The web app's temporary files: one folder per running instance, removed when it stops."""
        return self.home / "tmp"

    def ensure_home(self) -> Path:
        """Create the data folder readable by its owner only: it holds people's photos and questions.

        An existing folder is left as its owner set it. torch (under easyocr and the local model) keeps
        its compile cache in the system temp folder, readable by every user there, unless told
        otherwise: it is told to use this folder's ``cache/``.
        """
        if not self.home.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            self.home.chmod(0o700)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.cache_dir / "torchinductor"))
        return self.home

    @classmethod
    def load(cls, home: str | Path | None = None, db_url: str | None = None) -> "Settings":
        root = Path(home).expanduser() if home else taco_home()
        url = db_url or os.environ.get("TACO_DB_URL") or f"sqlite:///{root / 'taco.db'}"
        return cls(home=root, db_url=url, db_timeout=db_timeout())
