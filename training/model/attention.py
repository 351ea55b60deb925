"""Which attention kernel a model is built with (`model.attn_implementation`).

    choose_attention("auto", "cuda")  -> "flash_attention_2" | "flex_attention" | "sdpa"

Kept free of transformers so that config validation imports nothing heavy. Every choice goes
through transformers' own attention integrations: they read the packed documents from the
position_ids that restart at 0 for each document (training/data/packing.py), so no implementation
lets a token attend across documents (tests/test_attention.py checks each against the others).
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import version


def _torch_version() -> tuple[int, int]:
    major, minor = version("torch").split(".")[:2]
    return int(major), int(minor)


# What `auto` tries, fastest first, on a GPU: FlashAttention 2's varlen kernel (packed documents by
# cu_seqlens, no mask), then FlexAttention with a block-sparse document mask (linear in memory, needs
# no extra package), then SDPA. transformers builds a block-diagonal causal mask for SDPA from the
# packed position_ids, which is quadratic in the micro-batch length and keeps SDPA off its flash
# kernel. On a CPU, SDPA: FlexAttention there compiles for half a minute and runs no faster.
ATTENTION = ("auto", "flash_attention_2", "flex_attention", "sdpa", "eager")


def attention_problem(requested: str, device: str) -> str | None:
    """Why `requested` cannot run here, or None."""
    if requested not in ATTENTION:
        return f"model.attn_implementation={requested!r}: use one of {', '.join(ATTENTION)}"
    if requested == "flash_attention_2":
        if device != "cuda":
            return (
                "model.attn_implementation=flash_attention_2 needs rung.device=cuda"
                " (FlashAttention has no CPU kernel)"
            )
        if not importlib.util.find_spec("flash_attn"):
            return (
                "model.attn_implementation=flash_attention_2 needs the flash-attn package "
                "(pip install -e '.[gpu]'); or use flex_attention, which needs none"
            )
    if requested == "flex_attention" and _torch_version() < (2, 5):
        return f"model.attn_implementation=flex_attention needs torch 2.5 or later (this is {version('torch')})"
    return None


def choose_attention(requested: str, device: str) -> str:
    """The implementation to build with: `requested`, or for auto the fastest that runs here."""
    if requested != "auto":
        return requested
    import torch

    if device == "cuda" and torch.cuda.is_available():
        for impl in ("flash_attention_2", "flex_attention"):
            if attention_problem(impl, device) is None:
                return impl
    return "sdpa"
