"""A tiny random Depth-Anything checkpoint of the real architecture, built locally for the tests.

It has the same layout as ``depth-anything/Depth-Anything-V2-Small-hf`` — a DINOv2 backbone
feeding four reassemble stages (factors 4, 2, 1, 0.5), the fusion neck and the relative-depth
head, saved with a ``DPTImageProcessor`` configured like the real one (keep aspect ratio, sides a
multiple of 14, bicubic, ImageNet mean/std) — only every width is shrunk and the input is 56 px
instead of 518. ``AutoImageProcessor``/``AutoModelForDepthEstimation`` load the folder exactly as
they load the real checkpoint, so the tool's whole code path runs, with no download (~0.5 MB).
"""

from __future__ import annotations

from pathlib import Path

SIDE = 56  # the processor's target size: 4x4 patches of 14 px, so the 0.5 reassemble stage gets 2x2
HIDDEN = 32
LAYERS = 4
SEED = 0


def build(folder: Path) -> Path:
    """Write the tiny checkpoint (config, safetensors, preprocessor config) into ``folder``."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backbone = Dinov2Config(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        mlp_ratio=2,
        patch_size=14,
        image_size=SIDE,
        # the real checkpoint taps the last four of twelve layers; here the four layers are all of them
        out_indices=list(range(1, LAYERS + 1)),
        reshape_hidden_states=False,  # the reassemble stage expects (batch, 1 + patches, hidden) tokens
        apply_layernorm=True,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=HIDDEN,  # must equal the backbone width
        reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=[8, 16, 16, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        head_in_index=-1,
        depth_estimation_type="relative",
    )
    torch.manual_seed(SEED)
    model = DepthAnythingForDepthEstimation(config).eval()
    # post_init draws every convolution from N(0, 0.02), which shrinks the signal at each of the
    # neck's ~20 convolutions until the map is constant to 1e-7. PyTorch's own (fan-in scaled)
    # init keeps it alive; a larger last layer and a positive bias keep the head's final ReLU in its
    # linear range, so the map is non-degenerate (values ~1.4..2.8) and depends on the image.
    backbone_modules = set(model.backbone.modules())
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and module not in backbone_modules:
                module.reset_parameters()
        model.head.conv3.weight.mul_(30.0)
        model.head.conv3.bias.fill_(2.0)
    model.save_pretrained(folder)

    processor = DPTImageProcessor(
        do_resize=True,
        size={"height": SIDE, "width": SIDE},
        resample=3,  # bicubic, as in the real preprocessor_config.json
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_pad=False,
    )
    processor.save_pretrained(folder)
    return folder


if __name__ == "__main__":  # python -m tests.tiny.depth_anything /tmp/tiny-depth
    import sys

    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-depth-anything")))
