"""The RL part of a plan: rollout generation and training on rollouts, for `ladder plan recipe=grpo`.

    ladder plan recipe=grpo rung=8b trainer.max_steps=500
    ladder plan recipe=grpo rung=8b generator.assumed_decode_mfu=0.2 --json

A GRPO step trains on N = recipe.prompts_per_step x recipe.num_generations answers (the recipe sets
the batch; rung.global_batch_tokens is not used), each planned at an upper bound: an answer of
generator.max_new_tokens after a prompt of data.max_seq_len - generator.max_new_tokens tokens, or of
the prompts' measured length when `ladder data inspect recipe=grpo` has measured them. A
micro-batch holds A = rung.micro_batch_tokens // data.max_seq_len answers, so training's activations
are planned at micro_batch_tokens as for SFT, and grad_accum = ceil(P / dp x G / A)
(training/config/validate.py, rl_batch_layout). Generation runs once per rollout batch (every
recipe.ppo_epochs steps) and costs 2N FLOPs per token, prompt and sampled tokens alike
(training/model/flops.py: generate_flops); decoding runs at a far lower MFU than training, so its time
uses generator.assumed_decode_mfu, an assumption named as such in the plan, never a measurement.
With ppo_epochs > 1 a forward pass records the rollout policy's log-probs, and with kl_beta > 0 one
more scores the reference (a third of a training step's FLOPs each). On a device with no known
peak (a CPU) every token is timed at the rung's tokens/s.

Memory that RL adds per GPU (launch/planning/memory.py's `reference` and `generation`, rows of `ladder plan`):
  reference   recipe.kl_beta > 0: the reference's weights, in the training dtype (2 bytes per parameter
              in bf16, else 4), sharded over the GPUs under fsdp2 and deepspeed_zero3 and whole under
              the other engines, as training/recipes/reference.py loads it (launch/planning/memory.py, reference_bytes)
  generation  generator=hf: the KV cache of the rank's P / dp x G sequences at data.max_seq_len tokens,
              2 (K and V) x layers x kv_heads x head_dim x bytes per element (2 in bf16, else 4) per
              token; generator=vllm: generator.gpu_memory_utilization of the GPU, which vLLM takes
              (its weights and KV cache live in it)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from launch.planning.memory import reference_bytes
from training.model.flops import Matmuls, forward_flops, generate_flops, train_flops
from training.recipes.losses import is_rl as is_rl_loss


@dataclass
class RLPlan:
    prompts_per_step: int
    num_generations: int
    answers_per_step: int
    answers_per_micro_batch: int  # rung.micro_batch_tokens // data.max_seq_len
    grad_accum: int  # micro-batches per rank and step
    sequences_per_rank: int  # one generator call per rank and rollout batch: P / dp x G sequences
    prompt_tokens: int  # per answer, planned
    new_tokens: int  # per answer, planned
    train_tokens: int  # over the run
    gen_tokens: int  # over the run: prompt + sampled tokens of every rollout
    train_flops: float  # training, plus the log-prob passes
    gen_flops: float
    assumed_decode_mfu: float
    generator: str = "hf"
    kl_reference: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def is_rl(cfg) -> bool:
    return is_rl_loss(cfg.recipe.loss)  # family "rl" in training/recipes/losses.py


def rl_plan(
    cfg, layout, mm: Matmuls, layers: int, hidden: int, seq_len: float | None = None
) -> RLPlan:
    """mm: the run's matmul parameters (a LoRA policy's adapters, its frozen base: lora.matmuls).
    seq_len: the sequence length to plan at, when `ladder data inspect` measured the prompts (their
    token-weighted length plus generator.max_new_tokens, still an upper bound on the answers); else
    data.max_seq_len, the bound the loader enforces."""
    r, g, steps = cfg.recipe, cfg.generator, cfg.trainer.max_steps
    answers = r.prompts_per_step * r.num_generations
    new = g.max_new_tokens
    seq = round(seq_len) if seq_len else cfg.data.max_seq_len
    prompt = seq - new
    rollout_batches = -(-steps // r.ppo_epochs)  # generation once per rollout batch
    per_step_train = train_flops(mm.policy, layers, hidden, [seq] * answers, mm.frozen)
    # the old policy's log-probs run the policy; the KL reference the base (adapters disabled)
    rows = [seq] * answers
    extra = rollout_batches * (
        (forward_flops(mm.policy, layers, hidden, rows) if r.ppo_epochs > 1 else 0.0)
        + (forward_flops(mm.base, layers, hidden, rows) if r.kl_beta > 0 else 0.0)
    )
    gen_tokens = rollout_batches * answers * seq
    return RLPlan(
        prompts_per_step=r.prompts_per_step,
        num_generations=r.num_generations,
        answers_per_step=answers,
        answers_per_micro_batch=layout.answers_per_micro_batch,
        grad_accum=layout.grad_accum,
        sequences_per_rank=r.prompts_per_step // layout.dp * r.num_generations,
        generator=g.name,
        kl_reference=r.kl_beta > 0,
        prompt_tokens=prompt,
        new_tokens=new,
        train_tokens=steps * answers * seq,
        gen_tokens=gen_tokens,
        train_flops=per_step_train * steps + extra,
        gen_flops=generate_flops(mm.policy, gen_tokens),
        assumed_decode_mfu=g.assumed_decode_mfu,
    )


def rl_memory(cfg, shape, gpus: int, engine: str | None = None) -> dict[str, float]:
    """Bytes per GPU that RL adds (see the module doc), for a job on `gpus` data-parallel GPUs under
    `engine` (the rung's by default)."""
    r, g = cfg.recipe, cfg.generator
    engine = engine or cfg.rung.engine.value
    reference = (
        reference_bytes(engine, shape.params, gpus, bool(cfg.rung.bf16)) if r.kl_beta > 0 else 0.0
    )
    if g.name == "vllm":
        generation = g.gpu_memory_utilization * cfg.rung.gpu_memory_gb * 2**30
    else:
        sequences = (
            -(-r.prompts_per_step // gpus) * r.num_generations
        )  # a fix may try a dp that P does not divide
        per_token = 2 * shape.layers * shape.kv_hidden * (2 if cfg.rung.bf16 else 4)
        generation = float(sequences * cfg.data.max_seq_len * per_token)
    return {"reference": reference, "generation": generation}


def rl_seconds(p: RLPlan, gpus: int, peak: float | None, rate: float, kind: str) -> float:
    if kind == "mfu":
        return p.train_flops / (gpus * peak * rate) + p.gen_flops / (
            gpus * peak * p.assumed_decode_mfu
        )
    return (p.train_tokens + p.gen_tokens) / (gpus * rate)


def render_rows(table, p: RLPlan) -> None:
    table.add_row(
        "RL answers per step",
        f"{p.answers_per_step:,}",
        f"recipe.prompts_per_step {p.prompts_per_step} x num_generations {p.num_generations}, each planned "
        f"at {p.prompt_tokens:,} prompt + {p.new_tokens:,} sampled tokens; "
        "rung.global_batch_tokens is not used",
    )
    table.add_row(
        "micro-batch answers",
        f"{p.answers_per_micro_batch:,}",
        f"rung.micro_batch_tokens // data.max_seq_len; grad_accum {p.grad_accum} per rank = "
        f"ceil({p.sequences_per_rank} answers / {p.answers_per_micro_batch})",
    )
    table.add_row(
        "generation batch",
        f"{p.sequences_per_rank:,} sequences",
        f"per rank and rollout batch, one generator={p.generator} call",
    )
    table.add_row(
        "generation FLOPs",
        f"{p.gen_flops:.3e}",
        f"2 x matmul params x {p.gen_tokens:.3e} prompt + sampled "
        f"tokens; timed at decode MFU {p.assumed_decode_mfu:.0%} (assumed: generator.assumed_decode_mfu)",
    )
    table.add_row(
        "RL training FLOPs",
        f"{p.train_flops:.3e}",
        "6N per rollout token + attention + log-prob passes",
    )
