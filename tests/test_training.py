"""Training: golden losses, exact resume after SIGKILL, HF-format checkpoints, real-model path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST, losses, train_in_process
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.run.checkpoint import COMPLETE, complete_checkpoints
from training.run.metrics import read_metrics

GOLDEN = Path(__file__).parent / "golden" / "tiny_sft_losses.json"
GOLDEN_STEPS = 10  # the loss falls 2.5 by step 10; each step is ~1 s of pinned kernels


def test_golden_losses(tmp_path):
    """A fixed seed reproduces the checked-in per-step losses bit for bit, through the trainer's own
    entry point in a fresh process under the pinned CPU numerics (golden_env: MKL's reproducible
    path, ATen's baseline kernels, 2 threads). Unpinned, an AVX2-only EPYC and an AVX-512 Xeon
    differ by 1.2e-5 at step 16; pinned, any x86-64 CPU gives these (training/model/cpu_numerics.py).
    After a change that is meant to change the math, regenerate with LADDER_UPDATE_GOLDEN=1."""
    from training.model.cpu_numerics import golden_env

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.train",
            *FAST,
            f"trainer.run_root={tmp_path}",
            "trainer.run_name=golden",
            f"trainer.max_steps={GOLDEN_STEPS}",
            "trainer.save_every=100",
        ],
        env=golden_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = losses(tmp_path / "golden")
    assert len(got) == GOLDEN_STEPS
    if os.environ.get("LADDER_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(
            json.dumps({"overrides": FAST, "steps": GOLDEN_STEPS, "losses": got}, indent=1) + "\n"
        )
    assert got == json.loads(GOLDEN.read_text())["losses"]
    assert got[-1] < got[0] - 0.5, "the loss must fall over the golden run"


def test_the_old_module_name_forwards_to_launch_train(tmp_path):
    """`python -m training.run.trainer`, the command of launch scripts written before launch/train.py
    (a requeued SLURM job reruns its script), becomes `python -m launch.train` with the same
    arguments: training/ cannot add the eval callback itself. A stand-in launch.train, first on
    the path from the working directory, shows what ran."""
    fake = tmp_path / "launch"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "train.py").write_text("import sys; print('launch.train', sys.argv[1:])")
    proc = subprocess.run(
        [sys.executable, "-m", "training.run.trainer", "rung=tiny", "trainer.max_steps=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "launch.train ['rung=tiny', 'trainer.max_steps=1']"


def test_metrics_file_has_the_documented_fields(tmp_path):
    result = train_in_process(
        [*FAST, f"trainer.run_root={tmp_path}", "trainer.run_name=m", "trainer.max_steps=2"]
    )
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "mfu"):
        assert key in rows[0]
    assert rows[0]["mfu"] is None  # no peak FLOP/s is known for a CPU
    assert rows[1]["tokens"] > rows[0]["tokens"] > 0
    assert 0 < rows[0]["goodput"] <= 1
    assert rows[0]["lr"] < rows[1]["lr"]  # warmup
    # the run's watchdog ended with it, and so does that of a run with nothing left to do: a live one
    # would end this process once the run's last phase aged past its limit (it did, 30 min into a CI run)
    assert live_watchdogs() == []
    train_in_process(
        [*FAST, f"trainer.run_root={tmp_path}", "trainer.run_name=m", "trainer.max_steps=2"]
    )
    assert live_watchdogs() == []


def live_watchdogs() -> list:
    """Watchdog threads still running once each has had a second to see its stop (a stopped one ends
    at once; one never stopped watches forever)."""
    import threading

    dogs = [t for t in threading.enumerate() if t.name == "ladder-watchdog"]
    for t in dogs:
        t.join(timeout=1.0)
    return [t for t in dogs if t.is_alive()]


def test_resume_after_sigkill_reproduces_the_uninterrupted_losses(tmp_path):
    steps = 20  # killed once step 10 is checkpointed: mid-run, with steps left to resume
    common = [
        *FAST,
        f"trainer.run_root={tmp_path}",
        f"trainer.max_steps={steps}",
        "trainer.save_every=5",
    ]
    reference = losses(train_in_process([*common, "trainer.run_name=whole"]).run_dir)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch.train", *common, "trainer.run_name=killed"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step_000010" / COMPLETE).exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = complete_checkpoints(killed)[-1]
    assert 10 <= int(last.name.split("_")[1]) < steps, "the kill must land mid-run"
    assert len(losses(killed)) < steps

    resumed = train_in_process([*common, "trainer.run_name=killed", "trainer.resume=auto"])
    got = losses(resumed.run_dir)
    assert [r["step"] for r in read_metrics(killed / "metrics.jsonl")] == list(range(1, steps + 1))
    assert got == pytest.approx(reference, abs=1e-6, rel=0)


def test_checkpoint_loads_with_plain_transformers_and_generates(trained_run):
    ckpt = trained_run.checkpoints[-1]
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "trainer_state.pt",
        "ladder_config.yaml",
        "ladder_meta.json",
        COMPLETE,
    ):
        assert (ckpt / name).is_file(), name
    meta = json.loads((ckpt / "ladder_meta.json").read_text())
    assert meta["step"] == 150 and meta["git_commit"]
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Reverse: q w e r"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(
        **enc,
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    text = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip() == "r e w q"


def test_only_complete_checkpoints_count(tmp_path, trained_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run.run_dir / "checkpoints", run / "checkpoints")
    newest = complete_checkpoints(run)[-1]
    (newest / COMPLETE).unlink()  # as if the process died before the marker
    assert complete_checkpoints(run)[-1] != newest
    (run / "checkpoints" / ".tmp-step_000999-1").mkdir()
    assert all(p.name.startswith("step_") for p in complete_checkpoints(run))


def test_a_real_model_loads_from_a_local_directory(tmp_path, trained_run):
    """model.name_or_path takes a hub name or a local directory in the same format; the test
    uses a directory (no hub), with the tokenizer read from it too."""
    src = trained_run.checkpoints[-1]
    local = tmp_path / "my-model"
    AutoModelForCausalLM.from_pretrained(src).save_pretrained(local)
    AutoTokenizer.from_pretrained(src).save_pretrained(local)
    result = train_in_process(
        [
            *FAST,
            f"model.name_or_path={local}",
            f"trainer.run_root={tmp_path}",
            "trainer.run_name=real",
            "trainer.max_steps=3",
            "optim.lr=1e-4",
            "optim.warmup_ratio=0",
        ]
    )
    got = losses(result.run_dir)
    assert len(got) == 3 and got[0] < 0.5  # it starts from the trained weights, not from scratch
    loaded = AutoModelForCausalLM.from_pretrained(result.checkpoints[-1])
    assert loaded.config.hidden_size == 192


def test_saving_the_untrained_model_does_not_change_training(tmp_path):
    """The step-0 checkpoint must not touch the optimizer (e.g. by creating its state)."""
    common = [
        *FAST,
        f"trainer.run_root={tmp_path}",
        "trainer.max_steps=4",
        "trainer.save_every=100",
    ]
    plain = losses(train_in_process([*common, "trainer.run_name=plain"]).run_dir)
    saved = train_in_process([*common, "trainer.run_name=saved", "trainer.save_initial=true"])
    assert saved.checkpoints[0].name == "step_000000"
    assert losses(saved.run_dir) == plain
