"""Hugging Face weights from a sharded model, one tensor at a time (FSDP2, DeepSpeed ZeRO-3).

    write_streamed(ckpt_dir, model, specs, fetch, main=world.main, total_parameters=n)
    # specs: {name: (shape, dtype)} of the full tensors; fetch(name): a collective every rank
    # calls in the same order, returning the full tensor on rank 0 (None elsewhere)

save_pretrained(state_dict=...) needs the whole state dict in one process, so consolidating a
sharded model that way holds every weight in rank 0's memory at once. A safetensors file is an
8-byte header length, a JSON header of names, dtypes, shapes and byte offsets, then the bytes:
everything but the bytes follows from shapes and dtypes. So the files are planned from specs
alone, with transformers' and huggingface_hub's own steps run on meta tensors (tied-weight
removal, the 50 GB shard split, the index), each header is written first, and then every rank
gathers one tensor at a time in file order while rank 0 appends its bytes. Peak extra memory is
one full tensor (the largest is the embedding), not the model. The files are byte for byte what
save_pretrained writes for the same weights (tests/test_consolidate.py), so checkpoints load
with plain transformers and content hashes do not depend on the engine.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import save as safetensors_bytes
from transformers.modeling_utils import (
    remove_tied_weights_from_state_dict,
    revert_weight_conversion,
)

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
METADATA = {"format": "pt"}  # what save_pretrained puts in every file
Spec = tuple[tuple[int, ...], torch.dtype]


def plan_files(model, specs: dict[str, Spec], max_shard_size: int | str = "50GB"):
    """The files save_pretrained would write for these tensors: huggingface_hub's split, run on
    meta tensors (no memory), after transformers drops tied copies and the keys it never saves."""
    meta = {
        n: torch.empty(shape, dtype=dtype, device="meta") for n, (shape, dtype) in specs.items()
    }
    for key in getattr(model, "_keys_to_ignore_on_save", None) or ():
        meta.pop(key, None)
    meta = remove_tied_weights_from_state_dict(meta, model)
    reverted = revert_weight_conversion(model, dict(meta))
    if set(reverted) != set(meta):
        # Some architectures fuse or rename weights on load and undo it on save, which needs
        # several full tensors at once; streaming one tensor at a time cannot do that.
        raise NotImplementedError(
            f"{type(model).__name__} converts its weights on save; it cannot be streamed"
        )
    return split_torch_state_dict_into_shards(
        meta, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size
    )


def header(specs: dict[str, Spec]) -> tuple[bytes, list[str]]:
    """The safetensors header for these tensors and their order in the file, exactly as the
    safetensors library lays them out. The order depends on names and dtypes only, so it is read
    from the library's own output for one-element stand-ins, never re-implemented."""
    probe = safetensors_bytes(
        {n: torch.zeros(1, dtype=d) for n, (_, d) in specs.items()}, metadata=METADATA
    )
    (n,) = struct.unpack("<Q", probe[:8])
    probed = json.loads(probe[8 : 8 + n])
    order = sorted(
        (k for k in probed if k != "__metadata__"), key=lambda k: probed[k]["data_offsets"][0]
    )
    out, offset = {"__metadata__": METADATA}, 0
    for name in order:
        shape, dtype = specs[name]
        end = offset + math.prod(shape) * dtype.itemsize
        out[name] = {
            "dtype": probed[name]["dtype"],
            "shape": list(shape),
            "data_offsets": [offset, end],
        }
        offset = end
    text = json.dumps(out, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the library pads the header to 8 bytes with spaces
    return struct.pack("<Q", len(text)) + text, order


def write_config(ckpt_dir: Path, model) -> None:
    """config.json and generation_config.json as save_pretrained writes them (rank 0)."""
    model.config.dtype = str(model.dtype).split(".")[1]
    model.config.architectures = [
        type(model).__name__.removeprefix("FSDP")
    ]  # fully_shard renames the class
    model.config.save_pretrained(ckpt_dir)
    if model.can_generate():
        model.generation_config.save_pretrained(ckpt_dir)


def write_streamed(
    ckpt_dir: Path,
    model,
    specs: dict[str, Spec],
    fetch: Callable[[str], torch.Tensor | None],
    main: bool,
    total_parameters: int,
    max_shard_size: int | str = "50GB",
) -> None:
    """Every rank calls this with the same specs; fetch is called once per saved tensor, in the
    same order on every rank; rank 0 writes the weights, the index (when sharded) and the config."""
    ckpt_dir = Path(ckpt_dir)
    split = plan_files(model, specs, max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        head, order = header({n: specs[n] for n in names})
        f = open(ckpt_dir / filename, "wb") if main else None
        try:
            if f:
                f.write(head)
            for name in order:
                t = fetch(name)
                if f:
                    want = specs[name]
                    if tuple(t.shape) != tuple(want[0]) or t.dtype != want[1]:
                        raise RuntimeError(
                            f"{name}: gathered {tuple(t.shape)} {t.dtype}, planned {want}"
                        )
                    # The tensor's own bytes, without the copy numpy's tobytes() would make.
                    f.write(t.contiguous().view(-1).view(torch.uint8).numpy().data)
                del t  # before the next gather: one full tensor at a time
        finally:
            if f:
                f.close()
    if not main:
        return
    if split.is_sharded:
        index = {
            "metadata": {"total_parameters": total_parameters, **split.metadata},
            "weight_map": split.tensor_to_filename,
        }
        (ckpt_dir / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    write_config(ckpt_dir, model)
