"""`ladder launch [overrides] [--override-budget REASON]`: plan, check the budget, record, run, account.

    ladder launch rung=tiny trainer.max_steps=200
    ladder launch rung=tiny budget=default --override-budget "rerun for the paper, approved by J."

It composes and validates the config, plans the job (launch/plan.py) and refuses one that does
not fit, checks its planned GPU-hours against the team's budget and records it in the ledger in
one transaction (launch/budget.py), runs the trainer with the launcher named by `launcher=`, and
when the trainer exits records the GPU-hours it used, its final state and its waste from the
run's heartbeat. Ctrl-C stops the run and records it as cancelled (all its hours are waste);
SIGTERM is passed to the trainer, which checkpoints and stops, and the job is recorded as preempted.

A launcher is a small interface: `command()` renders what runs, `run()` runs it and returns the
exit status. `local` runs on this machine; a SLURM launcher goes beside it in LAUNCHERS.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from launch.console import num
from training.errors import ConfigError

STOP_GRACE_S = 60  # after Ctrl-C, how long the trainer gets to write its last heartbeat


class Launcher:
    name = "base"

    def command(self, cfg: DictConfig, overrides: list[str]) -> list[str]:
        raise NotImplementedError

    def run(self, cfg: DictConfig, overrides: list[str], on_start: Callable[[str], None]) -> int:
        """Run the job to its end and return its exit status; on_start gets the job's external id."""
        raise NotImplementedError


class LocalLauncher(Launcher):
    """The trainer as a subprocess of this one, torchrun for several GPUs on this node."""
    name = "local"

    def command(self, cfg: DictConfig, overrides: list[str]) -> list[str]:
        r = cfg.rung
        if r.nodes > 1:
            raise ConfigError(f"launcher=local runs on this machine only, but rung.nodes={r.nodes}; "
                              "use rung.nodes=1 or a cluster launcher")
        if r.gpus_per_node == 1:
            return [sys.executable, "-m", "training.trainer", *overrides]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={r.gpus_per_node}", "-m", "training.trainer", *overrides]

    def run(self, cfg: DictConfig, overrides: list[str], on_start: Callable[[str], None]) -> int:
        proc = subprocess.Popen(self.command(cfg, overrides))
        on_start(str(proc.pid))
        # A SIGTERM to the launcher (a scheduler's preemption, `kill`) goes to the trainer, which
        # checkpoints and exits as preempted; the ledger then records that, not a vanished job.
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the trainer too (same process group): let it record its state, then stop it.
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)


LAUNCHERS: dict[str, type[Launcher]] = {"local": LocalLauncher}


def get_launcher(cfg: DictConfig) -> Launcher:
    name = cfg.launcher.name
    if name not in LAUNCHERS:
        raise ConfigError(f"launcher={name} is not available in this version; available: {', '.join(LAUNCHERS)}")
    return LAUNCHERS[name]()


def config_hash(cfg: DictConfig) -> str:
    return hashlib.sha256(OmegaConf.to_yaml(cfg, sort_keys=True).encode()).hexdigest()[:16]


def launch(overrides: list[str], override_reason: str | None = None) -> tuple[int, dict]:
    """Launch one job; returns the exit status and its final ledger record."""
    from launch.budget import check_and_record, period_key
    from launch.ledger import Ledger
    from launch.plan import fix_message, make_plan
    from training.compose import compose
    from training.trainer import default_run_name
    from training.validate import validate

    cfg = compose(overrides)
    launcher = get_launcher(cfg)
    launcher.command(cfg, overrides)  # refuses what this launcher cannot run, before anything is recorded
    validate(cfg, world_size=cfg.rung.nodes * cfg.rung.gpus_per_node)
    ledger = Ledger.from_config(cfg)
    plan = make_plan(cfg, ledger)
    if not plan.fits:
        raise ConfigError(f"the job {fix_message(plan)}")
    run_name = cfg.trainer.run_name or default_run_name(cfg)
    run_dir = (Path(cfg.trainer.run_root) / run_name).resolve()
    job_id = check_and_record(
        ledger, cfg.budget, plan.gpu_hours, override_reason=override_reason,
        job=dict(project=cfg.tracker.project, sweep=cfg.sweep.name, rung=cfg.rung.name, run_name=run_name,
                 run_dir=str(run_dir), config_hash=config_hash(cfg), launcher=launcher.name, gpus=plan.gpus))
    print(f"ladder launch: job {job_id} recorded in {ledger.path}: team {cfg.budget.team}, "
          f"{period_key(cfg.budget.period.value)}, {num(plan.gpu_hours, 3)} GPU-hours planned"
          + (f", budget overridden: {override_reason}" if override_reason else ""), flush=True)
    ledger.mark_started(job_id)
    try:
        code = launcher.run(cfg, overrides, on_start=lambda ext: ledger.update_job(job_id, external_id=ext))
        job = ledger.finish_from_heartbeat(job_id, exit_code=code)
    except KeyboardInterrupt:
        job = ledger.finish_from_heartbeat(job_id, cancelled=True)
        code = 130
    print(f"ladder launch: job {job_id} {job['state']}: used {num(job['used_gpu_hours'], 3)} of "
          f"{num(job['planned_gpu_hours'], 3)} planned GPU-hours, wasted {num(job['waste_gpu_hours'], 3)}", flush=True)
    return code, job


def cmd_launch(args) -> int:
    code, _ = launch(args.overrides, args.override_budget)
    return code
