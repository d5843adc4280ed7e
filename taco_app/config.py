"""Settings: one root directory (``TACO_HOME``) and the database URL.

Command-line flags override the environment, which overrides these defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def taco_home() -> Path:
    return Path(os.environ.get("TACO_HOME") or Path.home() / ".taco").expanduser()


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    def ensure_home(self) -> Path:
        """Create the data folder readable by its owner only: it holds people's photos and questions.

        An existing folder is left as its owner set it.
        """
        if not self.home.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            self.home.chmod(0o700)
        return self.home

    @classmethod
    def load(cls, home: str | Path | None = None, db_url: str | None = None) -> "Settings":
        root = Path(home).expanduser() if home else taco_home()
        url = db_url or os.environ.get("TACO_DB_URL") or f"sqlite:///{root / 'taco.db'}"
        return cls(home=root, db_url=url)
