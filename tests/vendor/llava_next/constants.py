# Vendored from SalesforceAIResearch/TACO, llava/constants.py,
# commit f1c277f049cabd61184fb4640378f20a1101f070: TACO's copy of LLaVA-VL/LLaVA-NeXT
# (Apache-2.0; see LICENSE, LICENSE-TACO.md and README.md in this folder).
# Kept: the whole file.
# Left out: nothing.
# Changed: nothing. Everything else is verbatim.
# Upstream (LLaVA-VL/LLaVA-NeXT at df179663ae8b83207df100a1f7af24caec633ff9): the same file.
# ruff: noqa
CONTROLLER_HEART_BEAT_EXPIRATION = 30
WORKER_HEART_BEAT_INTERVAL = 15

LOGDIR = "."

# Model Constants
IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200
DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_IMAGE_PATCH_TOKEN = "<im_patch>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"
