"""Checkpoints at an fsspec URL (trainer.checkpoint_url): upload with COMPLETE last, resume only
from complete remote checkpoints (downloaded first), prune remotely, evaluate the local copy.

The URLs are file:// URLs into a temporary directory: a real fsspec filesystem that separate
processes share (memory:// would not outlive the process that wrote it).
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys

import pytest
import torch
from conftest import FAST, losses, train_in_process
from distributed_helpers import env, run, run_overrides, torchrun_cmd
from wandb_records import read_records

from training.common.errors import CheckpointError, ConfigError
from training.config.compose import compose
from training.config.validate import validate
from training.run.checkpoint import COMPLETE, complete_checkpoints
from training.run.metrics import read_metrics
from training.run.remote import RemoteCheckpoints, fetch_url

# killed in step 10's upload, resumed from step 5, the last 2 (15, 20) kept: its own length, not
# the golden run's (tests/test_training.py), which is cut short for the suite's time
STEPS = 20


@pytest.mark.parametrize(
    "url, message",
    [
        ("/data/ckpts", "is not a URL"),
        ("nope://bucket/x", "unknown protocol 'nope'"),
        ("memory://x", "lives inside one process"),
    ],
)
def test_a_bad_checkpoint_url_is_a_clear_config_error(url, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose(["rung=tiny", f"trainer.checkpoint_url={url}"]), world_size=1)


def test_interrupted_upload_is_never_resumed_and_the_resumed_run_reproduces_the_losses(
    tmp_path, caplog
):
    url = (tmp_path / "bucket").as_uri()  # file:///...
    common = [
        *FAST,
        f"trainer.run_root={tmp_path / 'runs'}",
        "trainer.run_name=u",
        f"trainer.max_steps={STEPS}",
        "trainer.save_every=5",
        "trainer.keep_last=2",
        f"trainer.checkpoint_url={url}",
    ]
    store = RemoteCheckpoints(f"{url}/u/checkpoints")
    run_dir = tmp_path / "runs" / "u"

    # Killed after step 10's files reached the URL but before its COMPLETE did.
    # with the thread count of the in-process runs below: CPU kernels round by thread count, and
    # the losses are compared with an uninterrupted run to 1e-6 twenty steps on
    died = run(
        [sys.executable, "-m", "launch.train", *common],
        env=env(LADDER_FAULT="kill_in_upload:10", OMP_NUM_THREADS=str(torch.get_num_threads())),
    )
    assert died.returncode == -signal.SIGKILL, died.stderr[-2000:]
    remote10 = tmp_path / "bucket" / "u" / "checkpoints" / "step_000010"
    assert (remote10 / "model.safetensors").is_file() and (remote10 / "trainer_state.pt").is_file()
    assert not (remote10 / COMPLETE).exists()
    assert store.all_steps() == [5, 10] and store.complete_steps() == [5]
    assert (
        run_dir / "checkpoints" / "step_000010" / COMPLETE
    ).is_file()  # committed locally, never uploaded
    # trainer.resume=<URL> takes a complete checkpoint only, through a local copy.
    with pytest.raises(CheckpointError, match="its upload never finished"):
        fetch_url(store.step_url(10), tmp_path / "cache")
    copy = fetch_url(store.step_url(5), tmp_path / "cache")
    assert (copy / COMPLETE).read_bytes() == (
        tmp_path / "bucket" / "u" / "checkpoints" / "step_000005" / COMPLETE
    ).read_bytes()
    assert fetch_url(store.step_url(5), tmp_path / "cache") == copy

    # A fresh machine: the local checkpoints are gone, the metrics (and W&B) survive.
    shutil.rmtree(run_dir / "checkpoints")
    caplog.set_level(logging.INFO, logger="ladder.train")
    resumed = train_in_process(
        [
            *common,
            "trainer.eval_on_save=true",
            "trainer.eval_async=false",
            "eval.max_examples=4",
            "eval.max_new_tokens=4",
            "tracker.mode=offline",
        ]
    )
    assert f"resumed from {run_dir / 'checkpoints' / 'step_000005'} (step 5" in caplog.text
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == list(range(1, STEPS + 1))
    # the same losses as a run never interrupted, on the same machine and numerics
    whole = train_in_process(
        [*FAST, f"trainer.run_root={tmp_path / 'whole'}", f"trainer.max_steps={STEPS}"]
    )
    assert losses(run_dir) == pytest.approx(losses(whole.run_dir), abs=1e-6, rel=0)

    # Step 10 was saved and uploaded again, then pruned with step 5: the URL, like the local
    # directory, keeps the last 2, every one complete.
    assert store.all_steps() == store.complete_steps() == [15, 20]
    assert [p.name for p in complete_checkpoints(run_dir)] == ["step_000015", "step_000020"]
    # The local copies were evaluated, and their scores went to the URL too.
    assert set(resumed.evals) == {10, 15, 20}
    assert (
        tmp_path / "bucket" / "u" / "checkpoints" / "step_000020" / "eval" / "synthetic.json"
    ).is_file()
    # W&B's checkpoint artifacts reference the URL, not the local copy.
    wandb_file = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))[0]
    arts = [
        r.artifact
        for r in read_records(wandb_file)
        if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model"
    ]
    for art, step in zip(arts, (10, 15, 20)):
        assert json.loads(art.metadata)["url"] == store.step_url(step)
        assert all(m.ref.startswith(store.step_url(step)) for m in art.manifest.contents)


def test_two_processes_resume_from_the_url_on_a_fresh_machine(tmp_path):
    """Every rank needs the checkpoint: local rank 0 downloads it while the others wait."""
    url = (tmp_path / "bucket").as_uri()
    over = run_overrides(tmp_path, "fsdp2url", 8, engine="fsdp2", procs=2) + [
        f"trainer.checkpoint_url={url}"
    ]
    first = run(torchrun_cmd(2, over))
    assert first.returncode == 0, first.stderr[-3000:]
    whole = losses(tmp_path / "fsdp2url")
    store = RemoteCheckpoints(f"{url}/fsdp2url/checkpoints")
    assert store.complete_steps() == [4, 8]
    (
        tmp_path / "bucket" / "fsdp2url" / "checkpoints" / "step_000008" / COMPLETE
    ).unlink()  # an upload cut short
    shutil.rmtree(tmp_path / "fsdp2url" / "checkpoints")
    again = run(torchrun_cmd(2, over))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "checkpoints/step_000004 (step 4, saved by fsdp2 on 2 process(es))" in again.stderr
    assert losses(tmp_path / "fsdp2url") == pytest.approx(whole, abs=1e-6, rel=0)
    assert store.complete_steps() == [4, 8]
    assert not list((tmp_path / "fsdp2url" / "checkpoints").glob(".tmp-*"))
