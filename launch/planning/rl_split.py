"""How GRPO's GPUs divide between generation and learning, for `ladder plan recipe=grpo`.

    ladder plan recipe=grpo rung=8b rung.nodes=2
    ladder plan recipe=grpo rung=8b rung.nodes=2 generator.placement=separate generator.ranks=4 recipe.max_policy_lag=1
    split = rl_split(cfg, rl_plan, rate, kind, ledger)   # launch/planning/plan.py

Per training step the work is g GPU-seconds of generation (a rollout batch every
recipe.ppo_epochs steps, so g is its share of one step) and l GPU-seconds of learning (training and
the log-prob passes), on W = rung.nodes x rung.gpus_per_node GPUs:

  colocated            every GPU generates, then learns: step = (g + l) / W, and learning waits
                       for the generation share g / (g + l) of it (no GPU is kept for generation)
  separate, K ranks    K GPUs generate, W - K learn (training/rl/policy_lag.py).
    max_policy_lag=0   learners wait for each batch: step = g / K + l / (W - K)
    max_policy_lag>=1  generation runs a batch ahead: step = max(g / K, l / (W - K))
                       the faster side idles for the rest of the step

l comes from the plan's training rate (measured or assumed: its row says which). g comes from
a measured decoding MFU where the ledger's bench_rates has one at this model shape (bench/grpo.py
--device cuda --json, then `ladder bench import`: rows of recipe "generate"), else from the FLOP
model, 2N FLOPs per token at generator.assumed_decode_mfu (said so). On a device with no known
peak, both run at the rung's tokens/s. When a side would idle more than IDLE_LIMIT, the plan
suggests the K generator ranks, with max_policy_lag=1, that leave the idler side least idle,
among the splits the batch rule allows (recipe.prompts_per_step divisible by learners), and its
step time against this one's. In the
FLOP model a balanced split's step equals colocated's; what separate ranks gain in practice
(decoding without training memory, larger batches) is not modelled, nor are weight transfers.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

from launch.planning.rates import cfg_shape

IDLE_LIMIT = 0.2


@dataclass
class RLSplit:
    placement: str
    generation_gpus: int  # GPUs that generate (colocated: all of them, between training)
    learning_gpus: int
    max_policy_lag: int
    gen_gpu_s: float  # GPU-seconds of generation per training step
    train_gpu_s: float  # GPU-seconds of learning per training step
    gen_source: str
    step_s: float
    generation_share: float  # generation's share of the step's GPU-seconds of work
    learner_idle: float  # fraction of the step the learning GPUs wait
    generator_idle: float  # fraction of the step the generating GPUs wait
    suggestion: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def decode_mfu(cfg, ledger) -> tuple[float, str]:
    """Decoding's MFU: measured by bench/grpo.py at this shape, else generator.assumed_decode_mfu."""
    shape = cfg_shape(cfg)
    if ledger is not None and shape:
        rows = ledger.query(
            "SELECT * FROM bench_rates WHERE shape = ? AND recipe = 'generate'", (shape,)
        )
        if rows:
            devices = ", ".join(sorted({row["device"] for row in rows}))
            n = len(rows)
            return (
                statistics.median(row["mfu"] for row in rows),
                f"measured ({n} run{'s' if n != 1 else ''} of bench/grpo.py at this shape on "
                f"{devices}, median decode MFU)",
            )
    mfu = cfg.generator.assumed_decode_mfu
    return mfu, f"FLOP model at decode MFU {mfu:.0%} (assumed: generator.assumed_decode_mfu)"


def timing(g: float, learn: float, gpus: int, ranks: int, lag: int) -> tuple[float, float, float]:
    """(step seconds, learner idle, generator idle) for `ranks` generator ranks (0: colocated)."""
    if ranks == 0:  # no GPU is kept for generation: only the learning waits, for the share g
        return (g + learn) / gpus, g / (g + learn), 0.0
    tg, tl = g / ranks, learn / (gpus - ranks)
    step = tg + tl if lag == 0 else max(tg, tl)
    return step, 1 - tl / step, 1 - tg / step


def rl_split(cfg, p, rate: float, kind: str, ledger=None) -> RLSplit:
    """p: the RLPlan (launch/planning/plan_rl.py); rate, kind: the plan's training rate."""
    r, g_cfg, rc = cfg.rung, cfg.generator, cfg.recipe
    gpus, steps = r.nodes * r.gpus_per_node, cfg.trainer.max_steps
    ranks = int(g_cfg.ranks) if g_cfg.placement == "separate" else 0
    lag = int(rc.get("max_policy_lag", 0))
    if kind == "mfu":
        peak = r.peak_flops_per_device
        mfu, source = decode_mfu(cfg, ledger)
        learn = p.train_flops / steps / (peak * rate)
        g = p.gen_flops / steps / (peak * mfu)
    else:  # no known peak (a CPU): every token at the rung's tokens/s, as the wall-clock row
        learn, g = p.train_tokens / steps / rate, p.gen_tokens / steps / rate
        source = "the rung's tokens/s for generated tokens too (no peak FLOPs: no FLOP model)"
    step, l_idle, g_idle = timing(g, learn, gpus, ranks, lag)
    split = RLSplit(
        placement=str(g_cfg.placement),
        generation_gpus=ranks or gpus,
        learning_gpus=gpus - ranks,
        max_policy_lag=lag,
        gen_gpu_s=g,
        train_gpu_s=learn,
        gen_source=source,
        step_s=step,
        generation_share=g / (g + learn),
        learner_idle=l_idle,
        generator_idle=g_idle,
    )
    if max(l_idle, g_idle) > IDLE_LIMIT:
        split.suggestion = suggest(
            g, learn, gpus, rc.prompts_per_step, rc.ppo_epochs, max(l_idle, g_idle), step
        )
    return split


def suggest(g, learn, gpus, prompts, ppo_epochs, worst_now, step) -> str:
    """The separate split whose busier side leaves the other idle least, as overrides, or why
    there is none. Colocated counts as idle too: its learning waits out the generation share."""
    if gpus < 2:
        return "a split needs at least 2 GPUs (rung.nodes x rung.gpus_per_node)"
    if ppo_epochs != 1:
        return "separate generator ranks need recipe.ppo_epochs=1"
    options = [
        (max(li, gi), s, li, gi, k)
        for k in range(1, gpus)
        if prompts % (gpus - k) == 0
        for s, li, gi in [timing(g, learn, gpus, k, 1)]
    ]
    if not options:
        return "no split the batch rule allows (recipe.prompts_per_step divisible by learners)"
    worst, best_step, l_idle, g_idle, k = min(options)
    if worst >= worst_now - 1e-9:
        return "no split the batch rule allows idles less"
    return (
        f"generator.placement=separate generator.ranks={k} recipe.max_policy_lag=1: learners "
        f"idle {l_idle:.0%}, generators {g_idle:.0%}, step {best_step / step:.0%} of this one "
        "(the FLOP model; a generator rank's faster decoding without training memory is not counted)"
    )


def render_split(table, s: RLSplit) -> None:
    gens = (
        f"all {s.generation_gpus}, between training"
        if s.placement == "colocated"
        else f"{s.generation_gpus} (generator.ranks)"
    )
    table.add_row(
        "RL placement",
        s.placement,
        f"generation on {gens}; learning on {s.learning_gpus}; recipe.max_policy_lag {s.max_policy_lag}",
    )
    table.add_row(
        "generation share",
        f"{s.generation_share:.0%}",
        f"of the work per step: {s.gen_gpu_s:,.3g} GPU-s generating, {s.train_gpu_s:,.3g} learning; "
        f"generation from {s.gen_source}",
    )
    table.add_row(
        "learner idle",
        f"{s.learner_idle:.0%}",
        f"of a {s.step_s:,.3g} s step; generators idle {s.generator_idle:.0%}",
    )
    if s.suggestion:
        table.add_row(
            "[yellow]suggested split[/yellow]",
            "",
            f"one side idles over {IDLE_LIMIT:.0%}: {s.suggestion}",
        )
