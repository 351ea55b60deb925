"""Asynchronous GRPO's schedule and settings: recipe.max_policy_lag, recipe.is_cap, generator.placement.

    .venv/bin/python -m pytest -q tests/test_policy_lag.py               # ~30 s on a quiet 2-core CPU
    .venv/bin/python -m pytest -q tests/test_policy_lag.py -m "not slow"  # without the SIGKILL resume

Bad combinations are refused before anything runs; a run with max_policy_lag=1 generates batch b with
version max(0, b - 1) and weights its tokens by the truncated IS ratio; a SIGKILLed lagged run resumes
to the same losses and rewards (the version older than its checkpoint is kept under rollouts/policy/).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, losses, train_in_process
from distributed_helpers import env
from test_grpo_runs import TOPICS, grpo_overrides, rewards

from training.common.errors import ConfigError
from training.config.compose import compose
from training.config.validate import validate
from training.rl.policy_lag import PolicyHistory, behaviour_version
from training.run.metrics import read_metrics


@pytest.fixture(scope="module")
def rl_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rlvr") / "min_words.jsonl"
    rows = [
        {
            "id": f"w{i}",
            "messages": [{"role": "user", "content": f"Name {t} in one word."}],
            "ground_truth": json.dumps({"type": "max_words", "n": 1}),
            "dataset": "ifeval",
        }
        for i, t in enumerate(TOPICS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def grpo(*extra: str):
    return compose([*FAST, "recipe=grpo", "model.from_scratch=true", "data=reverse_rlvr", *extra])


THREE = ("rung.engine=ddp", "rung.gpus_per_node=3", "recipe.prompts_per_step=4")


@pytest.mark.parametrize(
    "overrides,world,message",
    [
        (("generator.placement=separate", "generator.ranks=0", *THREE), 3, "generator.ranks=0"),
        (("generator.placement=separate", "generator.ranks=3", *THREE), 3, "1 <= generator.ranks"),
        (("generator.ranks=1",), 1, "applies only to generator.placement=separate"),
        (("recipe.max_policy_lag=-1",), 1, "recipe.max_policy_lag=-1"),
        (("recipe.is_cap=0",), 1, "recipe.is_cap=0"),
        (("recipe.max_policy_lag=1", "recipe.ppo_epochs=2"), 1, "needs recipe.ppo_epochs=1"),
        (
            ("recipe.max_policy_lag=1", "rung.engine=fsdp2", "rung.gpus_per_node=2"),
            2,
            "use single or ddp",
        ),
        (
            ("generator.placement=separate", "generator.ranks=1", "rung.engine=deepspeed_zero3")
            + THREE[1:],
            3,
            "rung.engine=ddp or fsdp2",
        ),
        # 3 ranks, 1 generator: 2 learners, and 3 prompts do not split over them
        (
            ("generator.placement=separate", "generator.ranks=1", *THREE[:2])
            + ("recipe.prompts_per_step=3",),
            3,
            "multiple of the data-parallel size 2",
        ),
    ],
)
def test_bad_combinations_are_refused(overrides, world, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(grpo(*overrides), world)


def test_separate_placement_with_a_non_grpo_recipe_is_refused():
    cfg = compose(
        [*FAST, "generator.placement=separate", "generator.ranks=1", *THREE[:2]]
    )  # recipe=sft
    with pytest.raises(ConfigError, match="needs recipe=grpo"):
        validate(cfg, 3)


def test_separate_placement_plans_learners_only():
    """The job's 3 ranks are planned as 2 learners (the data-parallel size) and 1 generator."""
    cfg = grpo("generator.placement=separate", "generator.ranks=1", *THREE)
    assert validate(cfg, 3).dp == 2
    assert validate(cfg, 3, here=True).dp == 2


def test_the_schedule_and_the_versions_kept(tmp_path):
    assert [behaviour_version(b, 2) for b in range(5)] == [0, 0, 0, 1, 2]
    h = PolicyHistory(1, tmp_path, save_every=4, main=True)
    import torch

    model = torch.nn.Linear(2, 2)
    for b in range(6):
        h.record(b, model)
        h.prune(b)
    # after batch 5: batch 6 needs version 5, a resume from step 4 needs version 3
    assert sorted(h.versions) == [3, 4, 5]
    assert sorted(int(p.stem.split("_")[1]) for p in tmp_path.glob("version_*.pt")) == [3, 4, 5]


def test_a_lagged_run_follows_the_schedule(tmp_path, rl_data):
    res = train_in_process(
        grpo_overrides(tmp_path, "lag1", rl_data, steps=4, extra=["recipe.max_policy_lag=1"])
    )
    rows = read_metrics(res.run_dir / "metrics.jsonl")
    assert [r["policy_version"] for r in rows] == [0, 0, 1, 2]
    assert [r["policy_lag"] for r in rows] == [0, 1, 1, 1]
    for r in rows:
        for key in (
            "learner_wait_s",
            "generator_wait_s",
            "weight_sync_s",
            "is_ratio_mean",
            "is_clipped_frac",
        ):
            assert key in r, key
    # step 1's batch comes from the live version 0: no importance weight, the synchronous numbers
    assert rows[0]["is_ratio_mean"] == 1.0 and rows[0]["is_clipped_frac"] == 0.0
    # later batches come from the version before: the ratio moves off 1, and some is truncated
    assert all(r["is_ratio_mean"] != 1.0 for r in rows[1:])
    assert all(0 <= r["is_clipped_frac"] < 0.5 for r in rows)


@pytest.mark.slow
def test_a_lagged_run_resumes_after_sigkill(tmp_path, rl_data):
    """Killed while saving step 4 (LADDER_FAULT=kill_in_save), it resumes from step 2, whose next
    batch needs version 1, older than the checkpoint: kept under rollouts/policy/."""
    steps, extra = 5, ["recipe.max_policy_lag=1", "trainer.save_every=2"]
    whole = train_in_process(grpo_overrides(tmp_path, "whole", rl_data, steps, extra)).run_dir
    cmd = [sys.executable, "-m", "launch.train"]
    over = grpo_overrides(tmp_path, "killed", rl_data, steps, extra)
    proc = subprocess.run(
        [*cmd, *over],
        env=env(LADDER_FAULT="kill_in_save:4"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0, "the fault must have killed the run"
    proc = subprocess.run(
        [*cmd, *over, "trainer.resume=auto"], env=env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = tmp_path / "killed"
    rows = read_metrics(killed / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    # the tolerance of tests/test_grpo_runs.py's resume test: the uninterrupted run is in this
    # process, under its thread count; the subprocesses run on one thread (last digits differ)
    assert losses(killed) == pytest.approx(losses(whole), abs=1e-6)
    assert rewards(killed) == rewards(whole)


class Planted:
    def __reduce__(self):  # would run on unpickling
        return (print, ("planted code ran",))


def test_a_planted_version_file_or_rollout_share_is_never_unpickled(tmp_path):
    import io

    import torch

    from training.common.errors import CheckpointError
    from training.rl.async_rollouts import pack_chunk, unpack_chunk

    torch.save({"w": Planted()}, tmp_path / "version_000000.pt")
    h = PolicyHistory(1, tmp_path, save_every=4, main=False)
    with pytest.raises(CheckpointError, match="will not be unpickled"):
        h.model_for(0, torch.nn.Linear(2, 2))
    buf = io.BytesIO()
    torch.save({"stats": Planted()}, buf)
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        unpack_chunk(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    with pytest.raises(TypeError, match="plain values"):
        pack_chunk({"stats": Planted()})
    share = {"micro": [{"input_ids": torch.arange(3), "doc_lens": [3]}], "stats": {"reward": 1.0}}
    back = unpack_chunk(pack_chunk(share))
    assert back["stats"] == {"reward": 1.0} and back["micro"][0]["input_ids"].tolist() == [0, 1, 2]
