# Vendored from SalesforceAIResearch/TACO, llava/utils.py,
# commit f1c277f049cabd61184fb4640378f20a1101f070: TACO's copy of LLaVA-VL/LLaVA-NeXT
# (Apache-2.0; see LICENSE, LICENSE-TACO.md and README.md in this folder).
# Kept: `import torch.distributed as dist` (line 17) and rank0_print (lines 66-71).
# Left out: the rest: process_video_with_decord and process_video_with_pyav (video rows; they need decord and
#   av), rank_print, the logger and the moderation/server helpers with their imports (requests, logging).
# Changed: nothing. Everything else is verbatim.
# Upstream (LLaVA-VL/LLaVA-NeXT at df179663ae8b83207df100a1f7af24caec633ff9): only the video helpers differ
#   (frame times).
# ruff: noqa
import torch.distributed as dist

def rank0_print(*args):
    if dist.is_initialized():
        if dist.get_rank() == 0:
            print(f"Rank {dist.get_rank()}: ", *args)
    else:
        print(*args)
