"""The policy's weights from learner 0 to the generator ranks, in flat buckets, over torch.distributed.

    send_weights(model, group, src=0)        # learner 0, after an update a generator will need
    receive_weights(model, group, src=0)     # every generator rank, into its own copy of the model
    python -m pytest -q tests/test_async_grpo.py

Both sides walk the model's state dict in the same order (the same architecture, built the same way)
and pack consecutive tensors of one dtype into buckets of at most BUCKET_BYTES, each one broadcast
(gloo on CPUs, NCCL on GPUs: one large collective instead of one per tensor). The values arrive bit
for bit, so a generator samples exactly what the learners' own weights would. Learner 0 holds the
whole model under the engines separate placement supports (ddp); a sharded engine would gather each
tensor first (FSDP2's full_tensor(), ZeRO-3's GatheredParameters), as the vLLM push does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

BUCKET_BYTES = 64 * 2**20


def buckets(model) -> list[list[tuple[str, torch.Tensor]]]:
    """Consecutive state-dict tensors, grouped so that each bucket has one dtype and device and at
    most BUCKET_BYTES (a larger tensor is a bucket of its own). Tied tensors appear once."""
    out, cur, size, seen = [], [], 0, set()
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
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
def send_weights(model, group, src: int = 0) -> int:
    """Broadcast the model's weights from rank src to the group; the bytes sent."""
    total = 0
    for bucket in buckets(model):
        flat = torch.cat([t.detach().reshape(-1) for _, t in bucket])
        dist.broadcast(flat, src=src, group=group)
        total += flat.numel() * flat.element_size()
    return total


@torch.no_grad()
def receive_weights(model, group, src: int = 0) -> int:
    """Receive rank src's weights into `model` (same architecture), in place; the bytes received."""
    total = 0
    for bucket in buckets(model):
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
