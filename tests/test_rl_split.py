"""`ladder plan recipe=grpo`: the GPUs given to generation and to learning, the generation share and
learner idle time, from a measured decoding rate when bench_rates has one, and a suggested split
when a side would idle more than 20% (launch/planning/rl_split.py).

    .venv/bin/python -m pytest -q tests/test_rl_split.py
"""

from __future__ import annotations

import io
import json
import time

import pytest

from launch.accounting.ledger import Ledger
from launch.planning.plan import make_plan, render
from launch.planning.plan_rl import RLPlan
from launch.planning.rates import cfg_shape
from launch.planning.rl_split import rl_split
from training.config.compose import compose

PEAK = 1e15


def work(gen_flops: float, train_flops: float, steps: int) -> RLPlan:
    """An RLPlan whose run generates gen_flops and trains train_flops over `steps` steps."""
    return RLPlan(
        prompts_per_step=16,
        num_generations=8,
        answers_per_step=128,
        answers_per_micro_batch=4,
        grad_accum=1,
        sequences_per_rank=8,
        prompt_tokens=100,
        new_tokens=100,
        train_tokens=0,
        gen_tokens=0,
        train_flops=train_flops,
        gen_flops=gen_flops,
        assumed_decode_mfu=0.1,
    )


def cfg_of(*extra):
    peak = f"rung.peak_flops_per_device={PEAK}"
    return compose(["recipe=grpo", "rung=8b", "trainer.max_steps=10", peak, *extra])


def test_colocated_learning_waits_out_generation_and_a_balanced_split_is_suggested():
    cfg = cfg_of("rung.nodes=1")  # 8 GPUs
    # per step: 30 GPU-s of generation (3e15 FLOPs at 10% decode MFU), 10 of learning (at 40%)
    s = rl_split(cfg, work(3e16, 4e16, 10), 0.4, "mfu")
    assert (s.generation_gpus, s.learning_gpus) == (8, 8)
    assert s.gen_gpu_s == pytest.approx(30) and s.train_gpu_s == pytest.approx(10)
    assert s.generation_share == pytest.approx(0.75) and s.learner_idle == pytest.approx(0.75)
    assert s.step_s == pytest.approx(40 / 8) and s.generator_idle == 0  # none kept for it
    assert s.gen_source.startswith("FLOP model at decode MFU 10% (assumed")
    # 6 generators and 2 learners balance 30 against 10; prompts_per_step=16 allows 2 learners
    assert s.suggestion.startswith(
        "generator.placement=separate generator.ranks=6 recipe.max_policy_lag=1: learners idle 0%"
    )
    # the suggested split, planned: 6 GPUs generate a batch ahead, 2 learn; nobody waits
    sep = rl_split(
        cfg_of(
            "rung.nodes=1",
            "generator.placement=separate",
            "generator.ranks=6",
            "recipe.max_policy_lag=1",
        ),
        work(3e16, 4e16, 10),
        0.4,
        "mfu",
    )
    assert (sep.generation_gpus, sep.learning_gpus) == (6, 2) and sep.suggestion is None
    assert sep.step_s == pytest.approx(5) and sep.learner_idle == pytest.approx(0)
    # without the lag the learners wait for every batch: 5 s of generation, then 5 of learning
    sync = rl_split(
        cfg_of("rung.nodes=1", "generator.placement=separate", "generator.ranks=6"),
        work(3e16, 4e16, 10),
        0.4,
        "mfu",
    )
    assert sync.step_s == pytest.approx(10) and sync.learner_idle == pytest.approx(0.5)
    assert sync.suggestion.startswith("generator.placement=separate generator.ranks=6 recipe.max")


def test_a_balanced_colocated_run_below_the_limit_gets_no_suggestion_and_one_gpu_cannot_split():
    cfg = cfg_of("rung.nodes=1")
    assert rl_split(cfg, work(1e14, 9e15, 10), 1.0, "mfu").suggestion is None  # 10% share
    one = cfg_of("rung.nodes=1", "rung.gpus_per_node=1", "rung.engine=single")
    assert rl_split(one, work(3e16, 4e16, 10), 0.4, "mfu").suggestion.startswith(
        "a split needs at least 2 GPUs"
    )


def test_a_measured_decode_rate_in_bench_rates_replaces_the_assumption(tmp_path):
    cfg = cfg_of("rung.nodes=1", f"trainer.run_root={tmp_path}")
    ledger = Ledger.from_config(cfg)
    with ledger.transaction() as db:
        db.insert(
            "bench_rates",
            {
                "shape": cfg_shape(cfg),
                "device": "NVIDIA H200",
                "recipe": "generate",
                "mfu": 0.05,
                "tokens_per_s": 1000.0,
                "measured_on": "2026-01-01",
                "settings": json.dumps({"attn": "sdpa", "compile": True, "ckpt": False}),
                "source": "grpo.json: generate",
                "imported_at": time.time(),
            },
        )
    plan = make_plan(cfg, ledger)
    assumed = rl_split(cfg, plan.rl, plan.rate, plan.rate_kind)  # no ledger: the assumption
    s = plan.rl_split
    assert s.gen_source.startswith("measured (1 run of bench/grpo.py at this shape on NVIDIA H200")
    assert s.gen_gpu_s == pytest.approx(assumed.gen_gpu_s * 0.1 / 0.05)  # half the MFU
    out = io.StringIO()
    from rich.console import Console

    render(plan, Console(file=out, width=250))
    text = out.getvalue()
    assert "RL placement" in text and "learner idle" in text and "generation share" in text
    assert "suggested split" in text and "generator.ranks=" in text
