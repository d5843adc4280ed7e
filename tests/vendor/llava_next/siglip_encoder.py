# Vendored from SalesforceAIResearch/TACO, llava/model/multimodal_encoder/siglip_encoder.py,
# commit f1c277f049cabd61184fb4640378f20a1101f070: TACO's copy of LLaVA-VL/LLaVA-NeXT
# (Apache-2.0; see LICENSE, LICENSE-TACO.md and README.md in this folder).
# Kept: the module docstring and SigLipImageProcessor (source lines 34-67): what
#   SigLipVisionTower.image_processor is, and train() hands to the data path as data_args.image_processor.
# Left out: SigLipVisionConfig, the SigLIP vision model and SigLipVisionTower (the model side, which needs
#   weights).
# Changed: imports used only by what is left out are removed: `import torch.utils.checkpoint`, `from torch
#   import nn`, `import os`, `from transformers.activations import ACT2FN`, `from
#   transformers.modeling_outputs import ...`, `from transformers.modeling_utils import PreTrainedModel`,
#   `from transformers import PretrainedConfig`, `from transformers.utils import ModelOutput`, `from
#   llava.utils import rank0_print`. Everything else is verbatim.
# Upstream (LLaVA-VL/LLaVA-NeXT at df179663ae8b83207df100a1f7af24caec633ff9): the same file.
# ruff: noqa
"""
# Adapted from https://huggingface.co/MILVLG/imp-v1-3b/blob/main/vision_encoder.py
"""

from typing import Optional, Tuple, Union, Dict
from dataclasses import dataclass
from functools import partial, reduce
from PIL import Image
import torch
from transformers.image_processing_utils import BatchFeature, get_size_dict
from transformers.image_transforms import (
    convert_to_rgb,
    normalize,
    rescale,
    resize,
    to_channel_dimension_format,
)
from transformers.image_utils import (
    ChannelDimension,
    PILImageResampling,
    to_numpy_array,
)


class SigLipImageProcessor:
    def __init__(self, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), size=(384, 384), crop_size: Dict[str, int] = None, resample=PILImageResampling.BICUBIC, rescale_factor=1 / 255, data_format=ChannelDimension.FIRST):
        crop_size = crop_size if crop_size is not None else {"height": 384, "width": 384}
        crop_size = get_size_dict(crop_size, default_to_square=True, param_name="crop_size")

        self.image_mean = image_mean
        self.image_std = image_std
        self.size = size
        self.resample = resample
        self.rescale_factor = rescale_factor
        self.data_format = data_format
        self.crop_size = crop_size

    def preprocess(self, images, return_tensors):
        if isinstance(images, Image.Image):
            images = [images]
        else:
            # to adapt video data
            images = [to_numpy_array(image) for image in images]
            assert isinstance(images, list)

        transforms = [
            convert_to_rgb,
            to_numpy_array,
            partial(resize, size=self.size, resample=self.resample, data_format=self.data_format),
            partial(rescale, scale=self.rescale_factor, data_format=self.data_format),
            partial(normalize, mean=self.image_mean, std=self.image_std, data_format=self.data_format),
            partial(to_channel_dimension_format, channel_dim=self.data_format, input_channel_dim=self.data_format),
        ]

        images = reduce(lambda x, f: [*map(f, x)], transforms, images)
        data = {"pixel_values": images}

        return BatchFeature(data=data, tensor_type=return_tensors)
