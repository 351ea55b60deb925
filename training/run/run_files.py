"""The run directory's own records: config.yaml, run_meta.json, and whether the run is finished.

    from training.run.run_files import finished_step, open_run_dir, resume_point
    step = finished_step(cfg, run_dir, resume_step)   # the step a run already reached max_steps at, or None
    created = open_run_dir(run_dir, cfg, invocation)  # mkdir, config.yaml, append to run_meta.json
    remove_if_unstarted(run_dir)                      # a brand-new run whose set-up failed leaves no folder
    ckpt, step, changes = resume_point(cfg, run_dir)  # for `ladder launch`: what the trainer will resume

config.yaml is the run's current config. run_meta.json keeps every invocation of the run (a start
and each resume), appended, never overwritten:
  {"git_commit": ..., "argv": [...], "world_size": 2, "engine": "ddp",     <- the latest invocation's
   "invocations": [{"started_at", "argv", "git_commit", "world_size", "engine", "resumed_from",
                    "resumed_step", "config_changes", "harmless_changes"}, ...]}
The top-level fields repeat the latest invocation's, for readers of the older one-invocation file
(launch/promotion/promote.py reads argv); config_changes lists the math changes a resume applied with
trainer.allow_config_change=true, as {key, old, new}, so every earlier config can be rebuilt
from the current one. The trainer writes these only once the config is valid and the resume
decided (training/config/config_diff.py), so a refused or failed start touches nothing. Every file in a
run folder is written to a temporary name and renamed (training/common/safe_files.py), so a symlink
planted under its name is replaced, never followed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from training.common.safe_files import read_text, write_atomic
from training.config.config_diff import ConfigChanges, check_resume_config
from training.run.checkpoint import check_checkpoint, checkpoints_dir, latest_checkpoint, step_of
from training.run.heartbeat import read_heartbeat

log = logging.getLogger("ladder.train")
META = "run_meta.json"
LATEST = ("git_commit", "argv", "world_size", "engine")  # repeated at the top level


def finished_message(run_name: str, step: int, max_steps: int, nothing: str) -> str:
    return (
        f"run {run_name} already finished at step {step} of {max_steps}; {nothing}: give a new "
        "trainer.run_name, raise trainer.max_steps with trainer.allow_config_change=true, or start over "
        "with trainer.resume=none"
    )


def finished_step(cfg: DictConfig, run_dir: Path, resume_step: int | None) -> int | None:
    """The step at which the run already reached trainer.max_steps, or None if there is training
    to do. Judged by the checkpoint it would resume from; with none found (resume=auto), by the
    heartbeat, so a run whose checkpoints are gone is not silently started over."""
    t = cfg.trainer
    if t.resume == "none":
        return None
    if resume_step is not None:
        return resume_step if resume_step >= t.max_steps else None
    hb = (read_heartbeat(run_dir) or {}) if t.resume == "auto" else {}
    if hb.get("state") == "completed" and int(hb.get("step") or 0) >= t.max_steps:
        return int(hb["step"])
    return None


def checkpoint_step(ckpt: Path) -> int:
    try:
        return int(json.loads((Path(ckpt) / "ladder_meta.json").read_text())["step"])
    except (OSError, KeyError, ValueError):
        return step_of(ckpt)


def resume_point(
    cfg: DictConfig, run_dir: Path, run_name: str | None = None
) -> tuple[Path | None, int | None, ConfigChanges]:
    """For `ladder launch`, before anything is recorded: the local checkpoint the trainer will
    resume from, its step, and the config changes (a refused change raises ConfigError here).
    A checkpoint only at a URL is the trainer's to check: it is not downloaded for this."""
    mode = cfg.trainer.resume
    if mode == "none" or "://" in mode:
        return None, None, ConfigChanges()
    ckpt = latest_checkpoint(run_dir) if mode == "auto" else check_checkpoint(mode)
    if ckpt is None:
        return None, None, ConfigChanges()
    step = checkpoint_step(ckpt)
    return ckpt, step, check_resume_config(cfg, ckpt, step, run_name)


def invocation(
    argv: list[str],
    git_commit: str | None,
    world_size: int,
    engine: str,
    resumed_from: Path | None,
    resumed_step: int | None,
    changes: ConfigChanges,
) -> dict:
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": list(argv),
        "git_commit": git_commit,
        "world_size": world_size,
        "engine": engine,
        "resumed_from": str(resumed_from) if resumed_from else None,
        "resumed_step": resumed_step,
        "config_changes": [c.as_json() for c in changes.math],
        "harmless_changes": [c.as_json() for c in changes.harmless],
    }


def append_invocation(run_dir: Path, entry: dict) -> dict:
    path = Path(run_dir) / META
    earlier: list[dict] = []
    if path.exists() or path.is_symlink():
        try:
            old = json.loads(read_text(path))  # O_NOFOLLOW: a planted link is set aside, never read
            earlier = old.get("invocations", [old])  # [old]: the one-invocation format
        except (OSError, ValueError, TypeError, AttributeError) as e:
            keep = path.with_name(f"run_meta.unreadable-{int(time.time())}.json")
            log.warning(
                "%s is unreadable (%s); kept as %s, a new one is started", path, e, keep.name
            )
            os.replace(path, keep)
    meta = {**{k: entry[k] for k in LATEST}, "invocations": [*earlier, entry]}
    write_atomic(path, json.dumps(meta, indent=2) + "\n")
    return meta


def open_run_dir(run_dir: Path, cfg: DictConfig, entry: dict) -> bool:
    """Create the run directory if needed, write config.yaml (the current config) and append this
    invocation to run_meta.json. Returns whether the directory is new."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    append_invocation(run_dir, entry)
    return created


def remove_if_unstarted(run_dir: Path) -> None:
    """After a failed set-up of a run whose directory this process created: remove it, unless it
    holds a checkpoint (never delete earlier work)."""
    if checkpoints_dir(run_dir).exists():
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    log.info("removed %s: the run failed before it started", run_dir)
