"""`ladder launch [-m] [overrides] [--dry-run] [--wait] [--override-budget REASON]`.

    ladder launch rung=tiny trainer.max_steps=200                     # run here, now
    ladder launch -m optim.lr=1e-5,2e-5,5e-6 trainer.seed=1,2         # a sweep of six jobs
    ladder launch rung=70b launcher=slurm launcher.account=llm --dry-run   # print plan and script
    ladder launch rung=8b launcher=slurm -m optim.lr=5e-6,1e-5 --wait # a job array; wait for it

For every job (every point of a sweep) it composes and validates the config and plans it
(launch/planning/plan.py), refusing one that does not fit. Then it checks the planned GPU-hours of all
the jobs together against the team's budget and records them in the ledger in one transaction
(launch/accounting/budget.py): a sweep is launched whole or not at all. Then the launcher named by
`launcher=` runs them:
  local   one after the other on this machine (torchrun for several devices), each recorded
          with the hours it used, its final state and its waste when it exits
  slurm   submitted with sbatch (launch/cluster/slurm_script.py renders the script), a sweep whose
          points share a shape as one job array; `ladder status` and `--wait` follow them
The trainer knows nothing about either.

A job whose run directory already holds a checkpoint resumes it, and is checked as the trainer
will check it before anything is recorded: a config change to the math is refused (exit status 2)
unless trainer.allow_config_change=true, and then the ledger records it (jobs.config_changes). A
run that already reached trainer.max_steps is reported and skipped: nothing is launched or
recorded for it, and the exit status is 0, since what was asked for already holds (a rerun of a
whole sweep launches only its unfinished points).
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from launch.cluster.slurm_script import log_dir_of  # noqa: F401  (here too for its older callers)
from launch.console import num
from training.common.errors import ConfigError, LadderError
from training.common.safe_files import write_atomic
from training.common.store import (  # a reason read back from the ledger may hold anything
    StoreUnavailable,
    safe_text,
)

STOP_GRACE_S = 60  # after a second Ctrl-C, how long the trainer gets to write its last heartbeat


@dataclass
class Job:
    """One job of a launch: its overrides, composed config, plan and ledger id."""

    overrides: list[str]
    cfg: DictConfig
    plan: object
    run_name: str
    run_dir: Path
    job_id: int | None = None
    finished_at: int | None = None  # the step an already finished run is at: nothing to launch
    config_changes: list = field(
        default_factory=list
    )  # what a resume applies (trainer.allow_config_change)
    allow_contamination: bool = (
        False  # --allow-contamination: launched although its data leaks into its evals
    )
    allow_unchecked: bool = (
        False  # --allow-unchecked: launched though some eval tasks were not read
    )


class Launcher:
    name = "base"

    def check(self, cfg: DictConfig) -> None:
        """Refuse what this launcher cannot run, before anything is recorded."""

    def start(self, jobs: list[Job], ledger, dry_run: bool = False) -> int:
        raise NotImplementedError


class LocalLauncher(Launcher):
    """The trainer as a subprocess of this one, torchrun for several devices on this node."""

    name = "local"

    def check(self, cfg: DictConfig) -> None:
        if cfg.rung.nodes > 1:
            raise ConfigError(
                f"launcher=local runs on this machine only, but rung.nodes={cfg.rung.nodes}; "
                "use rung.nodes=1 or launcher=slurm"
            )

    @staticmethod
    def command(cfg: DictConfig, overrides: list[str]) -> list[str]:
        # The trainer leaves its unfinished evaluations to an eval job of their own (run_evals_left),
        # so the job's record ends when training does.
        overrides = [*overrides, "trainer.eval_handoff=true"]
        if cfg.rung.gpus_per_node == 1:
            return [sys.executable, "-m", "launch.train", *overrides]
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={cfg.rung.gpus_per_node}",
            "-m",
            "launch.train",
            *overrides,
        ]

    def start(self, jobs: list[Job], ledger, dry_run: bool = False) -> int:
        if dry_run:
            for job in jobs:
                print("would run: " + " ".join(self.command(job.cfg, job.overrides)))
            return 0
        worst = 0
        for i, job in enumerate(jobs):
            try:
                if ledger.job(job.job_id)["state"] != "pending":  # cancelled while it waited
                    continue
                ledger.mark_started(job.job_id)
            except StoreUnavailable as e:
                raise StoreUnavailable(
                    f"{e}; job {job.job_id} is recorded as pending but not as started, so nothing "
                    "was trained (the next `ladder status` releases its planned hours)"
                ) from None
            try:
                code = self.run(
                    job.cfg,
                    job.overrides,
                    on_start=lambda pid, job_id=job.job_id: record_trainer(ledger, job_id, pid),
                )  # with its host
                final = record_end(ledger, job, code)
            except KeyboardInterrupt:
                try:
                    # A trainer that took the Ctrl-C finished its step and checkpointed: interrupted,
                    # as `ladder train` records it, with only the steps since that checkpoint wasted
                    final = ledger.finish_from_heartbeat(
                        job.job_id, cancelled=not stopped_itself(job.run_dir)
                    )
                    report_final(final)
                    for rest in jobs[i + 1 :]:  # never started: cancelled, nothing used
                        ledger.update_job(
                            rest.job_id,
                            state="cancelled",
                            reason="launch interrupted before it ran",
                            finished_at=time.time(),
                        )
                except StoreUnavailable as e:  # status settles them: this one from its run folder
                    from launch.accounting.reconcile import end_not_recorded

                    print(
                        f"ladder launch: error: {end_not_recorded(job.job_id, job.run_dir, e)}",
                        file=sys.stderr,
                        flush=True,
                    )
                raise
            if final is None:  # its end could not be recorded: said, and left to `ladder status`
                worst = worst or 1
                continue
            report_final(final)
            worst = worst or code
            if final["state"] == "completed":
                self.run_evals_left(job)
        return worst

    @staticmethod
    def run_evals_left(job: Job) -> None:
        """The evaluations the finished run handed off, as local eval jobs in the ledger. Their
        failure is reported, not raised: the training job itself succeeded."""
        from evals.async_eval import read_pending
        from launch.commands.eval_cmd import run_pending

        if not read_pending(job.run_dir):
            return
        print(
            f"ladder launch: job {job.job_id}: evaluating what the run left (eval jobs of their own)",
            flush=True,
        )
        try:
            run_pending(job.run_dir, job.overrides)
        except LadderError as e:
            print(
                f"ladder launch: the evaluations of {job.run_dir} were not run ({e}); run them with "
                f"`ladder eval --pending {job.run_dir} ...`",
                flush=True,
            )

    def run(self, cfg: DictConfig, overrides: list[str], on_start: Callable[[str], None]) -> int:
        proc = subprocess.Popen(self.command(cfg, overrides))
        on_start(str(proc.pid))
        # A SIGTERM to the launcher (a scheduler's preemption, `kill`) goes to the trainer, which
        # checkpoints and exits as preempted; the ledger then records that, not a vanished job.
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the trainer too (same process group). Its first one finishes the step
            # and checkpoints, which takes as long as it takes (its watchdog bounds a hung step):
            # wait for it. A second Ctrl-C stops the trainer at once too; it gets STOP_GRACE_S to
            # record that, then it is killed.
            print(
                "ladder launch: Ctrl-C: the trainer finishes its step and checkpoints; Ctrl-C "
                "again stops it at once",
                file=sys.stderr,
                flush=True,
            )
            try:
                proc.wait()
            except KeyboardInterrupt:
                try:
                    proc.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)


def stopped_itself(run_dir) -> bool:
    """Whether the trainer recorded its own stop on Ctrl-C (its heartbeat says interrupted)."""
    from training.run.heartbeat import read_heartbeat

    hb = read_heartbeat(run_dir) if run_dir else None
    return bool(hb) and hb.get("state") == "interrupted"


def record_trainer(ledger, job_id: int, pid: str) -> None:
    """The trainer's PID, host and start; through an outage it trains on regardless, and `ladder
    status` finds its process in its heartbeat (launch/accounting/reconcile.py)."""
    try:
        ledger.record_pid(job_id, pid)
    except StoreUnavailable as e:
        print(
            f"ladder launch: job {job_id}: its trainer (pid {pid}) is not recorded: {e}; it trains "
            "on, and `ladder status` finds it by its heartbeat",
            file=sys.stderr,
            flush=True,
        )


def record_end(ledger, job: Job, code: int) -> dict | None:
    """The job's final record from its heartbeat; None, said in one line, if the ledger stayed
    unreachable (the next `ladder status` writes it from the run folder)."""
    from launch.accounting.reconcile import end_not_recorded

    try:
        final = ledger.job(job.job_id)
        if final["state"] != "cancelled":  # `ladder cancel` has already recorded it
            final = ledger.finish_from_heartbeat(job.job_id, exit_code=code)
        return final
    except StoreUnavailable as e:
        print(
            f"ladder launch: error: {end_not_recorded(job.job_id, job.run_dir, e)}",
            file=sys.stderr,
            flush=True,
        )
        return None


class SlurmLauncher(Launcher):
    """sbatch: one script per job, or one job array per group of sweep points of the same shape."""

    name = "slurm"

    def check(self, cfg: DictConfig) -> None:
        from launch.cluster.slurm_script import check

        check(cfg, log_dir_of(cfg))

    def start(self, jobs: list[Job], ledger, dry_run: bool = False) -> int:
        from launch.cluster.slurm_script import Point, render, submit_script
        from training.run.checkpoint import git_commit

        commit = git_commit()
        for group in shape_groups(jobs):
            cfg = group[0].cfg
            name = cfg.sweep.name if len(group) > 1 and cfg.sweep.name else group[0].run_name
            plan_line = "; ".join(
                f"{j.run_name}: {num(j.plan.gpu_hours, 2)} GPU-hours, "
                f"{num(j.plan.wall_clock_h, 2)} h"
                for j in group
            )
            log_dir = log_dir_of(cfg)
            points = [Point(j.run_dir, j.overrides) for j in group]
            if dry_run:
                print(
                    render(
                        cfg,
                        points,
                        name=name,
                        log_dir=log_dir,
                        submit_dir=Path.cwd(),
                        commit=commit,
                        plan_line=plan_line,
                    )
                )
                continue
            r = cfg.rung
            try:
                script_path, ids = submit_script(
                    cfg,
                    points,
                    name,
                    log_dir,
                    commit,
                    plan_line,
                    what=(
                        f"asked for rung.nodes={r.nodes} x rung.gpus_per_node={r.gpus_per_node} on partition "
                        f"{cfg.launcher.partition or '(default)'}, time {cfg.launcher.time or '(default)'}"
                    ),
                )
            except Exception as e:
                for j in group:
                    ledger.update_job(
                        j.job_id, state="failed", reason=str(e), finished_at=time.time()
                    )
                raise
            for j, ext in zip(group, ids):
                # the run folder first: if the ledger is away, `ladder status` reads the id there
                write_launch_record(j, ext, script_path, log_dir / f"{ext}.out", commit)
                try:
                    ledger.update_job(j.job_id, external_id=ext)
                except StoreUnavailable as e:
                    raise StoreUnavailable(
                        f"{e}; job {j.job_id} was submitted as SLURM job {ext}, which the ledger "
                        f"does not hold yet: the next `ladder status` records it from "
                        f"{j.run_dir / 'launch.json'}"
                    ) from None
                print(
                    f"ladder launch: job {j.job_id} submitted as SLURM job {ext}: run {j.run_dir}",
                    flush=True,
                )
        return 0


LAUNCHERS: dict[str, type[Launcher]] = {"local": LocalLauncher, "slurm": SlurmLauncher}


def get_launcher(cfg: DictConfig) -> Launcher:
    name = cfg.launcher.name
    if name not in LAUNCHERS:
        raise ConfigError(
            f"launcher={name} is not available in this version; available: {', '.join(LAUNCHERS)}"
        )
    return LAUNCHERS[name]()


def shape_groups(jobs: list[Job]) -> list[list[Job]]:
    """Sweep points that share launcher and hardware settings: one job array each."""
    groups: dict[str, list[Job]] = {}
    for j in jobs:
        r = j.cfg.rung
        key = OmegaConf.to_yaml(j.cfg.launcher) + f"{r.nodes}x{r.gpus_per_node}:{r.device}"
        groups.setdefault(key, []).append(j)
    return list(groups.values())


def write_launch_record(
    job: Job, external_id: str, script: Path, log: Path, commit: str | None
) -> None:
    """The submission, beside the run: config snapshot, commit, script and log paths."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    # As composed (every value resolved, a literal `${` escaped): resolve=True would write it live.
    # Under the run folder: a temporary name, renamed, never through a planted link.
    write_atomic(job.run_dir / "launch_config.yaml", OmegaConf.to_yaml(job.cfg))
    write_atomic(
        job.run_dir / "launch.json",
        json.dumps(
            {
                "ledger_job": job.job_id,
                "launcher": job.cfg.launcher.name,
                "external_id": external_id,
                "script": str(script),
                "log": str(log),
                "git_commit": commit,
                "overrides": job.overrides,
                "submitted_at": time.time(),
            },
            indent=2,
        )
        + "\n",
    )


def config_hash(cfg: DictConfig) -> str:
    return hashlib.sha256(OmegaConf.to_yaml(cfg, sort_keys=True).encode()).hexdigest()[:16]


def prepare(
    overrides: list[str], multirun: bool = False, direct: bool = False
) -> tuple[str | None, list[Job]]:
    """Compose, validate and plan every job of the launch; raise before anything is recorded.
    direct: a `ladder train` already running where it was started (by hand, srun, torchrun), so
    no launcher's limits apply (launch/accounting/train_record.py)."""
    from launch.accounting.ledger import Ledger, check_name
    from launch.cluster.sweep import expand, name_points
    from launch.planning.plan import fix_message, make_plan
    from training.config.compose import compose
    from training.config.validate import validate

    sweep_name = None
    points = [overrides]
    first = None if multirun else compose(overrides)
    # sweep.seeds=N makes even one point a sweep of its N replicates (launch/cluster/sweep.py);
    # a replicate's own overrides (sweep.point set: its trainer, a promotion) stay one job
    if multirun or (not direct and first.sweep.seeds != 1 and first.sweep.point is None):
        from launch.cluster.sweep import replicate
        from training.run.trainer import default_run_name

        points = expand(overrides) if multirun else points
        first = compose(points[0])
        sweep_name, points = name_points(
            points, first.sweep.name, default_run_name(first), run_name=first.trainer.run_name
        )
        points = replicate(points, first.sweep.seeds, first.trainer.seed)
        multirun = True
    jobs, launchers = [], set()
    for point in points:
        cfg = first if point is overrides and first is not None else compose(point)
        check_name("budget.team", cfg.budget.team)  # at entry: launch, train, promote, dry runs
        launchers.add(cfg.launcher.name)
        if not direct:
            get_launcher(cfg).check(cfg)
        validate(cfg, world_size=cfg.rung.nodes * cfg.rung.gpus_per_node)
        # torch and the trainer load after the config is known good: a mistake is said in a second
        from training.run.run_files import finished_step, resume_point
        from training.run.trainer import default_run_name

        plan = make_plan(cfg, Ledger.existing(cfg))
        where = f" (sweep point {' '.join(point)})" if multirun else ""
        if not plan.fits:
            raise ConfigError(f"the job{where} {fix_message(plan)}")
        run_name = cfg.trainer.run_name or default_run_name(cfg)
        run_dir = (Path(cfg.trainer.run_root) / run_name).resolve()
        # What the trainer would resume, checked now, so a refused config change records nothing.
        try:
            _, step, changes = resume_point(cfg, run_dir, run_name)
        except LadderError as e:
            if not multirun:
                raise
            raise type(e)(f"sweep point {' '.join(point)}: {e}") from None
        jobs.append(
            Job(
                point,
                cfg,
                plan,
                run_name,
                run_dir,
                finished_at=finished_step(cfg, run_dir, step),
                config_changes=[c.as_json() for c in changes.math],
            )
        )
    if len(launchers) > 1:
        raise ConfigError(f"a sweep cannot mix launchers ({', '.join(sorted(launchers))})")
    if len({j.run_dir for j in jobs}) < len(jobs):
        raise ConfigError(
            "two jobs of this launch would share a run directory; give each its own trainer.run_name"
        )
    return sweep_name, jobs


def ledger_fields(j: Job, sweep: str | None = None) -> dict:
    """What the ledger records of a job when it is launched (launch and promote). A local job
    holds this process's identity until its trainer starts (ledger.claim): if the launcher dies
    first, `ladder status` releases it (launch/accounting/reconcile.py)."""
    from launch.accounting.ledger import claim
    from training.data.mixture_config import mixture_record
    from training.model import lora
    from training.run.heartbeat import read_heartbeat

    hb = read_heartbeat(j.run_dir) or {}  # a resumed run: its earlier hours are not this job's
    return dict(
        project=j.cfg.tracker.project,
        sweep=sweep or j.cfg.sweep.name,
        point=j.cfg.sweep.point,
        rung=j.cfg.rung.name,
        run_name=j.run_name,
        run_dir=str(j.run_dir),
        config_hash=config_hash(j.cfg),
        launcher=j.cfg.launcher.name,
        gpus=j.plan.gpus,
        hours_before=float(hb.get("device_hours", 0.0)),
        overrides=json.dumps(j.overrides),
        config_changes=json.dumps(j.config_changes) if j.config_changes else None,
        data_mixture=json.dumps(mixture_record(j.cfg.data)),
        allow_contamination=int(j.allow_contamination),
        allow_unchecked=int(j.allow_unchecked),
        adapter=json.dumps(adapter) if (adapter := lora.adapter_record(j.cfg)) else None,
        **(claim() if j.cfg.launcher.name == "local" else {}),
    )


def launch(
    overrides: list[str],
    override_reason: str | None = None,
    multirun: bool = False,
    dry_run: bool = False,
    wait: bool = False,
    allow_contamination: bool = False,
    allow_unchecked: bool = False,
) -> tuple[int, list[dict]]:
    """Launch a job or a sweep; returns the exit status and the jobs' ledger records."""
    from launch.accounting.budget import check_and_record_many
    from launch.accounting.ledger import Ledger

    sweep_name, jobs = prepare(overrides, multirun)
    from training.config.config_diff import Change
    from training.run.run_files import finished_message  # torch: after a config error is said

    for j in jobs:  # exit status 0: what was asked for (the run trained to max_steps) already holds
        if j.finished_at is not None:
            print(
                "ladder launch: "
                + finished_message(
                    j.run_name, j.finished_at, j.cfg.trainer.max_steps, "nothing launched"
                ),
                flush=True,
            )
    jobs = [j for j in jobs if j.finished_at is None]
    if not jobs:
        return 0, []
    from launch.inspection.contamination import check_jobs

    check_jobs(
        jobs, allow_contamination, allow_unchecked, dry_run=dry_run
    )  # data against its own eval suite, before anything is recorded
    cfg = jobs[0].cfg
    launcher = get_launcher(cfg)
    total = sum(j.plan.gpu_hours for j in jobs)
    what = (
        f"sweep {sweep_name}: {len(jobs)} jobs"
        if sweep_name is not None
        else f"job {jobs[0].run_name}"
    )
    if dry_run:
        print(
            f"ladder launch --dry-run: {what}, {num(total, 3)} GPU-hours planned; nothing submitted or recorded"
        )
        for j in jobs:
            print(
                f"  {j.run_name}: {' '.join(j.overrides) or '(defaults)'}: {j.plan.gpus} device(s), "
                f"{num(j.plan.gpu_hours, 3)} GPU-hours, {num(j.plan.wall_clock_h, 2)} h wall-clock"
            )
        from launch.accounting.budget import dry_run_budget_line

        print(
            dry_run_budget_line(Ledger.existing(cfg), cfg.budget, total, len(jobs), override_reason)
        )
        return launcher.start(jobs, None, dry_run=True), []
    ledger = Ledger.from_config(cfg)
    records = [(j.plan.gpu_hours, ledger_fields(j)) for j in jobs]
    ids = check_and_record_many(ledger, cfg.budget, records, override_reason=override_reason)
    for j, job_id in zip(jobs, ids):
        j.job_id = job_id
    try:
        period = f"{ledger.job(ids[0])['period']}, "
    except StoreUnavailable:
        period = ""
    print(
        f"ladder launch: {what} recorded in {ledger.where} as job(s) {', '.join(map(str, ids))}: team "
        f"{cfg.budget.team}, {period}{num(total, 3)} GPU-hours planned"
        + (f", budget overridden: {override_reason}" if override_reason else ""),
        flush=True,
    )
    for j in jobs:
        if j.config_changes:
            print(
                f"ladder launch: job {j.job_id} resumes {j.run_name} with config changes applied from the next "
                "step (trainer.allow_config_change=true): "
                + "; ".join(str(Change(**c)) for c in j.config_changes),
                flush=True,
            )
    try:
        code = launcher.start(jobs, ledger)
    except KeyboardInterrupt:
        code = 130
    if wait and launcher.name != "local":
        from launch.commands.status_cmd import wait_for

        finals = wait_for(ledger, ids)
        for f in finals:
            report_final(f)
        code = 0 if all(f["state"] == "completed" for f in finals) else 1
    try:
        return code, [ledger.job(i) for i in ids]
    except StoreUnavailable:  # said where it mattered (record_end); status settles them later
        return code or 1, []


def report_final(job: dict) -> None:
    print(
        f"ladder launch: job {job['id']} {job['state']}: used {num(job['used_gpu_hours'], 3)} of "
        f"{num(job['planned_gpu_hours'], 3)} planned GPU-hours, wasted {num(job['waste_gpu_hours'], 3)}"
        + (
            f" ({safe_text(job['reason'], markup=False)})"
            if job["state"] != "completed" and job.get("reason")
            else ""
        ),
        flush=True,
    )


def cmd_launch(args) -> int:
    code, _ = launch(
        args.overrides,
        args.override_budget,
        multirun=args.multirun,
        dry_run=args.dry_run,
        wait=args.wait,
        allow_contamination=args.allow_contamination,
        allow_unchecked=args.allow_unchecked,
    )
    return code
