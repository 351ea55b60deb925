"""The policy's weights from learner 0 to the generator ranks, in flat buckets, over torch.distributed.

    send_weights(model, group, src=0)        # learner 0, after an update a generator will need
    receive_weights(model, group, src=0)     # every generator rank, into its own copy of the model
    python -m pytest -q tests/test_async_grpo.py

Both sides walk the model's state dict in the same order (the same architecture, built the same way)
and pack consecutive tensors of one dtype into buckets of at most BUCKET_BYTES, each one broadcast
(gloo on CPUs, NCCL on GPUs: one large collective instead of one per tensor). The values arrive bit
for bit, so a generator samples exactly what the learners' own weights would. Learner 0 holds the
whole model under ddp; under fsdp2 every learner all-gathers each tensor in turn (full_tensor(), as
the vLLM push and the checkpoint writer do) and learner 0 sends it. ZeRO-3 is not supported yet.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

BUCKET_BYTES = 64 * 2**20


def weights(model) -> list[tuple[str, torch.Tensor]]:
    """What is sent, in order: the parameters (a tied one once) and the buffers. Under FSDP2 the
    parameters are DTensors with the same names, in the same order, as the generators' plain copy."""
    return [*model.named_parameters(), *model.named_buffers()]


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: an FSDP2 shard is all-gathered (a collective of the learner group)."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def buckets(named) -> list[list[tuple[str, torch.Tensor]]]:
    """Consecutive (name, tensor) pairs, grouped so that each bucket has one dtype and device and at
    most BUCKET_BYTES (a larger tensor is a bucket of its own)."""
    out, cur, size = [], [], 0
    for name, t in named:
        nbytes = t.numel() * t.element_size()
        if cur and (
            t.dtype != cur[0][1].dtype
            or t.device != cur[0][1].device
            or size + nbytes > BUCKET_BYTES
        ):
            out.append(cur)
            cur, size = [], 0
        cur.append((name, t))
        size += nbytes
    if cur:
        out.append(cur)
    return out


@torch.no_grad()
def send_weights(named, group, src: int = 0, main: bool = True) -> int:
    """Broadcast (name, tensor) pairs (weights(model), or a kept version's) from rank src to the
    group; the bytes sent. Under FSDP2 every learner calls this, since each tensor is all-gathered
    first (one at a time: no learner ever holds more than a bucket), and only main sends."""
    total = 0
    for bucket in buckets(named):
        parts = [full(t).detach().reshape(-1) for _, t in bucket]
        if main:
            flat = torch.cat(parts)
            dist.broadcast(flat, src=src, group=group)
            total += flat.numel() * flat.element_size()
    return total


@torch.no_grad()
def receive_weights(model, group, src: int = 0) -> int:
    """Receive rank src's weights into `model` (same architecture), in place; the bytes received."""
    total = 0
    for bucket in buckets(weights(model)):
        flat = torch.empty(
            sum(t.numel() for _, t in bucket), dtype=bucket[0][1].dtype, device=bucket[0][1].device
        )
        dist.broadcast(flat, src=src, group=group)
        offset = 0
        for _, t in bucket:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
        total += flat.numel() * flat.element_size()
    return total
