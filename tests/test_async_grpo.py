"""Asynchronous GRPO on 3 CPU processes (2 learners, 1 generator rank) with torchrun on gloo.

    .venv/bin/python -m pytest -q tests/test_async_grpo.py     # ~1.5 min on a quiet 2-core CPU

Each 3-process run is compared with a 1-process colocated run of the same schedule
(recipe.max_policy_lag, training/rl/policy_lag.py), in this process: the rewards exactly, the losses and
gradient norms to abs 1e-4, the tolerance of tests/test_grpo_runs.py::test_two_processes_match_one.
The rollouts are the same bit for bit (the generator receives the learners' weights exactly and samples
with per-answer keys); what differs is DDP's all-reduce, which sums the two learners' gradients in
another order than one process does, and the log-prob passes' packing (16 answers per rank against 32),
so the last digits of a float32 loss move. A SIGKILL during a save resumes to the same numbers, and a
generator that dies stops the job with an error naming it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import losses, train_in_process
from distributed_helpers import env, run, torchrun_cmd
from test_grpo_runs import TOPICS, grad_norms, grpo_overrides, rewards

from training.run.metrics import read_metrics

pytestmark = pytest.mark.slow


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


def lag_extra(k: int, save_every: int) -> list[str]:
    return [f"recipe.max_policy_lag={k}", f"trainer.save_every={save_every}"]


def separate(root: Path, name: str, data: Path, steps: int, k: int, save_every: int, **kw):
    over = [
        *grpo_overrides(root, name, data, steps, extra=lag_extra(k, save_every)),
        f"rung.engine={kw.pop('engine', 'ddp')}",
        "rung.gpus_per_node=3",
        "generator.placement=separate",
        "generator.ranks=1",
        "trainer.step_timeout_s=60",
        *kw.pop("extra", []),
    ]
    return run(torchrun_cmd(3, over), timeout=300, **kw)


def colocated(root: Path, data: Path, steps: int, k: int, save_every: int) -> Path:
    over = grpo_overrides(root, f"colocated-k{k}", data, steps, extra=lag_extra(k, save_every))
    return train_in_process(over).run_dir


def assert_same_run(got: Path, want: Path) -> None:
    assert rewards(got) == rewards(want)
    assert losses(got) == pytest.approx(losses(want), abs=1e-4)
    assert grad_norms(got) == pytest.approx(grad_norms(want), abs=1e-4)


def test_without_lag_the_generator_ranks_reproduce_the_synchronous_run(tmp_path, rl_data):
    proc = separate(tmp_path, "sep", rl_data, steps=3, k=0, save_every=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(tmp_path / "sep", colocated(tmp_path, rl_data, 3, 0, 3))
    rows = read_metrics(tmp_path / "sep" / "metrics.jsonl")
    assert [r["policy_lag"] for r in rows] == [0, 0, 0]
    assert all(r["is_ratio_mean"] == 1.0 and r["is_clipped_frac"] == 0 for r in rows)
    for key in ("learner_wait_s", "generator_wait_s", "weight_sync_s"):
        assert all(r[key] >= 0 for r in rows), key
    assert rows[0]["weight_sync_s"] > 0, "version 1 went to the generator after step 1"
    # run again: finished, the learners tell the generator so and every rank exits at once
    proc = separate(tmp_path, "sep", rl_data, 3, 0, 3, extra=["trainer.resume=auto"])
    assert proc.returncode == 0 and "nothing trained" in proc.stdout + proc.stderr, proc.stderr[
        -3000:
    ]


@pytest.fixture(scope="module")
def lag1_reference(tmp_path_factory, rl_data) -> Path:
    return colocated(tmp_path_factory.mktemp("colocated"), rl_data, 5, 1, 2)


@pytest.mark.parametrize("engine", ["ddp", "fsdp2"])
def test_with_lag_1_the_generator_ranks_follow_the_schedule(
    tmp_path, rl_data, lag1_reference, engine
):
    """fsdp2: the learners shard over their own group and gather each tensor for learner 0 to send."""
    proc = separate(tmp_path, "sep", rl_data, steps=5, k=1, save_every=2, engine=engine)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(tmp_path / "sep", lag1_reference)
    rows = read_metrics(tmp_path / "sep" / "metrics.jsonl")
    assert [r["policy_version"] for r in rows] == [0, 0, 1, 2, 3]
    want = read_metrics(lag1_reference / "metrics.jsonl")
    assert [r["is_clipped_frac"] for r in rows] == pytest.approx(
        [r["is_clipped_frac"] for r in want], abs=0.02
    )


def test_sigkill_and_resume_reproduce_losses_and_rewards(tmp_path, rl_data, lag1_reference):
    """Learner 0 is killed while saving step 4; the job resumes from step 2, whose next batch is
    generated by version 1, older than the checkpoint (kept under rollouts/policy/)."""
    proc = separate(tmp_path, "killed", rl_data, 5, 1, 2, env=env(LADDER_FAULT="kill_in_save:4"))
    assert proc.returncode != 0, "the fault must have killed the job"
    proc = separate(tmp_path, "killed", rl_data, 5, 1, 2, extra=["trainer.resume=auto"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = tmp_path / "killed"
    assert [r["step"] for r in read_metrics(killed / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert_same_run(killed, lag1_reference)


def test_a_dead_generator_stops_the_job_with_an_error(tmp_path, rl_data):
    t0 = time.time()
    proc = separate(tmp_path, "dies", rl_data, 4, 1, 4, env=env(LADDER_FAULT="kill_generator_at:3"))
    assert proc.returncode != 0
    assert time.time() - t0 < 120, "no hang: well within trainer.step_timeout_s"
    # learner 0 fails sending it weights, or learner 1 receiving from it: either names it
    assert "generator rank 2" in proc.stderr or "generator ranks 2..2" in proc.stderr, proc.stderr[
        -3000:
    ]
