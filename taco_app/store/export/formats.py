"""The export formats by name. A new format is one module beside this one and one entry here; the
command line's ``--format`` choices and the Export tab read this mapping."""

from __future__ import annotations

from taco_app.store.export.base import ExportFormat
from taco_app.store.export.cota_llava import FORMAT as COTA_LLAVA
from taco_app.store.export.cota_mantis import FORMAT as COTA_MANTIS
from taco_app.store.export.trl_dpo import FORMAT as TRL_DPO
from taco_app.store.export.trl_sft import FORMAT as TRL_SFT
from taco_app.store.export.trl_stepwise import FORMAT as TRL_STEPWISE

# The first is the default.
FORMATS: dict[str, ExportFormat] = {fmt.name: fmt for fmt in (COTA_MANTIS, COTA_LLAVA, TRL_SFT, TRL_DPO, TRL_STEPWISE)}
