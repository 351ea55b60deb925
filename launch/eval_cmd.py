"""`ladder eval CHECKPOINT [overrides]`: score a checkpoint and log it where the run logs.

    ladder eval runs/tiny-sft-reverse/checkpoints/step_000150             # eval=synthetic
    ladder eval runs/tiny-sft-reverse/checkpoints/step_000150 eval=cpu     # + ifeval_lite, lm-eval

Tasks already scored for this checkpoint's content are answered from the eval cache without
loading the model. The scores go to <checkpoint>/eval/<suite>.json, to the registry beside
the runs (registry.url), to the terminal as a table, and to the checkpoint's own W&B run
(same run id) against the checkpoint's step, with an `eval` artifact naming the checkpoint's
artifact. A result that this W&B run already holds is not logged twice.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from evals.registry import Registry, run_dir_of
from evals.runner import default_registry, evaluate_checkpoint
from training.checkpoint import check_checkpoint, step_of
from training.compose import compose
from training.tracking import Tracker


def registry_for(ckpt: Path, cfg, overrides: list[str]) -> Registry:
    """registry.url or trainer.run_root when given on the command line, else the checkpoint's own."""
    if any(o.lstrip("+").startswith(("registry.url=", "trainer.run_root=")) for o in overrides):
        return Registry.from_config(cfg)  # ckpt not passed: the run root named here wins
    return default_registry(ckpt)


def run_eval(checkpoint: str, overrides: list[str]) -> dict:
    ckpt = check_checkpoint(checkpoint)
    cfg = compose(overrides)
    registry = registry_for(ckpt, cfg, overrides)
    result = evaluate_checkpoint(ckpt, cfg.eval, registry)
    step = step_of(ckpt)
    console = Console()
    run_dir = run_dir_of(ckpt)
    run_cfg_file = ckpt / "ladder_config.yaml"
    if run_dir is not None and run_cfg_file.exists() and cfg.tracker.mode.value != "disabled":
        log_to_wandb(ckpt, run_dir, step, result, compose_from_file(run_cfg_file, cfg), registry, console)
    table = Table(title=f"eval suite {cfg.eval.name!r}, checkpoint step {step}")
    table.add_column("task")
    table.add_column("score", justify="right")
    table.add_column("n", justify="right")
    table.add_column("source")
    for name, task in result["tasks"].items():
        table.add_row(f"{name}/{task['metric']}", f"{task['score']:.1f}", str(task["n"]),
                      "cache" if task["cached"] else f"computed in {task.get('seconds', 0):.1f}s")
    console.print(table)
    if not result["model_loaded"]:
        console.print("every task was answered from the eval cache; the model was not loaded")
    console.print(f"results: {result['path']}\nregistry: {result['registry']}")
    return result


def log_to_wandb(ckpt: Path, run_dir: Path, step: int, result: dict, run_cfg, registry: Registry,
                 console: Console) -> None:
    id_file = run_dir / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.exists() else None
    keys = [t["cache_key"] for t in result["tasks"].values()]
    if run_id and registry.was_logged(run_id, keys):
        console.print(f"W&B run {run_id} already holds these scores at step {step}; not logged again")
        return
    tracker = Tracker(run_cfg, run_dir, job_type="eval")
    try:
        tracker.log_eval(step, result["scores"])
        tracker.link_eval(ckpt, step, result)
        run_id = tracker.run.id if tracker.run is not None else run_id
    finally:
        tracker.finish()
    if run_id:
        registry.mark_logged(run_id, keys, step)


def compose_from_file(path: Path, current):
    """The run's own saved config, with this command's tracker settings."""
    from training.schema import LadderConfig
    saved = OmegaConf.load(path)
    merged = OmegaConf.merge(OmegaConf.structured(LadderConfig), saved)
    merged.tracker = current.tracker
    return merged


def submit_evals(checkpoints: list[str], overrides: list[str], wait: bool = False) -> int:
    """launcher=slurm: one SLURM job per checkpoint (a job array), each running `ladder eval` on it.

    Nothing is evaluated here; each job scores its checkpoint exactly as a local `ladder eval`
    would (same cache, registry and W&B logging), with launcher=local so it does not submit again.
    Each job is recorded in the ledger first, as kind `eval`, charged to the config's team: its
    hours are SLURM's elapsed x GPUs, and `ladder budget report` shows them apart from training."""
    import json
    import time as _time

    from launch.budget import check_and_record_many
    from launch.ledger import Ledger
    from launch.launch_cmd import log_dir_of
    from launch.slurm_script import EVAL, Point, check, submit_script
    from training.checkpoint import git_commit

    cfg = compose(overrides)
    ckpts = [check_checkpoint(c).resolve() for c in checkpoints]
    log_dir = log_dir_of(cfg)
    check(cfg, log_dir)
    ledger = Ledger.from_config(cfg)
    gpus = 1  # an eval job is one process on one device of one node (slurm_script's EVAL entry)
    records = [(0.0, eval_job_fields(c, cfg, gpus, json.dumps([str(c), *overrides]))) for c in ckpts]
    job_ids = check_and_record_many(ledger, cfg.budget, records)
    points = [Point(c, [str(c), *overrides, "launcher=local"]) for c in ckpts]
    try:
        _, ids = submit_script(cfg, points, f"eval-{cfg.eval.name}", log_dir, git_commit(), entry=EVAL)
    except Exception as e:
        for j in job_ids:
            ledger.update_job(j, state="failed", reason=str(e), finished_at=_time.time())
        raise
    for c, i, j in zip(ckpts, ids, job_ids):
        ledger.update_job(j, external_id=i)
        print(f"ladder eval: SLURM job {i} (ledger job {j}) evaluates {c} (log {log_dir / (i + '.out')})", flush=True)
    if not wait:
        return 0
    from launch.status_cmd import wait_for
    finals = wait_for(ledger, job_ids)
    for f in finals:
        print(f"ladder eval: SLURM job {f['external_id']} {f['state']}: {f['used_gpu_hours']:.4f} GPU-hours"
              + (f" ({f['reason']})" if f["state"] != "completed" and f.get("reason") else ""), flush=True)
    return 0 if all(f["state"] == "completed" for f in finals) else 1


def eval_job_fields(ckpt: Path, cfg, gpus: int, overrides_json: str) -> dict:
    """The ledger record of one eval job: named after the checkpoint it scores."""
    from evals.registry import run_dir_of
    saved = OmegaConf.load(ckpt / "ladder_config.yaml") if (ckpt / "ladder_config.yaml").exists() else None
    run_dir = run_dir_of(ckpt)
    return dict(kind="eval", project=cfg.tracker.project, sweep=saved.sweep.name if saved is not None else None,
                rung=saved.rung.name if saved is not None else cfg.rung.name,
                run_name=f"eval {cfg.eval.name}: {run_dir.name if run_dir else ckpt.parent.name}@{step_of(ckpt)}",
                run_dir=str(ckpt), launcher="slurm", gpus=gpus, overrides=overrides_json)
