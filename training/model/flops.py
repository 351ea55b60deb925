"""Model FLOPs, one definition for planning, MFU, SFT, DPO and GRPO.

Training FLOPs of a step = 6 * N * T + 6 * L * d * sum_i(s_i ** 2), where
  N = parameters used in matrix multiplies (every linear layer and the LM head; not the
      embedding lookup, not the norms), T = tokens processed, L = layers, d = hidden size,
  s_i = length of each packed document. The second term is causal attention (QK^T and AV,
  forward and backward, half the square because of the causal mask), counted per document
  because packed documents do not attend to each other.
Generation (RL rollouts) = 2 * N per token, prompt and sampled tokens alike: a forward pass per
token with the KV cache, decode attention not counted (small beside 2N at these lengths). A
forward-only pass (log-probs of the rollout policy or the reference) is a third of a training step.
MFU = achieved FLOP/s / (peak FLOP/s per device x devices). Peak is set per rung in config
(rung.peak_flops_per_device); where it is unknown, as on a CPU, MFU is null.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional


def matmul_params(
    hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int
) -> int:
    head_dim = hidden // heads
    attn = 2 * hidden * hidden + 2 * hidden * kv_heads * head_dim  # q, o, k, v
    mlp = 3 * hidden * intermediate  # gate, up, down
    return layers * (attn + mlp) + vocab * hidden  # + LM head


def model_matmul_params(model_cfg, vocab: int) -> int:
    return matmul_params(
        model_cfg.hidden_size,
        model_cfg.intermediate_size,
        model_cfg.num_layers,
        model_cfg.num_heads,
        model_cfg.num_kv_heads,
        vocab,
    )


def train_flops(n_matmul: int, layers: int, hidden: int, doc_lens: Iterable[int]) -> float:
    lens = list(doc_lens)
    return 6.0 * n_matmul * sum(lens) + 6.0 * layers * hidden * sum(s * s for s in lens)


def forward_flops(n_matmul: int, layers: int, hidden: int, doc_lens: Iterable[int]) -> float:
    return train_flops(n_matmul, layers, hidden, doc_lens) / 3.0


def generate_flops(n_matmul: int, tokens: int) -> float:
    return 2.0 * n_matmul * tokens


def mfu(
    flops: float, seconds: float, peak_per_device: Optional[float], devices: int
) -> Optional[float]:
    if not peak_per_device or seconds <= 0:
        return None
    return flops / seconds / (peak_per_device * devices)
