# Vendored from SalesforceAIResearch/TACO, mantis/train/train_utils.py,
# commit f1c277f049cabd61184fb4640378f20a1101f070: TACO's copy of TIGER-AI-Lab/Mantis
# (Apache-2.0; see LICENSE, LICENSE-TACO.md and README.md in this folder).
# Kept: load_image, load_images, load_json_data (lines 1-62: what mantis/train/data.py imports from here).
# Left out: everything after load_json_data (DeepSpeed/PEFT checkpoint helpers, the Otter training utilities,
#   distributed setup): training-loop code, not the data path.
# Changed: original line 4, `import requests`, became an import guarded by try/except ImportError (requests is
#   only used for http(s) image paths and is not installed here). Everything else is verbatim.
# ruff: noqa

import torch
import logging
try:  # vendoring: requests is only needed for http(s) image paths
    import requests
except ImportError:
    requests = None
import json
from typing import List
from io import BytesIO
from PIL import Image
from pathlib import Path
from tqdm import tqdm

def load_image(image_file):
    post_fixs = [".jpg", ".png", ".jpeg", ".gif"]
    if image_file is None:
        return None
    if isinstance(image_file, Image.Image):
        return image_file
    image_file = Path(image_file)
    if not image_file.exists() and not image_file.is_file():
        if all([not image_file.with_suffix(post_fix).exists() for post_fix in post_fixs]):
            raise FileNotFoundError(f"Cannot find image file {image_file}")
        else:
            for post_fix in post_fixs:
                if image_file.with_suffix(post_fix).exists():
                    image_file = image_file.with_suffix(post_fix)
                    break
                
    if not isinstance(image_file, str):
        image_file = str(image_file)
    if image_file.startswith("http"):
        response = requests.get(image_file)
        image = Image.open(BytesIO(response.content)).convert("RGB")
    else:
        import os
        image = Image.open(image_file).convert("RGB")
    return image


def load_images(image_files):
    if not isinstance(image_files, list):
        return load_image(image_files)
    out = []
    for image_file in tqdm(image_files, desc="Loading images", disable=len(image_files) < 1000):
        if isinstance(image_file, Image.Image):
            image = image_file
        else:
            image = load_image(image_file)
        out.append(image)
    return out

def load_json_data(data_file):
    """
    Read
    """
    if data_file.endswith(".json"):
        with open(data_file, "r") as f:
            data = json.load(f)
    elif data_file.endswith(".jsonl"):
        with open(data_file, "r") as f:
            lines = f.readlines()
        data = [json.loads(line.strip()) for line in lines]
    return data
