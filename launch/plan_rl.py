"""The RL part of a plan: rollout generation and training on rollouts, for `ladder plan recipe=grpo`.

    ladder plan recipe=grpo rung=8b trainer.max_steps=500
    ladder plan recipe=grpo rung=8b generator.assumed_decode_mfu=0.2 --json

A GRPO step trains on recipe.prompts_per_step x recipe.num_generations answers, each planned at its
upper bound: a prompt of data.max_seq_len - generator.max_new_tokens tokens and an answer of
generator.max_new_tokens. Generation runs once per rollout batch (every recipe.ppo_epochs steps) and
costs 2N FLOPs per token, prompt and sampled tokens alike (training/flops.py: generate_flops);
decoding runs at a far lower MFU than training, so its time uses generator.assumed_decode_mfu, an
assumption named as such in the plan, never a measurement. With ppo_epochs > 1 a forward pass records
the rollout policy's log-probs, and with kl_beta > 0 one more scores the reference (a third of a
training step's FLOPs each). On a device with no known peak (a CPU) every token is timed at the
rung's tokens/s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from training.flops import forward_flops, generate_flops, train_flops

RL_LOSSES = {"grpo", "dr_grpo", "dapo"}


@dataclass
class RLPlan:
    answers_per_step: int
    prompt_tokens: int  # per answer, planned
    new_tokens: int  # per answer, planned
    train_tokens: int  # over the run
    gen_tokens: int  # over the run: prompt + sampled tokens of every rollout
    train_flops: float  # training, plus the log-prob passes
    gen_flops: float
    assumed_decode_mfu: float

    def to_json(self) -> dict:
        return asdict(self)


def is_rl(cfg) -> bool:
    return cfg.recipe.loss in RL_LOSSES


def rl_plan(cfg, n_matmul: int, layers: int, hidden: int) -> RLPlan:
    r, g, steps = cfg.recipe, cfg.generator, cfg.trainer.max_steps
    answers = r.prompts_per_step * r.num_generations
    new = g.max_new_tokens
    prompt = cfg.data.max_seq_len - new
    seq = prompt + new
    rollout_batches = -(-steps // r.ppo_epochs)  # generation once per rollout batch
    per_step_train = train_flops(n_matmul, layers, hidden, [seq] * answers)
    passes = (1 if r.ppo_epochs > 1 else 0) + (1 if r.kl_beta > 0 else 0)
    extra = passes * forward_flops(n_matmul, layers, hidden, [seq] * answers) * rollout_batches
    gen_tokens = rollout_batches * answers * seq
    return RLPlan(answers_per_step=answers, prompt_tokens=prompt, new_tokens=new, train_tokens=steps * answers * seq,
                  gen_tokens=gen_tokens, train_flops=per_step_train * steps + extra,
                  gen_flops=generate_flops(n_matmul, gen_tokens), assumed_decode_mfu=g.assumed_decode_mfu)


def rl_seconds(p: RLPlan, gpus: int, peak: float | None, rate: float, kind: str) -> float:
    if kind == "mfu":
        return p.train_flops / (gpus * peak * rate) + p.gen_flops / (gpus * peak * p.assumed_decode_mfu)
    return (p.train_tokens + p.gen_tokens) / (gpus * rate)


def render_rows(table, p: RLPlan) -> None:
    table.add_row("RL answers per step", f"{p.answers_per_step:,}",
                  f"prompts_per_step x num_generations, each planned at {p.prompt_tokens:,} prompt + "
                  f"{p.new_tokens:,} sampled tokens")
    table.add_row("generation FLOPs", f"{p.gen_flops:.3e}", f"2 x matmul params x {p.gen_tokens:.3e} prompt + sampled "
                  f"tokens; timed at decode MFU {p.assumed_decode_mfu:.0%} (assumed: generator.assumed_decode_mfu)")
    table.add_row("RL training FLOPs", f"{p.train_flops:.3e}", "6N per rollout token + attention + log-prob passes")
