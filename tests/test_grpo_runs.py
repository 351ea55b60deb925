"""GRPO runs on the tiny rung: the reward rises along a checked-in curve, every documented metric is
logged, a SIGKILLed run resumes to the same losses and rewards, and 2-process engines match one.

    .venv/bin/python -m pytest -q tests/test_grpo_runs.py      # ~1 min on a quiet 2-core CPU
    .venv/bin/python -m pytest -q tests/test_grpo_runs.py -m "not slow"   # without the subprocess runs

Measured on a quiet 2-core CPU: the 12-step golden run 4 s, the SIGKILL resume 10 s, each 2-process
engine 8-13 s. The subprocess tests (resume, engines) are marked slow: under load they take minutes.

The task is learnable from a random init in a dozen CPU steps: "answer in one word" (ifeval_lite's
max_words check); the untrained model's 8 random tokens hold one word about a quarter of the time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FAST, losses, train_in_process
from distributed_helpers import run, torchrun_cmd

from training.run.checkpoint import COMPLETE, complete_checkpoints
from training.run.metrics import read_metrics

GOLDEN = Path(__file__).parent / "golden" / "tiny_grpo_rewards.json"
STEPS = 12
TOPICS = [
    "cats",
    "rain",
    "boats",
    "tea",
    "maps",
    "snow",
    "bread",
    "clocks",
    "rivers",
    "bees",
    "glass",
    "wind",
]
KEYS = (
    "reward_mean",
    "reward_std",
    "reward/ifeval",
    "frac_zero_std_groups",
    "response_len_mean",
    "response_len_max",
    "frac_truncated",
    "clip_frac",
    "entropy",
    "gen_time_s",
    "train_time_s",
    "gen_tokens_per_s",
    "mfu",
    "policy_version",
    "logprob_time_s",
)


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


def grpo_overrides(root: Path, name: str, data: Path, steps: int = STEPS, extra=()) -> list[str]:
    return [
        *FAST,
        "recipe=grpo",
        "model.from_scratch=true",  # the tiny model from random weights, on purpose
        f"data.train_files=[{data}]",
        f"trainer.run_root={root}",
        f"trainer.run_name={name}",
        f"trainer.max_steps={steps}",
        f"trainer.save_every={steps}",
        "recipe.prompts_per_step=4",
        "recipe.num_generations=8",
        "generator.max_new_tokens=8",
        "optim.lr=3e-3",
        "optim.schedule=constant",
        "optim.warmup_ratio=0",
        *extra,
    ]


def grad_norms(run_dir: Path) -> list[float]:
    return [r["grad_norm"] for r in read_metrics(Path(run_dir) / "metrics.jsonl")]


def rewards(run_dir: Path) -> list[float]:
    return [r["reward_mean"] for r in read_metrics(Path(run_dir) / "metrics.jsonl")]


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory, rl_data):
    """The golden run, once for the module: in a fresh process under the pinned CPU numerics
    (golden_env), so that its rewards, losses and gradient norms are the checked-in ones bit for bit
    on any x86-64 CPU. The other tests read its metrics instead of training it a second time."""
    from training.model.cpu_numerics import golden_env

    root = tmp_path_factory.mktemp("grpo")
    proc = subprocess.run(
        [sys.executable, "-m", "launch.train", *grpo_overrides(root, "golden", rl_data)],
        env=golden_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return SimpleNamespace(run_dir=root / "golden")


@pytest.fixture(scope="module")
def kl_one_run(tmp_path_factory, rl_data):
    """The 1-process run with recipe.kl_beta=0.01 that both engines' kl runs are compared with,
    trained on first use only."""
    done: list[Path] = []

    def get() -> Path:
        if not done:
            root = tmp_path_factory.mktemp("grpo-kl-one")
            over = grpo_overrides(root, "one", rl_data, steps=3, extra=["recipe.kl_beta=0.01"])
            done.append(train_in_process(over).run_dir)
        return done[0]

    return get


def test_reward_rises_along_the_golden_curve(golden_run):
    """Regenerate with LADDER_UPDATE_GOLDEN=1 after a change meant to change the math."""
    run_dir = golden_run.run_dir
    got = rewards(run_dir)
    assert len(got) == STEPS
    if os.environ.get("LADDER_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(
            json.dumps(
                {
                    "steps": STEPS,
                    "reward_mean": got,
                    "loss": losses(run_dir),
                    "grad_norm": grad_norms(run_dir),
                },
                indent=1,
            )
            + "\n"
        )
    want = json.loads(GOLDEN.read_text())
    assert got == want["reward_mean"]  # multiples of 1/32
    # the first-pass loss is -mean(advantage) ~ 0 by construction; the gradient norm carries the math
    assert losses(run_dir) == want["loss"]
    assert grad_norms(run_dir) == want["grad_norm"]
    first, last = sum(got[:4]) / 4, sum(got[-4:]) / 4
    assert last > first + 0.2, (
        f"the reward must rise: {first:.2f} over the first 4 steps, {last:.2f} over the last 4"
    )


def test_every_step_logs_the_rl_metrics(golden_run):
    rows = read_metrics(golden_run.run_dir / "metrics.jsonl")
    for r in rows:
        missing = [k for k in KEYS if k not in r]
        assert not missing, f"step {r['step']} lacks {missing}"
    r = rows[0]
    assert (
        0 <= r["reward_mean"] <= 1
        and 0 <= r["frac_truncated"] <= 1
        and 1 <= r["response_len_max"] <= 8
    )
    assert r["clip_frac"] == 0.0, "one pass per rollout batch: the ratio is 1, nothing is clipped"
    assert r["gen_time_s"] > 0 and r["train_time_s"] > 0 and r["gen_tokens_per_s"] > 0
    assert [x["policy_version"] for x in rows[:3]] == [0, 1, 2]
    assert "kl" not in r, "kl_beta=0: no reference, no kl"


def test_two_ppo_epochs_reuse_rollouts_and_clip(tmp_path, rl_data):
    res = train_in_process(
        grpo_overrides(
            tmp_path,
            "ppo2",
            rl_data,
            steps=4,
            extra=[
                "recipe.ppo_epochs=2",
                "recipe.kl_beta=0.05",
                "recipe.loss=dapo",
                "recipe.clip_high=0.28",
            ],
        )
    )
    rows = read_metrics(res.run_dir / "metrics.jsonl")
    assert [r["policy_version"] for r in rows] == [0, 0, 2, 2]
    assert rows[0]["reward_mean"] == rows[1]["reward_mean"], (
        "the second pass trains on the same rollouts"
    )
    assert rows[0]["clip_frac"] == 0 and rows[1]["gen_time_s"] == 0
    assert rows[1]["kl"] > 0 and rows[0]["kl"] == pytest.approx(0, abs=1e-9)


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_losses_and_rewards(tmp_path, rl_data):
    """ppo_epochs=2 and a checkpoint every 3 steps: the kill and the resume land inside a rollout batch."""
    steps, extra = 8, ["recipe.ppo_epochs=2", "trainer.save_every=3"]
    reference = train_in_process(grpo_overrides(tmp_path, "whole", rl_data, steps, extra)).run_dir
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launch.train",
            *grpo_overrides(tmp_path, "killed", rl_data, steps, extra),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_000003" / COMPLETE).exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= int(complete_checkpoints(killed)[-1].name.split("_")[1]) < steps
    train_in_process(
        [*grpo_overrides(tmp_path, "killed", rl_data, steps, extra), "trainer.resume=auto"]
    )
    assert [r["step"] for r in read_metrics(killed / "metrics.jsonl")] == list(range(1, steps + 1))
    assert losses(killed) == pytest.approx(losses(reference), abs=1e-6)
    assert rewards(killed) == rewards(reference)


@pytest.mark.slow
@pytest.mark.parametrize(
    "engine,kl",
    [
        ("ddp", False),
        ("fsdp2", False),
        ("deepspeed_zero3", False),
        ("fsdp2", True),
        ("deepspeed_zero3", True),
    ],
)
def test_two_processes_match_one(tmp_path_factory, rl_data, golden_run, kl_one_run, engine, kl):
    """Same rollouts, losses and gradient norms as the 1-process golden run, step by step (3 steps).
    kl: recipe.kl_beta=0.01, whose reference is sharded like the policy (training/recipes/reference.py), against
    a 1-process run with the same setting; the kl metric matches too."""
    root = tmp_path_factory.mktemp(f"grpo-{engine}")
    extra = ["recipe.kl_beta=0.01"] if kl else []
    over = [
        *grpo_overrides(root, engine, rl_data, steps=3, extra=extra),
        f"rung.engine={engine}",
        "rung.gpus_per_node=2",
    ]
    proc = run(torchrun_cmd(2, over), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = kl_one_run() if kl else golden_run.run_dir
    want = read_metrics(one / "metrics.jsonl")[:3]
    got = read_metrics(root / engine / "metrics.jsonl")
    assert [r["reward_mean"] for r in got] == [r["reward_mean"] for r in want]
    for key in ("loss", "grad_norm", "response_len_mean") + (("kl",) if kl else ()):
        assert [r[key] for r in got] == pytest.approx([r[key] for r in want], abs=1e-4), key
    if kl:  # step 1's policy is the reference; after an update they differ
        assert got[0]["kl"] == pytest.approx(0, abs=1e-9) and got[2]["kl"] > 0
