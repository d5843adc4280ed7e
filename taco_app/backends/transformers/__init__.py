"""The local backend: a TACO checkpoint run by transformers on this machine.

- ``backend.py``: :class:`TransformersBackend`, streaming with a prefix cache.
- ``loading.py``: finding, checking and loading a checkpoint (4-bit on CUDA).
- ``convert.py`` (with ``shards.py``, its safetensors reading and writing): the original LLaVA-NeXT TACO-Qwen2 checkpoint to transformers' LLaVA-OneVision.

Importing this package imports neither torch nor transformers; the modules do, when used.
"""
