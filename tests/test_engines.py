"""Distributed engines on 2 CPU processes (gloo): same losses as one process, exact resume,
resume on a different world size, preemption, half-written checkpoints, two rendezvous nodes.

Tolerance for engine-vs-single losses: 1e-4 absolute over 8 steps. Every engine computes the
same global batch and the same mean loss; only the order of fp32 additions differs (gloo
all-reduce, FSDP2 reduce-scatter, ZeRO's flat partitions), which moves results by ~1e-7
relative per step (measured: at most 4e-7 after 6 steps). Adam can amplify such noise early
on, so we allow 250x the measured drift. A real bug (a missing or doubled normalisation, a
rank seeing the wrong data) changes the loss by more than 1e-2 within two steps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import losses
from distributed_helpers import env, free_port, run, run_overrides, torchrun_cmd

from training.run.checkpoint import COMPLETE, complete_checkpoints, latest_checkpoint
from training.run.heartbeat import read_heartbeat

TOL = 1e-4
# The saved weights after 8 steps, by the same argument: measured at most 2e-7 (ddp 0, fsdp2,
# ZeRO-2) and 3e-6 (ZeRO-3) from the 1-process run's.
WEIGHT_TOL = TOL
STEPS = 8
ENGINES = ["ddp", "fsdp2", "deepspeed_zero2", "deepspeed_zero3"]


def single_cmd(overrides):
    return [sys.executable, "-m", "launch.train", *overrides]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def reference(root):
    """The single-process run every engine is compared with."""
    proc = run(single_cmd(run_overrides(root, "single", STEPS)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return losses(root / "single")


@pytest.mark.parametrize("engine", ENGINES)
def test_two_processes_match_one(root, reference, engine):
    proc = run(torchrun_cmd(2, run_overrides(root, engine, STEPS, engine=engine, procs=2)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = losses(root / engine)
    assert len(got) == STEPS
    assert got == pytest.approx(reference, abs=TOL, rel=0)
    # the consolidated Hugging Face weights load with plain transformers
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(latest_checkpoint(root / engine))
    assert sum(p.numel() for p in model.parameters()) > 1e6
    # and are the 1-process run's weights (fsdp2 and ZeRO-3 stream them from their shards)
    from safetensors.torch import load_file

    want = load_file(latest_checkpoint(root / "single") / "model.safetensors")
    got = load_file(latest_checkpoint(root / engine) / "model.safetensors")
    assert got.keys() == want.keys()
    worst = max(float((got[k] - want[k]).abs().max()) for k in want)
    assert worst <= WEIGHT_TOL, (
        f"{engine}: weights differ from the 1-process run by up to {worst:.2e}"
    )


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (children of children included)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def test_sigkill_two_processes_then_resume_reproduces_losses(root, reference):
    steps = 16
    over = run_overrides(root, "killed2", steps, engine="ddp", procs=2)
    proc = subprocess.Popen(
        torchrun_cmd(2, over),
        env=env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 180
    while not (root / "killed2" / "checkpoints" / "step_000008" / COMPLETE).exists():
        assert proc.poll() is None and time.time() < deadline, (
            "the run ended before it could be killed"
        )
        time.sleep(0.02)
    # torchrun and both ranks at once, like a lost node. torchrun starts each worker in a session of
    # its own (start_new_session), so killing torchrun's process group would leave the ranks running.
    tree = [proc.pid, *descendants(proc.pid)]
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    assert len(losses(root / "killed2")) < steps

    whole = run(torchrun_cmd(2, run_overrides(root, "whole2", steps, engine="ddp", procs=2)))
    assert whole.returncode == 0, whole.stderr[-3000:]
    resumed = run(torchrun_cmd(2, over + ["trainer.resume=auto"]))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    assert losses(root / "killed2") == pytest.approx(losses(root / "whole2"), abs=1e-6, rel=0)


def test_two_process_checkpoint_resumes_on_one_process(root, reference):
    """An fsdp2 run on 2 processes saved at step 4; a 1-process run picks it up and finishes."""
    src = root / "fsdp2"
    dst = root / "fsdp2-to-1"
    shutil.copytree(src, dst)
    for ckpt in complete_checkpoints(dst):
        if int(ckpt.name.split("_")[1]) > 4:
            shutil.rmtree(ckpt)
    proc = run(single_cmd(run_overrides(root, "fsdp2-to-1", STEPS, engine="single", procs=1)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "saved by fsdp2 on 2 process(es)" in proc.stderr
    assert losses(dst) == pytest.approx(reference, abs=TOL, rel=0)


@pytest.mark.parametrize("engine", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_two_process_checkpoint_resumes_on_one_process(root, reference, engine):
    """A ZeRO run on 2 processes saved at step 4; a 1-process run converts its partitioned state to
    DeepSpeed's universal checkpoint, resumes from it and reproduces the 2-process losses (TOL)."""
    src = root / engine
    dst = root / f"{engine}-to-1"
    shutil.copytree(src, dst)
    for ckpt in complete_checkpoints(dst):
        if int(ckpt.name.split("_")[1]) > 4:
            shutil.rmtree(ckpt)
    over = run_overrides(root, dst.name, STEPS, engine=engine, procs=1) + ["trainer.resume=auto"]
    proc = run(torchrun_cmd(1, over))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"saved by {engine} on 2 process(es)" in proc.stderr
    assert (dst / "checkpoints" / "step_000004" / "deepspeed" / "universal").is_dir()
    assert not list((dst / "checkpoints" / "step_000004" / "deepspeed").glob(".tmp-*"))
    assert losses(dst) == pytest.approx(losses(src), abs=TOL, rel=0)


def test_sigterm_checkpoints_exits_for_requeue_and_resumes(root, reference):
    over = run_overrides(root, "term", STEPS, save_every=100)
    proc = subprocess.Popen(
        single_cmd(over), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    metrics = root / "term" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    assert "stopped by SIGTERM" in err
    hb = read_heartbeat(root / "term")
    assert hb["state"] == "preempted"
    stopped_at = hb["last_checkpoint_step"]
    assert 3 <= stopped_at < STEPS
    assert latest_checkpoint(root / "term").name == f"step_{stopped_at:06d}"
    again = run(single_cmd(over))
    assert again.returncode == 0, again.stderr[-2000:]
    assert losses(root / "term") == pytest.approx(reference, abs=1e-6, rel=0)
    assert read_heartbeat(root / "term")["state"] == "completed"


def _wait_for_steps(metrics: Path, n: int, alive) -> None:
    deadline = time.time() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= n):
        assert alive() and time.time() < deadline
        time.sleep(0.02)


def _ladder(verb: str, over: list[str], cwd: Path, **popen) -> subprocess.Popen:
    """`ladder VERB` on a 60-step tiny run that saves only at its end, output captured."""
    more = ["data.max_samples=400", "trainer.max_steps=60", "trainer.save_every=100"]
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "ladder"), verb, *over, *more],
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_ctrl_c_finishes_the_step_checkpoints_records_interrupted_and_exits_130(tmp_path):
    """#28 item 7: the first Ctrl-C of `ladder train` loses no step (about 10 s: one tiny run)."""
    import sqlite3

    from conftest import FAST

    over = [*FAST, f"trainer.run_root={tmp_path}", "trainer.run_name=ctrlc"]
    proc = _ladder("train", over, tmp_path)
    _wait_for_steps(tmp_path / "ctrlc" / "metrics.jsonl", 2, lambda: proc.poll() is None)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    hb = read_heartbeat(tmp_path / "ctrlc")
    stopped = hb["last_checkpoint_step"]
    assert hb["state"] == "interrupted" and hb["step"] == stopped < 60, hb
    assert latest_checkpoint(tmp_path / "ctrlc").name == f"step_{stopped:06d}"
    assert f"interrupted by Ctrl-C after step {stopped} of 60" in err
    assert "resume with: ladder train rung=tiny" in err and "KeyboardInterrupt" not in err
    with sqlite3.connect(tmp_path / "ladder.db") as db:  # the direct run's ledger record
        assert db.execute("SELECT state FROM jobs").fetchall() == [("interrupted",)]


def test_ctrl_c_of_a_local_launch_lets_the_trainer_checkpoint_and_records_interrupted(tmp_path):
    """Ctrl-C at the terminal reaches `ladder launch` and its trainer (one process group): the
    launcher waits while the trainer finishes its step and checkpoints, and the ledger records
    the job interrupted, not cancelled with all its hours wasted (about 15 s)."""
    from conftest import FAST

    from launch.accounting.ledger import Ledger

    # its own process group, as a terminal's foreground job
    proc = _ladder("launch", [*FAST, "trainer.run_name=lc"], tmp_path, start_new_session=True)
    run_dir = tmp_path / "runs" / "lc"
    _wait_for_steps(run_dir / "metrics.jsonl", 2, lambda: proc.poll() is None)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    hb = read_heartbeat(run_dir)
    stopped = hb["last_checkpoint_step"]
    assert hb["state"] == "interrupted" and 2 <= stopped < 60, hb
    assert latest_checkpoint(run_dir).name == f"step_{stopped:06d}"
    [job] = Ledger(tmp_path / "runs" / "ladder.db").jobs()
    assert job["state"] == "interrupted", job
    assert job["waste_gpu_hours"] < job["used_gpu_hours"]  # the checkpointed steps are kept
    assert f"job {job['id']} interrupted" in out, out
    assert "finishes its step and checkpoints" in err


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(tmp_path):
    """`ladder train` with step 2 hung (LADDER_FAULT): the first Ctrl-C waits for the step, which
    never ends, and the second stops it there. In a process of its own: in-process, under an xdist
    worker, the presses at the worker's main thread went unheard and the suite hung."""
    import threading

    from conftest import FAST

    run_dir = tmp_path / "twice"
    over = [*FAST, f"trainer.run_root={tmp_path}", "trainer.run_name=twice", "data.max_samples=400"]
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ladder"),
            "train",
            *over,
            "trainer.max_steps=5",
            "trainer.save_every=100",
        ],
        cwd=tmp_path,
        env=env(LADDER_FAULT="hang_at:2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    heard = threading.Event()

    def read():  # the first press is heard when the trainer says so
        for line in proc.stderr:
            lines.append(line)
            if "Ctrl-C: finishing this step" in line:
                heard.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        _wait_for_steps(run_dir / "metrics.jsonl", 1, lambda: proc.poll() is None)
        time.sleep(1.0)  # past step 1's checkpoint test, inside step 2's hang
        proc.send_signal(signal.SIGINT)
        assert heard.wait(60), "".join(lines)[-2000:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, "".join(lines)[-2000:]
    finally:
        proc.kill()
    reader.join(timeout=10)
    hb = read_heartbeat(run_dir)
    assert hb["state"] == "interrupted" and "second Ctrl-C" in hb["reason"], hb
    assert latest_checkpoint(run_dir) is None  # stopped inside step 2: nothing saved


def test_half_written_checkpoint_is_never_resumed(root, reference):
    over = run_overrides(root, "halfsave", STEPS, save_every=2)
    died = run(single_cmd(over), env=env(LADDER_FAULT="kill_in_save:6"))
    assert died.returncode == -signal.SIGKILL
    ckpts = root / "halfsave" / "checkpoints"
    assert (
        ckpts / ".tmp-step_000006" / "model.safetensors"
    ).exists()  # the weights were half-way there
    assert not (ckpts / "step_000006").exists()
    assert latest_checkpoint(root / "halfsave").name == "step_000004"
    again = run(single_cmd(over))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "step_000004" in again.stderr
    assert losses(root / "halfsave") == pytest.approx(reference, abs=1e-6, rel=0)
    assert not list(ckpts.glob(".tmp-*"))


def test_two_rendezvous_nodes_train_together(root, reference):
    port = free_port()
    over = run_overrides(root, "twonodes", STEPS, engine="ddp", procs=1, nodes=2)
    cmd = torchrun_cmd(1, over, port=port, nnodes=2)
    nodes = [
        subprocess.Popen(
            cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    errs = [n.communicate(timeout=300)[1] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    assert losses(root / "twonodes") == pytest.approx(reference, abs=TOL, rel=0)
    assert json.loads((root / "twonodes" / "run_meta.json").read_text())["world_size"] == 2


def test_nonfinite_loss_stops_with_a_clear_message(root):
    over = run_overrides(root, "nan", STEPS, save_every=2)
    proc = run(single_cmd(over), env=env(LADDER_FAULT="nan_at:5"))
    assert proc.returncode == 2
    assert "the loss is nan at step 5" in proc.stderr and "Traceback" not in proc.stderr
    assert latest_checkpoint(root / "nan").name == "step_000004"
    assert read_heartbeat(root / "nan")["state"] == "failed"


def test_hung_step_is_reported_not_waited_on(root):
    over = run_overrides(root, "hang", STEPS) + ["trainer.step_timeout_s=4"]
    proc = run(single_cmd(over), env=env(LADDER_FAULT="hang_at:3"), timeout=120)
    assert proc.returncode == 124
    assert "step 3 has run for more than trainer.step_timeout_s=4 s" in proc.stderr
    assert "ladder-watchdog" in proc.stderr or "Thread" in proc.stderr  # the stacks were dumped
    assert read_heartbeat(root / "hang")["state"] == "failed"
