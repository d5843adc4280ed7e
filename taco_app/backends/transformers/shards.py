"""The safetensors files of a checkpoint: their headers read without the data, and new shards written.

:mod:`convert` plans a conversion from the headers alone (names, dtypes, shapes), then copies the
tensors it keeps into output shards, one at a time, renamed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARD_BYTES = 4 * 1024**3  # output shards of at most 4 GiB, as transformers writes them


class ConversionError(ValueError):
    """The source or destination cannot be converted; the message says what was found and the fix."""


@dataclass
class Tensor:
    """One stored tensor as its header describes it, and where it goes in the converted checkpoint."""

    file: Path
    key: str
    dtype: str  # safetensors name: BF16, F32, …
    shape: list[int]
    nbytes: int
    target: str = ""
    grow_to: int | None = None  # rows after growing the vocabulary (embed_tokens, lm_head)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file of the checkpoint; one that cannot be read is a :class:`ConversionError`."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConversionError(f"cannot read {path}: {err}") from err


def read_headers(folder: Path) -> dict[str, Tensor]:
    """Every tensor's name, dtype and shape, read from the safetensors headers (no tensor data yet)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(read_json(index).get("weight_map", {}).values()))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise ConversionError(f"{folder} lacks {', '.join(missing)} named by its index: the download is incomplete")
        files = [folder / n for n in names]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        other = "only PyTorch .bin weights; convert needs .safetensors" if any(folder.glob("*.bin")) else "no weights"
        raise ConversionError(f"{folder} has {other}")
    tensors: dict[str, Tensor] = {}
    for path in files:
        for key, entry in _header(path):
            if key in tensors:
                raise ConversionError(f"{key} is stored twice ({tensors[key].file.name} and {path.name})")
            start, end = entry["data_offsets"]
            tensors[key] = Tensor(path, key, entry["dtype"], list(entry["shape"]), end - start)
    return tensors


def _header(path: Path) -> list[tuple[str, dict[str, Any]]]:
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if length > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(length))
        header.pop("__metadata__", None)
        entries = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])  # read in file order
        end = max((e["data_offsets"][1] for _, e in entries), default=0)
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise ConversionError(f"{path} is not a readable safetensors file ({err}): download it again") from err
    if 8 + length + end > size:
        raise ConversionError(f"{path} is truncated ({size} bytes, its header promises {8 + length + end}): "
                              "download it again")
    return entries


def write_shards(tensors: list[Tensor], folder: Path, shard_bytes: int, say: Callable[[str], None]) -> None:
    """Copy tensors into output shards, one shard at a time.

    safetensors reads through a memory map and writes from tensor pointers, so what a shard occupies is
    mostly page cache the OS can drop: converting a 3.9 GB checkpoint raised anonymous memory by 0.15 GB.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    shards: list[list[Tensor]] = [[]]
    filled = 0
    for t in tensors:
        if shards[-1] and filled + t.nbytes > shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(t)
        filled += t.nbytes
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)])
    weight_map: dict[str, str] = {}
    with ExitStack() as files:
        current, handle = None, None
        for name, shard in zip(names, shards):
            out = {}
            for t in shard:
                if t.file != current:  # sources are read in order: close one file before opening the next
                    files.close()
                    current, handle = t.file, files.enter_context(safe_open(str(t.file), framework="pt"))
                out[t.target] = _load(handle, t)
                weight_map[t.target] = name
            save_file(out, str(folder / name), metadata={"format": "pt"})
            size = sum(x.nbytes for x in shard)
            del out
            say(f"wrote {name}: {len(shard)} tensors, {size / 1e9:.2f} GB")
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)},
                 "weight_map": dict(sorted(weight_map.items()))}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _load(handle: Any, t: Tensor):
    import torch

    try:
        value = handle.get_tensor(t.key)
    except Exception as err:  # safetensors raises its own error types for damaged data
        raise ConversionError(f"cannot read {t.key} from {t.file}: {err}; the file may be damaged, "
                              "download it again") from err
    if t.grow_to and t.grow_to > value.shape[0]:
        extra = value.float().mean(dim=0, keepdim=True).to(value.dtype).expand(t.grow_to - value.shape[0], -1)
        value = torch.cat([value, extra], dim=0)
    return value.contiguous()
