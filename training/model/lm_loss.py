"""Per-token log-probabilities of the labels without full-vocabulary fp32 logits.

    logp, mask = token_logps(model, batch, chunk_tokens=1024)             # DPO, GRPO: any loss of logp
    logp, mask = token_logps(model, batch, chunk_tokens=1024, summed=True) # SFT: the loss is -sum(logp)

A Llama 3 micro-batch of 4,096 tokens has a 4,096 x 128,256 logit matrix: 1 GiB in bf16, 2 GiB
once upcast to fp32, and cross-entropy keeps its fp32 log-softmax for backward. Here the LM
head's forward returns log-probs instead of logits, computed `chunk_tokens` rows at a time so
that only one chunk's logits exist at once. Two ways to get the gradient:
- any loss of the log-probs (DPO, GRPO): each chunk runs under activation checkpointing and its
  logits are recomputed in backward (one more head matmul per chunk, as torchtitan's chunked loss);
- a loss that weighs every trained token alike (SFT's sum): the gradient of each chunk is
  computed in forward, while its logits exist, and only scaled in backward (as Liger's fused
  linear cross-entropy). No recompute: on Llama 3.2 1B the head is 42% of the matmul FLOPs.
The swap happens inside the model's own forward, so FSDP2's and ZeRO-3's hooks gather the head's
weight exactly as they do for the plain head, under every engine. chunk_tokens=0 keeps the plain
path: full logits, upcast, one cross-entropy.
"""

from __future__ import annotations

import contextlib
import types

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100  # the label of tokens that are not trained (training.data.chat_data.IGNORE)


def _logp(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight).float()
    return -F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none")


def chunked_logps(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_tokens: int
) -> torch.Tensor:
    """log p(label) per row of `hidden` [N, H] (0 where the label is ignored), `chunk_tokens` rows at a time."""
    if chunk_tokens <= 0:
        return _logp(hidden, weight, labels)
    parts = [
        checkpoint(_logp, h, weight, y, use_reentrant=False)
        for h, y in zip(hidden.split(chunk_tokens), labels.split(chunk_tokens))
    ]
    return torch.cat(parts)


def _logp_and_grad(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk's log p(label) (fp32) and d log p / d logits = onehot - softmax (in the logits'
    dtype), zero on untrained rows. Elementwise work only: compiled into one or two kernels on a GPU."""
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1, keepdim=True)
    valid = (labels != IGNORE)[:, None]
    safe = labels.clamp(min=0)[:, None]
    logp = (x.gather(1, safe) - lse) * valid
    grad = torch.exp(x - lse).neg_().scatter_add_(1, safe, torch.ones_like(lse)) * valid
    return logp[:, 0], grad.to(logits.dtype)


_compiled: dict[str, object] = {}


def _chunk_fn(device: str):
    """The compiled chunk function on a GPU (five passes over the chunk's logits become one or two);
    eager on a CPU, where compiling costs more than it saves."""
    if device != "cuda":
        return _logp_and_grad
    if device not in _compiled:
        _compiled[device] = torch.compile(_logp_and_grad, dynamic=True)
    return _compiled[device]


class _SummedLogps(torch.autograd.Function):
    """log p(label) per row, for a loss that weighs every trained row alike: the gradients are made
    in forward, chunk by chunk, and backward only scales them (exact for the rows' own gradient,
    and for the weight's when the upstream gradient is the same on every trained row)."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_tokens: int):
        device = hidden.device.type
        dtype = (
            torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        )
        fn = _chunk_fn(device)
        w = weight.to(dtype)
        logp = torch.empty(hidden.size(0), device=hidden.device, dtype=torch.float32)
        grad_h = torch.empty(hidden.shape, device=hidden.device, dtype=dtype)
        # accumulated in the compute dtype by the matmul itself, as Liger's fused linear cross-entropy does
        grad_w = torch.zeros(weight.shape, device=weight.device, dtype=dtype)
        with torch.autocast(device, enabled=False):
            for start in range(0, hidden.size(0), chunk_tokens):
                rows = slice(start, start + chunk_tokens)
                h = hidden[rows].to(dtype)
                logp[rows], g = fn(h @ w.t(), labels[rows])
                torch.mm(g, w, out=grad_h[rows])
                grad_w.addmm_(g.t(), h)
        ctx.save_for_backward(grad_h, grad_w, labels != IGNORE)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return logp

    @staticmethod
    def backward(ctx, grad_logp):
        grad_h, grad_w, valid = ctx.saved_tensors
        # the upstream gradient of the trained rows, one value by contract (mean, to stay on the device)
        scale = (grad_logp * valid).sum() / valid.sum().clamp(min=1)
        return (
            (grad_h * grad_logp[:, None].to(grad_h.dtype)).to(ctx.dtypes[0]),
            (grad_w * scale).to(ctx.dtypes[1]),
            None,
            None,
        )


def unwrap(model):
    """The Hugging Face model inside a DDP or DeepSpeed wrapper (FSDP2 shards it in place)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


@contextlib.contextmanager
def head_returns_logps(model, labels: torch.Tensor, chunk_tokens: int, summed: bool = False):
    """Within the block, the model's LM head returns log p(label) [B, T] in place of logits."""
    head = unwrap(model).get_output_embeddings()

    def forward(self, hidden):
        flat, y = hidden.reshape(-1, hidden.size(-1)), labels.reshape(-1)
        if summed and chunk_tokens > 0 and torch.is_grad_enabled():
            logp = _SummedLogps.apply(flat, self.weight, y, chunk_tokens)
        else:
            logp = chunked_logps(flat, self.weight, y, chunk_tokens)
        return logp.view(hidden.shape[:-1])

    head.forward = types.MethodType(forward, head)
    try:
        yield
    finally:
        del head.forward  # back to the class's own forward


def token_logps(
    model, batch: dict, chunk_tokens: int = 1024, summed: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of the labels (0 where ignored), flat, and the trained-token mask.
    A batch of padded rows (a `real` mask) gives its documents' tokens only, in packed-row order.
    summed=True promises that the loss weighs every trained token's log-prob alike (a sum or a mean)."""
    labels = batch["labels"]
    with head_returns_logps(model, labels, chunk_tokens, summed):
        out = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        )
    logp, mask = out.logits.reshape(-1), labels.reshape(-1) != IGNORE
    real = batch.get("real")
    if real is not None:  # one document per padded row (packing.collate_rows): the packed order
        keep = real.reshape(-1)
        return logp[keep], mask[keep]
    return logp, mask
