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
LoRA (training/model/lora.py) changes the 6 of the first term. A linear layer's 6 per parameter
and token is 2 forward (the product), 2 for the input's gradient and 2 for the weight's gradient.
The frozen base still runs forward and still passes the gradient back to the adapters below it, but
it has no weight gradient: 4 per frozen parameter. The adapters (A and B, r x (in + out) per
targeted layer) are trained weights: 6 each. So a LoRA token costs 4 N_frozen + 6 (N_adapter +
N_saved), where N_saved are base matmuls that train anyway (model.lora.modules_to_save). Counting
6 N, as for full fine-tuning, would overstate a LoRA run's FLOPs and MFU by up to 50%. Attention has no
weights and is unchanged. (The first layer's input gradient is not needed either, since nothing
below it trains; that is one layer's q, k, v, gate and up at 2 per parameter, left in.) Forward
passes cost 2 per matmul parameter of the model that runs: the policy, adapters included, for its
log-probs; the base alone, adapters disabled, for a LoRA run's reference.
MFU = achieved FLOP/s / (peak FLOP/s per device x devices). Peak is set per rung in config
(rung.peak_flops_per_device); where it is unknown, as on a CPU, MFU is null.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Matmuls:
    """A run's matmul parameters: `policy` multiply each token of a forward pass (N, plus a LoRA
    run's adapters), `frozen` of them have no weight gradient (a LoRA run's base, less any module it
    saves), and `base` is the model with its adapters disabled (a LoRA run's reference)."""

    policy: int
    frozen: int = 0
    base: int = 0

    @classmethod
    def full(cls, n_matmul: int) -> Matmuls:
        """Full fine-tuning: every parameter trains, and the base is the policy."""
        return cls(n_matmul, 0, n_matmul)


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


def train_flops(
    n_matmul: int, layers: int, hidden: int, doc_lens: Iterable[int], frozen: int = 0
) -> float:
    """frozen: of the n_matmul parameters, those without a weight gradient (4 per token, not 6)."""
    lens = list(doc_lens)
    matmul = 6.0 * n_matmul - 2.0 * frozen
    return matmul * sum(lens) + 6.0 * layers * hidden * sum(s * s for s in lens)


def forward_flops(n_matmul: int, layers: int, hidden: int, doc_lens: Iterable[int]) -> float:
    """A third of a full training step: the forward of every product, no gradients."""
    lens = list(doc_lens)
    return 2.0 * n_matmul * sum(lens) + 2.0 * layers * hidden * sum(s * s for s in lens)


def generate_flops(n_matmul: int, tokens: int) -> float:
    return 2.0 * n_matmul * tokens


def mfu(
    flops: float, seconds: float, peak_per_device: Optional[float], devices: int
) -> Optional[float]:
    if not peak_per_device or seconds <= 0:
        return None
    return flops / seconds / (peak_per_device * devices)
