"""The frozen reference model (GRPO with recipe.kl_beta > 0, DPO with precompute_reference=false):
kept in the training dtype, sharded like the policy under fsdp2 and deepspeed_zero3, and planned so.

    .venv/bin/python -m pytest -q tests/test_reference_model.py

The sharding checks run this file as a 2-process torchrun script (gloo on the CPU): each rank loads
the reference with training/recipes/reference.py, checks its parameters and writes what it found; the
forward through the sharded reference must give the whole model's logits. The end-to-end check (the
same GRPO losses and kl as one process) is tests/test_grpo_runs.py's engine test with kl on.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def make_trainer(overrides: list[str]):
    """The few trainer fields load_reference_model reads."""
    from conftest import FAST

    from training.config.compose import compose
    from training.engine import distributed
    from training.model.modeling import load_tokenizer

    cfg = compose([*FAST, *overrides])
    world = distributed.env_world()
    distributed.init(world, "cpu", 300.0)
    return SimpleNamespace(
        cfg=cfg,
        world=world,
        device="cpu",
        tokenizer=load_tokenizer(cfg.model),
        layout=SimpleNamespace(grad_accum=1),
    )


def test_reference_is_bf16_and_frozen_when_the_rung_is(monkeypatch):
    from training.recipes.reference import load_reference_model

    for bf16, dtype in (
        (True, torch.bfloat16),
        (False, torch.float32),
    ):  # false: the CPU rung, unchanged
        ref = load_reference_model(make_trainer([f"rung.bf16={str(bf16).lower()}"]))
        assert {p.dtype for p in ref.parameters()} == {dtype}
        assert not any(p.requires_grad for p in ref.parameters()) and not ref.training


def test_plan_70b_grpo_with_kl_fits_with_a_sharded_bf16_reference():
    from launch.planning.memory import reference_bytes
    from launch.planning.plan import make_plan
    from training.config.compose import compose

    plan = make_plan(compose(["recipe=grpo", "rung=70b", "recipe.kl_beta=0.01"]))
    assert plan.fits, plan.problem  # 4 bytes x 70B whole on every GPU (262 GiB) did not
    assert plan.gpus == 64 and plan.memory.reference == 2 * plan.params / 64
    # whole (and still bf16) where the policy is not sharded either
    assert (
        plan.by_engine["ddp"].reference
        == plan.by_engine["deepspeed_zero2"].reference
        == 2 * plan.params
    )
    assert plan.by_engine["fsdp2"].reference == 2 * plan.params / 64
    assert (
        reference_bytes("fsdp2", 100, 4, bf16=False) == 100
        and reference_bytes("ddp", 100, 4, False) == 400
    )


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fsdp2", "deepspeed_zero3"])
def test_reference_is_sharded_frozen_and_gives_the_whole_models_logits(tmp_path, engine):
    from distributed_helpers import env, free_port, run

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        __file__,
        str(tmp_path),
        engine,
    ]
    proc = run(
        cmd, timeout=600, cwd=ROOT, env=env(PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["all_sharded"], got  # every parameter is a shard (DTensor / ZeRO-3 partitioned)
        assert got["local"] < got["whole"], (
            got
        )  # the largest parameter: this rank holds only part of it
        assert got["frozen"] and got["no_grads"] and got["no_optimizer_state"], got
        assert got["logits_max_diff"] < 1e-5, got


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fsdp2", "deepspeed_zero3"])
def test_dpo_reference_beside_a_sharded_policy_matches_one_process(tmp_path, engine):
    """DPO with precompute_reference=false runs the sharded reference on every micro-batch of every
    rank (the same number per rank: a collective); the losses are one process's."""
    from conftest import FAST, losses, train_in_process
    from distributed_helpers import run, torchrun_cmd

    def over(name: str, *extra: str) -> list[str]:
        return [
            *FAST,
            "recipe=dpo",
            "model.from_scratch=true",
            "recipe.precompute_reference=false",
            f"trainer.run_root={tmp_path}",
            f"trainer.run_name={name}",
            "trainer.max_steps=3",
            "trainer.save_every=3",
            "data.max_samples=48",
            "rung.micro_batch_tokens=512",
            "trainer.global_batch_tokens=1024",
            *extra,
        ]

    one = train_in_process(over("one")).run_dir
    proc = run(
        torchrun_cmd(2, over(engine, f"rung.engine={engine}", "rung.gpus_per_node=2")), timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert losses(tmp_path / engine) == pytest.approx(losses(one), abs=1e-4, rel=0)
    assert losses(one)[0] == pytest.approx(
        math.log(2), abs=1e-4
    )  # the policy starts as the reference


def probe(out: Path, engine: str) -> None:
    """One rank's checks of the reference under `engine` (run by torchrun, see the test above)."""
    from training.model.modeling import build_model
    from training.recipes.reference import load_reference_model

    t = make_trainer([f"rung.engine={engine}", "rung.gpus_per_node=2", "rung.bf16=false"])
    ref = load_reference_model(t)
    params = list(ref.parameters())
    if engine == "fsdp2":
        from torch.distributed.tensor import DTensor

        sharded = all(isinstance(p, DTensor) for p in params)
        big = max(params, key=lambda p: p.numel())  # a DTensor's numel is the whole tensor's
        local, whole = big.to_local().numel(), big.numel()
        no_opt = True  # wrap_frozen makes no optimizer at all under FSDP2
    else:
        from deepspeed.runtime.zero.parameter_offload import DeepSpeedZeRoOffload

        sharded = all(hasattr(p, "ds_numel") for p in params)
        big = max(params, key=lambda p: p.ds_numel)
        local, whole = big.ds_tensor.numel(), big.ds_numel
        # with no optimizer DeepSpeed only partitions: its "optimizer" is the parameter coordinator
        no_opt = isinstance(ref.__dict__["_ladder_ds_engine"].optimizer, DeepSpeedZeRoOffload)
    ids = torch.arange(1, 17).view(1, -1)
    with torch.no_grad():
        got = ref(input_ids=ids).logits
    whole_model = build_model(t.cfg.model, t.tokenizer, "cpu", t.cfg.trainer.seed).eval()
    with torch.no_grad():
        want = whole_model(input_ids=ids).logits
    report = {
        "all_sharded": sharded,
        "local": local,
        "whole": whole,
        "no_optimizer_state": no_opt,
        "frozen": not any(p.requires_grad for p in params),
        "no_grads": all(p.grad is None for p in params),
        "logits_max_diff": float((got - want).abs().max()),
    }
    (out / f"rank{t.world.rank}.json").write_text(json.dumps(report))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    probe(Path(sys.argv[1]), sys.argv[2])
