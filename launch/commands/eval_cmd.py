"""`ladder eval CHECKPOINT [overrides]`: score a checkpoint and log it where the run logs.

    ladder eval runs/tiny-sft-reverse/checkpoints/step_000150             # eval=synthetic
    ladder eval runs/tiny-sft-reverse/checkpoints/step_000150 eval=cpu     # + ifeval_lite, lm-eval

Tasks already scored for this checkpoint's content are answered from the eval cache without
loading the model. The scores go to <checkpoint>/eval/<suite>.json, to the registry beside
the runs (registry.url), to the terminal as a table, and to the checkpoint's own W&B run
(same run id) against the checkpoint's step, with an `eval` artifact naming the checkpoint's
artifact. A result that this W&B run already holds is not logged twice.

    ladder eval --pending runs/tiny-sft-reverse [overrides]             # what a finished run handed off

A run launched by `ladder launch` does not hold its devices while its last background
evaluations finish (trainer.eval_handoff): it lists them in <run_dir>/pending_evals.json, and
the launcher runs `--pending` on them as eval jobs of their own, on the same launcher, recorded
in the ledger as kind eval (run_pending).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evals.runner import default_registry, evaluate_checkpoint
from evals.store.checkpoint_ref import CheckpointRef, resolve_checkpoint
from evals.store.registry import Registry
from training.common.console import make_console
from training.common.safe_files import write_atomic
from training.common.store import safe_text
from training.config.compose import compose
from training.run.tracking import Tracker


def registry_for(ckpt: CheckpointRef, cfg, overrides: list[str]) -> Registry:
    """registry.url or trainer.run_root when given on the command line, else the checkpoint's own."""
    if any(o.lstrip("+").startswith(("registry.url=", "trainer.run_root=")) for o in overrides):
        return Registry.from_config(cfg)  # ckpt not passed: the run root named here wins
    return default_registry(ckpt)


def run_eval(checkpoint: str | CheckpointRef, overrides: list[str]) -> dict:
    ref = resolve_checkpoint(checkpoint)  # the one value every step below is handed
    cfg = compose(overrides)
    registry = registry_for(ref, cfg, overrides)
    result = evaluate_checkpoint(ref, cfg.eval, registry)
    console = make_console()
    if ref.run_dir is not None and ref.config is not None and cfg.tracker.mode.value != "disabled":
        log_to_wandb(ref, result, run_config(ref, cfg), registry, console)
    table = Table(title=f"eval suite {cfg.eval.name!r}, checkpoint step {ref.step}")
    table.add_column("task")
    table.add_column("score", justify="right")
    table.add_column("n", justify="right")
    table.add_column("source")
    for name, task in result["tasks"].items():
        table.add_row(
            f"{name}/{task['metric']}",
            f"{task['score']:.1f}",
            str(task["n"]),
            "cache" if task["cached"] else f"computed in {task.get('seconds', 0):.1f}s",
        )
    console.print(table)
    if not result["model_loaded"]:
        console.print("every task was answered from the eval cache; the model was not loaded")
    console.print(f"results: {result['path']}\nregistry: {result['registry']}")
    return result


def log_to_wandb(
    ref: CheckpointRef, result: dict, run_cfg, registry: Registry, console: Console
) -> None:
    ckpt, run_dir, step = ref.path, ref.run_dir, ref.step
    id_file = run_dir / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.exists() else None
    keys = [t["cache_key"] for t in result["tasks"].values()]
    if run_id and registry.was_logged(run_id, keys):
        console.print(
            f"W&B run {run_id} already holds these scores at step {step}; not logged again"
        )
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


def run_config(ref: CheckpointRef, current):
    """The run's own saved config, with this command's tracker settings."""
    merged = ref.config.copy()
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

    from launch.accounting.budget import check_and_record_many
    from launch.accounting.ledger import Ledger
    from launch.cluster.slurm_script import EVAL, Point, check, log_dir_of, submit_script
    from training.run.checkpoint import git_commit

    cfg = compose(overrides)
    ckpts = [resolve_checkpoint(c) for c in checkpoints]
    log_dir = log_dir_of(cfg)
    check(cfg, log_dir)
    ledger = Ledger.from_config(cfg)
    gpus = 1  # an eval job is one process on one device of one node (slurm_script's EVAL entry)
    records = [
        (0.0, eval_job_fields(c, cfg, gpus, json.dumps([str(c), *overrides]))) for c in ckpts
    ]
    job_ids = check_and_record_many(ledger, cfg.budget, records)
    points = [Point(c.path, [str(c.path), *overrides, "launcher=local"]) for c in ckpts]
    try:
        _, ids = submit_script(
            cfg, points, f"eval-{cfg.eval.name}", log_dir, git_commit(), entry=EVAL
        )
    except Exception as e:
        for j in job_ids:
            ledger.update_job(j, state="failed", reason=str(e), finished_at=_time.time())
        raise
    for c, i, j in zip(ckpts, ids, job_ids):
        ledger.update_job(j, external_id=i)
        print(
            f"ladder eval: SLURM job {i} (ledger job {j}) evaluates {c} (log {log_dir / (i + '.out')})",
            flush=True,
        )
    if not wait:
        return 0
    from launch.commands.status_cmd import wait_for

    finals = wait_for(ledger, job_ids)
    for f in finals:
        print(
            f"ladder eval: SLURM job {f['external_id']} {f['state']}: {f['used_gpu_hours']:.4f} GPU-hours"
            + (f" ({f['reason']})" if f["state"] != "completed" and f.get("reason") else ""),
            flush=True,
        )
    return 0 if all(f["state"] == "completed" for f in finals) else 1


def eval_job_fields(ref: CheckpointRef, cfg, gpus: int, overrides_json: str) -> dict:
    """The ledger record of one eval job: named after the checkpoint it scores."""
    run = ref.run_dir.name if ref.run_dir else ref.path.parent.name
    return dict(
        kind="eval",
        project=cfg.tracker.project,
        sweep=ref.select("sweep.name"),
        rung=ref.select("rung.name") if ref.config is not None else cfg.rung.name,
        run_name=f"eval {cfg.eval.name}: {run}@{ref.step}",
        run_dir=str(ref.path),
        launcher=cfg.launcher.name,
        gpus=gpus,
        overrides=overrides_json,
    )


def run_pending(run_dir: str | Path, overrides: list[str], wait: bool = False) -> int:
    """`ladder eval --pending RUN_DIR`: the evaluations a finished run handed off, as eval jobs of
    their own on the config's launcher, each recorded in the ledger as kind `eval`: launcher=slurm
    submits them (submit_evals), launcher=local runs them here one after the other. The list is
    removed once the jobs are recorded; a local evaluation that fails stays on it, to retry."""
    from evals.async_eval import PENDING_FILE, read_pending
    from training.common.errors import ConfigError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--pending {run_dir}: not a run directory")
    pending = read_pending(run_dir)
    ckpts = [Path(p["checkpoint"]) for p in pending if Path(p["checkpoint"]).is_dir()]
    gone = [p["checkpoint"] for p in pending if not Path(p["checkpoint"]).is_dir()]
    if gone:
        print(f"ladder eval: skipped, no longer on disk: {', '.join(gone)}")
    if not ckpts:
        print(f"ladder eval: {run_dir} has no evaluations left to run")
        (run_dir / PENDING_FILE).unlink(missing_ok=True)
        return 0
    cfg = compose(overrides)
    if cfg.launcher.name == "slurm":
        code = submit_evals(
            [str(c) for c in ckpts], overrides, wait=wait
        )  # raises if nothing was submitted
        (run_dir / PENDING_FILE).unlink(missing_ok=True)
        return code
    failed = run_local_eval_jobs(ckpts, overrides, cfg)
    left = [p for p in pending if Path(p["checkpoint"]) in failed]
    if left:
        write_atomic(
            run_dir / PENDING_FILE,
            json.dumps({"checkpoints": left, "written_at": time.time()}) + "\n",
        )
    else:
        (run_dir / PENDING_FILE).unlink(missing_ok=True)
    return 1 if failed else 0


def run_local_eval_jobs(ckpts: list[Path], overrides: list[str], cfg) -> list[Path]:
    """One local eval job per checkpoint, in the ledger with the hours it took (one device, as a
    SLURM eval job); returns the checkpoints whose evaluation failed."""
    from launch.accounting.budget import check_and_record_many
    from launch.accounting.ledger import Ledger

    ledger = Ledger.from_config(cfg)
    gpus = 1
    refs = [
        resolve_checkpoint(c) for c in ckpts
    ]  # a damaged checkpoint is refused before anything is recorded
    records = [(0.0, eval_job_fields(r, cfg, gpus, json.dumps([str(r), *overrides]))) for r in refs]
    ids = check_and_record_many(ledger, cfg.budget, records)
    failed = []
    for i, (ckpt, ref, job_id) in enumerate(zip(ckpts, refs, ids)):
        ledger.mark_started(job_id, external_id=str(os.getpid()))
        t0 = time.time()
        state, reason = "completed", None
        try:
            run_eval(ref, overrides)
        except KeyboardInterrupt:
            used = gpus * (time.time() - t0) / 3600
            ledger.update_job(
                job_id,
                state="cancelled",
                reason="interrupted",
                used_gpu_hours=used,
                waste_gpu_hours=used,
                finished_at=time.time(),
            )
            for rest in ids[i + 1 :]:
                ledger.update_job(
                    rest,
                    state="cancelled",
                    reason="interrupted before it ran",
                    finished_at=time.time(),
                )
            raise
        except Exception as e:  # one checkpoint's failure must not cost the others their scores
            state, reason = "failed", f"{type(e).__name__}: {e}"[:500]
            failed.append(ckpt)
            print(f"ladder eval: evaluation of {ckpt} failed: {safe_text(reason, markup=False)}")
        used = gpus * (time.time() - t0) / 3600
        ledger.update_job(
            job_id,
            state=state,
            reason=reason,
            used_gpu_hours=used,
            waste_gpu_hours=0.0 if state == "completed" else used,
            finished_at=time.time(),
        )
    return failed
