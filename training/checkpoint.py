"""Atomic checkpoints in Hugging Face format, with the trainer state beside the weights.

    ckpt = save_checkpoint(run_dir, step, model, tokenizer, state, cfg)   # -> runs/x/checkpoints/step_000100
    last = latest_checkpoint(run_dir)                                     # newest COMPLETE one, or None

Layout of one checkpoint directory:
  model.safetensors, config.json, generation_config.json  (model.save_pretrained)
  tokenizer.json, tokenizer_config.json, chat_template.jinja (tokenizer.save_pretrained)
  trainer_state.pt     optimizer (full, by parameter name), scheduler, RNG, data position, step
  deepspeed/           DeepSpeed engines only: their own sharded optimizer and model state
  ladder_config.yaml   the resolved run config
  ladder_meta.json     step, run name, git commit, time
  COMPLETE             written last
Everything is written under a temporary name, COMPLETE is written, and only then is the
directory renamed into place, so a crash at any moment leaves the last good checkpoint
intact and never leaves a half-written directory under a checkpoint's name. With
trainer.checkpoint_url set, the committed directory is also uploaded there (remote.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from training import faults
from training.errors import CheckpointError

COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.pt"
_NAME = re.compile(r"^step_(\d+)$")


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def staging_dir(run_dir: Path, step: int) -> Path:
    """Where a checkpoint is written before it is committed. The same name on every rank, so
    engines that write per-rank shards (DeepSpeed) write into one directory."""
    return checkpoints_dir(run_dir) / f".tmp-step_{step:06d}"


def write_checkpoint(tmp: Path, step: int, tokenizer, state: dict, cfg: DictConfig) -> None:
    """Write the tokenizer and the trainer state into `tmp` (rank 0), after the weights (which
    the engine writes: Engine.save_model, a collective for sharded engines)."""
    tmp.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(tmp)
    faults.maybe("kill_in_save", step)  # tests: die with the weights half-way to a checkpoint
    torch.save(state, tmp / STATE_FILE)
    (tmp / "ladder_config.yaml").write_text(OmegaConf.to_yaml(cfg))
    meta = {"step": step, "run_name": cfg.trainer.run_name, "git_commit": git_commit(),
            "engine": state.get("engine"), "world_size": state.get("world_size"),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (tmp / "ladder_meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def commit_checkpoint(tmp: Path, run_dir: Path, step: int, keep_last: int | None = None,
                      protect: tuple[int, ...] = (0,)) -> Path:
    """fsync everything, write COMPLETE, and rename the directory into place (rank 0)."""
    root = checkpoints_dir(run_dir)
    final = root / f"step_{step:06d}"
    for f in tmp.rglob("*"):  # the data must be on disk before COMPLETE claims it is
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    # A unique token, so a copy elsewhere (remote.py) can tell this save from another of the same step.
    (tmp / COMPLETE).write_text(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {uuid.uuid4().hex}\n")
    if final.exists():  # a re-save of the same step after a resume: swap it atomically
        old = root / f".old-step_{step:06d}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    _fsync_dir(root)
    if keep_last:
        prune(run_dir, keep_last, protect)
    return final


def save_checkpoint(run_dir: Path, step: int, model, tokenizer, state: dict, cfg: DictConfig,
                    keep_last: int | None = None, protect: tuple[int, ...] = (0,),
                    model_state: dict | None = None) -> Path:
    """Single-process save: stage, write, commit."""
    tmp = staging_dir(run_dir, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, state_dict=model_state, safe_serialization=True)
    write_checkpoint(tmp, step, tokenizer, state, cfg)
    return commit_checkpoint(tmp, run_dir, step, keep_last, protect)


def step_of(path: Path) -> int:
    m = _NAME.match(Path(path).name)
    if not m:
        raise CheckpointError(f"{path} is not a checkpoint directory (expected a name like step_000100)")
    return int(m.group(1))


def complete_checkpoints(run_dir: Path) -> list[Path]:
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / COMPLETE).is_file()]
    return sorted(found, key=step_of)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def prune(run_dir: Path, keep_last: int, protect: tuple[int, ...] = (0,)) -> None:
    """Keep the newest keep_last complete checkpoints (and protected steps); clear stale temporaries."""
    found = [p for p in complete_checkpoints(run_dir) if step_of(p) not in protect]
    for p in found[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)
    for p in [*checkpoints_dir(run_dir).glob(".tmp-*"), *checkpoints_dir(run_dir).glob(".old-*")]:
        shutil.rmtree(p, ignore_errors=True)  # left by a save (or a download) that was killed


def check_checkpoint(path: str | Path) -> Path:
    """Return the path if it is a complete checkpoint; else raise a CheckpointError saying why."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {p}: the path does not exist")
    if not p.is_dir():
        raise CheckpointError(f"no checkpoint at {p}: not a directory")
    if not (p / COMPLETE).is_file():
        if complete_checkpoints(p):
            raise CheckpointError(f"{p} is a run directory; name a checkpoint, e.g. {latest_checkpoint(p)}")
        raise CheckpointError(f"{p} is not a complete checkpoint (no {COMPLETE} marker): it was never "
                              "finished, or it is not a Ladder checkpoint")
    return p


def load_trainer_state(path: Path) -> dict:
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=False)
