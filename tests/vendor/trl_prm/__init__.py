"""TRL's PRMTrainer and PRMConfig, which TRL 1.16 no longer ships (see README.md in this folder)."""

from tests.vendor.trl_prm.prm_config import PRMConfig
from tests.vendor.trl_prm.prm_trainer import PRMTrainer

__all__ = ["PRMConfig", "PRMTrainer"]
