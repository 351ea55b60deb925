"""`ladder promote`: launch the best K points of a finished sweep at another rung, with lineage.

    ladder promote --sweep lr-sweep --to 70b --top 3 --metric reverse launcher=slurm   # the best 3, at 70B
    ladder promote --sweep lr-sweep --to 70b --top 3 --metric average --dry-run        # print, launch nothing
    ladder promotion-report --sweep lr-sweep        # later: did the ranking hold?
                                                    # (launch/promotion/promotion_report.py)

**Points.** A sweep is the ledger's jobs whose sweep.name is NAME. A point is one run directory,
and its latest job says where it stands (a preempted run resumed by a later job is one point).
Points whose latest job completed are ranked. A point still pending or running stops the
promotion (--allow-running ranks the finished ones anyway); failed, preempted and cancelled
points are left out, and the output says so.

**Score** (evals/store/run_scores.py). A point's score is that of its run's last registered checkpoint on
--metric: a task of the eval suite (`reverse`, or `reverse/exact_match` as `ladder compare`
prints it) or `average` over the suite's tasks, counting only results scored with the suite's
current settings, as `ladder leaderboard` does. Give the eval overrides the runs were scored
with (eval=cpu eval.max_examples=100). Nothing is evaluated here. Ties are broken by run name.

**Transfer.** A promoted job keeps every override of its point (seed, data, recipe knobs, steps,
eval, run root) except those that belong to the scale: `rung=`, `rung.*`, `model=` and
`model.*` (the target rung picks its model and hardware), plus `trainer.run_name`,
`trainer.resume` and `sweep.*`. It gets `rung=<to>`, `sweep.name=<sweep>@<to>` (or --as NAME),
`trainer.run_name=<the point's run>-<to>` (or -<NAME>), then the overrides given to `ladder
promote`, last, so they win (launcher=slurm, trainer.max_steps=...). A LoRA point's adapter is its
method, not its scale: model.lora.* and model.quantize are carried whole from the point's resolved
config (so a LoRA point is never promoted as full fine-tuning), and the ledger records them
(jobs.adapter). The learning rate transfers by the ladder's rule (training/config/validate.py:
optim.lr when set, else rung.lr x recipe.lr_scale x model.lora.lr_scale with LoRA): a point that
used its rung's rate gets the target rung's rate (no optim.lr); a point that set its own keeps
its ratio to its rung's configured rate:

    optim.lr(promoted) = lr(point) x rung.lr(target) / rung.lr(point's rung, configs/rung/)

(LoRA's lr_scale, on both sides, cancels out of that ratio.)

**Budget.** The K jobs are composed, validated and planned first (one that does not fit stops
them all); then their planned GPU-hours together are checked against the team's budget and
recorded in one ledger transaction, so a promotion is launched whole or not at all
(--override-budget REASON launches it anyway and records the reason).

**Lineage.** Each promoted job gets a row in the ledger's `promotions` table (launch/accounting/ledger.py):
the point's job id, run, scored checkpoint, score, rank and learning rate; the metric, the eval
suite and its settings; and the promoted job's id, run, learning rate and overrides.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from evals.store.run_scores import Metric, available_metrics, parse_metric, run_score
from launch.accounting.ledger import ACTIVE, Ledger
from launch.console import make_console, num
from training.common.errors import BudgetError, ConfigError, EvalError
from training.common.store import safe_text  # run names read back from the ledger may hold anything
from training.config.compose import load_saved

SCALE_GROUPS = ("rung", "model")  # their overrides belong to the rung, not to the point
REPLACED = (
    "trainer.run_name",
    "trainer.resume",
    "sweep",
    "optim.lr",
)  # set anew for the promoted job
# In model.* but the point's method, not the rung's scale: a LoRA point is promoted as LoRA, with
# the adapter its run resolved (whether its overrides or a config file set it), never dropped to
# full fine-tuning at its LoRA-scaled rate.
METHOD = ("model.lora", "model.quantize")
RESERVED = (
    "sweep",
    "trainer.run_name",
)  # with `rung=`: not given to promote, --to and --as set them


@dataclass
class Point:
    """One run of the sweep: its run directory, its latest job and, once scored, its score and rank."""

    run_dir: str
    job: dict
    checkpoint: dict | None = None
    score: float | None = None
    rank: int | None = None

    @property
    def run_name(self) -> str:
        return self.job["run_name"] or Path(self.run_dir).name

    @property
    def state(self) -> str:
        return self.job["state"]


@dataclass
class Transfer:
    """What a point becomes at the target rung."""

    overrides: list[str]
    point_lr: float
    child_lr: float
    rule: str  # how the learning rate was transferred, in words
    not_carried: list[str]


def override_key(ov: str) -> str:
    return ov.lstrip("~+").partition("=")[0]


def _in(key: str, names: tuple[str, ...]) -> bool:
    return any(key == n or key.startswith(n + ".") for n in names)


# ---- the sweep's points ---------------------------------------------------------------------


def sweep_points(ledger: Ledger, sweep: str) -> list[Point]:
    jobs = ledger.sweep_jobs(sweep)
    if not jobs:
        known = ledger.sweeps()
        raise ConfigError(
            f"--sweep {sweep}: no jobs of that sweep in the ledger {ledger.path}; sweeps there: "
            + (", ".join(f"{s} ({n} jobs)" for s, n in known.items()) or "none")
        )
    if any(j["state"] in ACTIVE for j in jobs):
        try:  # a job whose process has died is recorded from its heartbeat first (launch/commands/status_cmd.py)
            from launch.commands.status_cmd import refresh

            jobs = refresh(ledger, jobs)
        except (ImportError, OSError):
            pass
    latest: dict[str, dict] = {}
    for j in jobs:  # by id: the last job of a run directory is where the run stands
        latest[j["run_dir"] or f"job-{j['id']}"] = j
    return [Point(run_dir, job) for run_dir, job in latest.items()]


def rank_points(
    ledger: Ledger,
    sweep: str,
    top: int,
    metric: Metric,
    cfg: DictConfig,
    allow_running: bool = False,
) -> tuple[list[Point], list[str]]:
    """The sweep's finished points ranked by score (1 = best), and notes for the user; raises
    ConfigError or EvalError when the sweep cannot be promoted as asked."""
    points = sweep_points(ledger, sweep)
    active = [p for p in points if p.state in ACTIVE]
    if active and not allow_running:
        raise ConfigError(
            f"sweep {sweep!r} has {len(active)} job(s) still pending or running: "
            + ", ".join(f"job {p.job['id']} {p.run_name} ({p.state})" for p in active)
            + "; wait for them (`ladder status --sweep`), cancel them, or pass --allow-running "
            "to rank the finished points only"
        )
    finished = [p for p in points if p.state == "completed"]
    left_out = [p for p in points if p.state not in ACTIVE and p.state != "completed"]
    if top < 1:
        raise ConfigError(f"--top {top}: promote at least one configuration")
    if top > len(finished):
        why = f"--top {top}, but sweep {sweep!r} has {len(finished)} finished point(s)"
        if left_out:
            why += (
                f"; {len(left_out)} more ended {'/'.join(sorted({p.state for p in left_out}))}: "
                + ", ".join(p.run_name for p in left_out)
            )
        if active:
            why += f"; {len(active)} still running"
        raise ConfigError(why + (f"; use --top {len(finished)} or less" if finished else ""))
    rungs = sorted({p.job["rung"] for p in finished})
    if len(rungs) > 1:
        raise ConfigError(
            f"sweep {sweep!r} has finished runs at several rungs ({', '.join(rungs)}); "
            "a promotion goes from one rung to the next"
        )
    cache: dict = {}
    for p in finished:
        p.checkpoint, p.score = run_score(p.run_dir, cfg, metric, cache)
    unscored = [p for p in finished if p.score is None]
    if unscored:
        if len(unscored) == len(finished):
            which = f"none of the sweep's {len(finished)} finished run(s) has a score for it"
        else:
            which = (
                f"{len(unscored)} of the sweep's {len(finished)} finished runs have no score for it: "
                + ", ".join(
                    f"{p.run_name} ({p.checkpoint['path'] if p.checkpoint else 'no registered checkpoint'})"
                    for p in unscored
                )
            )
        raise EvalError(
            f"--metric {metric.name} with eval suite {cfg.eval.name!r}: {which}. For the last checkpoints of "
            f"these runs {available_metrics([p.run_dir for p in finished], cfg, metric, cache)}. "
            "Pick one of those, with the eval "
            "overrides the runs were scored with, or score the runs' last checkpoints first: "
            f"`ladder eval CKPT eval={cfg.eval.name} ...`"
        )
    ranked = sorted(finished, key=lambda p: (-p.score, p.run_name))
    for i, p in enumerate(ranked, 1):
        p.rank = i
    notes = []
    if top < len(ranked) and ranked[top - 1].score == ranked[top].score:
        notes.append(
            f"points ranked {top} and {top + 1} tie at {ranked[top].score:.4g}; the tie was broken "
            "by run name"
        )
    if left_out:
        notes.append(
            "left out (not completed): " + ", ".join(f"{p.run_name} ({p.state})" for p in left_out)
        )
    if active:
        notes.append("still running, not ranked: " + ", ".join(p.run_name for p in active))
    return ranked, notes


def registry_examples(metric: Metric, cfg: DictConfig):
    """examples_of(point) for choose_points: its scored checkpoint's per-example rows per task."""
    from evals.analysis.points import checkpoint_examples
    from evals.store.run_scores import registry_for

    cache: dict = {}

    def examples_of(p: Point) -> dict | None:
        registry = registry_for(p.run_dir, cfg, cache)
        if registry is None or p.checkpoint is None:
            return None
        return checkpoint_examples(registry, p.checkpoint, metric.keys)

    return examples_of


def choose_points(
    ranked: list[Point], top: int, examples_of, strict: bool
) -> tuple[list[Point], list[str]]:
    """The top K points by their mean over seeds (launch/promotion/noise.py), each as its first
    replicate, scored with the point's mean and ranked among points; and the note on the cut
    between the K-th and the (K+1)-th when seed or example noise does not separate them
    (--strict: a ConfigError instead)."""
    from launch.promotion.noise import rank_by_point

    groups, cut = rank_by_point(ranked, top, examples_of)
    chosen = []
    for i, g in enumerate(groups[:top], 1):
        rep = g.representative
        rep.score, rep.rank = g.mean, i
        chosen.append(rep)
    if cut is None or cut.separable:
        return chosen, []
    if strict:
        raise ConfigError(
            f"--strict: {cut.note(top)}; refusing to promote. Add seeds to the sweep "
            "(sweep.seeds=N), evaluate on more examples, or choose another --top"
        )
    return chosen, [cut.note(top)]


# ---- transfer ----------------------------------------------------------------------------------


def job_overrides(job: dict) -> list[str]:
    """The overrides a job was launched with: the ledger's record, else the run's own files."""
    if job.get("overrides"):
        return list(json.loads(job["overrides"]))
    run_dir = Path(job["run_dir"] or "")
    try:  # a SLURM submission record (launch/commands/launch_cmd.py)
        return list(json.loads((run_dir / "launch.json").read_text())["overrides"])
    except (OSError, KeyError, ValueError):
        pass
    try:  # the trainer's command line: python -m launch.train (or training.run.trainer) OVERRIDES...
        argv = json.loads((run_dir / "run_meta.json").read_text())["argv"]
        if argv and Path(argv[0]).parts[-2:] in (("launch", "train.py"), ("run", "trainer.py")):
            return list(argv[1:])
    except (OSError, KeyError, ValueError):
        pass
    raise ConfigError(
        f"job {job['id']} ({job['run_name']}) was recorded without its overrides (an older "
        f"ledger) and {run_dir} does not name them either; relaunch the point with `ladder launch`"
    )


def run_config(point: Point) -> DictConfig:
    """The point's resolved config: the run's config.yaml, else its registered checkpoint's."""
    path = Path(point.run_dir) / "config.yaml"
    if path.is_file():
        return load_saved(
            path
        )  # a run folder is input: a live interpolation is refused, not resolved
    if point.checkpoint and point.checkpoint.get("config_json"):
        return OmegaConf.create(json.loads(point.checkpoint["config_json"]))
    raise ConfigError(
        f"{point.run_name}: no resolved config at {path}; cannot transfer its learning rate"
    )


def point_lr(point: Point) -> float:
    from training.config.validate import effective_lr

    return effective_lr(run_config(point))


def configured_rung_lr(rung: str, fallback: float, cache: dict) -> float:
    """rung.lr as configs/rung/<rung>.yaml sets it (the point may have overridden it)."""
    from training.config.compose import compose

    if rung not in cache:
        try:
            cache[rung] = compose([f"rung={rung}"]).rung.lr
        except ConfigError:  # the rung's file is gone: its run's own value is all there is
            cache[rung] = fallback
    return cache[rung]


def adapter_overrides(pcfg: DictConfig) -> list[str]:
    """A LoRA point's adapter as overrides, read from its resolved config; [] for full fine-tuning."""
    from training.model import lora

    rec = lora.adapter_record(pcfg)
    if rec is None:
        return []
    listed = {k: "[" + ",".join(rec[k]) + "]" for k in ("target_modules", "modules_to_save")}
    return [
        "model.lora.enabled=true",
        f"model.lora.r={rec['r']}",
        f"model.lora.alpha={rec['alpha']}",
        f"model.lora.dropout={rec['dropout']!r}",
        f"model.lora.target_modules={listed['target_modules']}",
        f"model.lora.modules_to_save={listed['modules_to_save']}",
        f"model.lora.lr_scale={float(pcfg.model.lora.lr_scale)!r}",
        f"model.quantize={rec['quantize']}",
    ]


def transfer(
    point: Point, to: str, to_sweep: str, run_name: str, extra: list[str], lr_cache: dict
) -> Transfer:
    from training.config.compose import compose
    from training.config.validate import effective_lr, lora_lr_scale

    given = job_overrides(point.job)
    extra_keys = {override_key(ov) for ov in extra}
    pcfg = run_config(point)
    adapter = [ov for ov in adapter_overrides(pcfg) if override_key(ov) not in extra_keys]
    keep, not_carried = [], []
    for ov in given:
        key = override_key(ov)
        if _in(key, METHOD):
            continue  # a LoRA point's adapter is carried whole from its resolved config (adapter)
        if _in(key, SCALE_GROUPS) and key != "rung":
            not_carried.append(ov)
        elif not (_in(key, SCALE_GROUPS) or _in(key, REPLACED) or key in extra_keys):
            keep.append(ov)
    base = [
        *keep,
        *adapter,
        f"rung={to}",
        f"sweep.name={to_sweep}",
        f"trainer.run_name={run_name}",
    ]
    point_lr = effective_lr(pcfg)
    from_lr = (
        configured_rung_lr(pcfg.rung.name, pcfg.rung.lr, lr_cache)
        * pcfg.recipe.lr_scale
        * lora_lr_scale(pcfg)
    )
    ratio = point_lr / from_lr
    probe = compose([*base, *extra])
    to_lr = probe.rung.lr * probe.recipe.lr_scale * lora_lr_scale(probe)
    if "optim.lr" in extra_keys:
        child_lr, rule = effective_lr(probe), "optim.lr given to promote"
        lr_override = []
    elif math.isclose(ratio, 1.0, rel_tol=1e-9):
        child_lr, rule = to_lr, f"the rung's rate, as at {pcfg.rung.name}"
        lr_override = []
    else:
        child_lr = ratio * to_lr
        rule = f"{ratio:.4g} x the rung's rate, as at {pcfg.rung.name}"
        lr_override = [f"optim.lr={child_lr!r}"]
    return Transfer([*base, *lr_override, *extra], point_lr, child_lr, rule, not_carried)


# ---- promote -------------------------------------------------------------------------------------


def promote(
    sweep: str,
    to: str,
    top: int,
    metric: str,
    overrides: list[str],
    as_name: str | None = None,
    dry_run: bool = False,
    allow_running: bool = False,
    override_reason: str | None = None,
    strict: bool = False,
) -> int:
    from launch.accounting.budget import check_and_record_many, team_standing
    from launch.commands.launch_cmd import get_launcher, ledger_fields, prepare
    from training.config.compose import compose, group_options

    cfg = compose(overrides)
    rungs = group_options().get("rung", [])
    if to not in rungs:
        raise ConfigError(
            f"--to {to}: no such rung; the rungs are {', '.join(rungs)} (configs/rung/)"
        )
    reserved = [
        ov for ov in overrides if override_key(ov) == "rung" or _in(override_key(ov), RESERVED)
    ]
    if reserved:
        raise ConfigError(
            f"{' '.join(reserved)}: promote sets the rung (--to), the sweep name (--as) and the "
            "run names itself"
        )
    ledger = Ledger.existing(cfg)
    if ledger is None:
        raise ConfigError(
            f"no ledger at {cfg.ledger.url}: launch the sweep with `ladder launch` first, or point "
            "at its run root (trainer.run_root=...)"
        )
    m = parse_metric(metric, cfg.eval)
    ranked, notes = rank_points(ledger, sweep, top, m, cfg, allow_running)
    from_rung = ranked[0].job["rung"]
    if from_rung == to:
        raise ConfigError(
            f"--to {to}: sweep {sweep!r} already ran at rung {to}; promote to another rung"
        )
    to_sweep = as_name or f"{sweep}@{to}"
    if ledger.sweep_jobs(to_sweep):
        raise ConfigError(
            f"sweep {to_sweep!r} already has jobs in the ledger (an earlier promotion?); "
            "name the new one with --as NAME"
        )
    chosen, cut_notes = choose_points(ranked, top, registry_examples(m, cfg), strict)
    notes = cut_notes + notes
    lr_cache: dict = {}
    suffix = to if as_name is None else as_name  # each promotion its own run directories
    transfers = [
        transfer(p, to, to_sweep, f"{p.run_name}-{suffix}", overrides, lr_cache) for p in chosen
    ]
    jobs = []
    for p, t in zip(chosen, transfers):
        try:
            jobs.append(prepare(t.overrides)[1][0])
        except ConfigError as e:
            raise ConfigError(f"promoting {p.run_name} to {to}: {e}") from None
    problems = []
    for job in jobs:
        if job.run_dir.exists():
            problems.append(f"{job.run_dir} already exists (its run would be resumed, not started)")
        if not ledger.same_as(job.cfg.ledger.url):
            problems.append(
                f"{job.run_name} would be recorded in another ledger ({job.cfg.ledger.url}); "
                "give promote the sweep's trainer.run_root / ledger.url"
            )
    if len({j.run_dir for j in jobs}) < len(jobs):
        problems.append(
            "two promoted jobs would share a run directory; their points' run names collide"
        )
    if len({j.cfg.launcher.name for j in jobs}) > 1 or len({j.cfg.budget.team for j in jobs}) > 1:
        problems.append(
            "the promoted jobs would use different launchers or budgets; set launcher= and budget= "
            "for all of them"
        )
    if problems:
        raise ConfigError("cannot promote:\n  - " + "\n  - ".join(problems))

    budget = jobs[0].cfg.budget
    planned = sum(j.plan.gpu_hours for j in jobs)
    allocation, period, charged = team_standing(ledger, budget)
    left = allocation["gpu_hours"] - charged["committed"]
    render_plan(
        sweep, to_sweep, from_rung, to, m, cfg.eval.name, ranked, chosen, transfers, jobs, notes
    )
    fits = planned <= left
    print(
        f"budget: {len(jobs)} job(s) plan {num(planned, 3)} GPU-hours together; team '{budget.team}' has "
        f"{num(max(left, 0.0), 3)} of {num(allocation['gpu_hours'])} left in {period}: "
        + (
            "fits"
            if fits
            else f"over by {num(planned - left, 3)}"
            + (
                f", launched anyway: --override-budget {override_reason!r}"
                if override_reason
                else ", so nothing would be launched (pass --override-budget REASON)"
            )
        )
    )
    if dry_run:
        print("--dry-run: nothing launched or recorded")
        return 0 if fits or override_reason else 1

    launcher = get_launcher(jobs[0].cfg)
    records = [(j.plan.gpu_hours, ledger_fields(j, sweep=to_sweep)) for j in jobs]
    try:
        # new_sweep: checked again under a lock with the insert, so two promotions to one target
        # sweep at the same moment are serialised: the second finds the first's jobs and stops.
        ids = check_and_record_many(
            ledger, budget, records, override_reason=override_reason, new_sweep=to_sweep
        )
    except BudgetError as e:
        raise BudgetError(f"promoting the top {top} of {sweep!r} to {to}: {e}") from None
    eval_json = json.dumps(OmegaConf.to_container(cfg.eval, resolve=True, enum_to_str=True))
    with ledger.transaction() as db:
        for p, t, job, job_id in zip(chosen, transfers, jobs, ids):
            job.job_id = job_id
            ledger.insert_promotion(
                db,
                from_sweep=sweep,
                to_sweep=to_sweep,
                from_rung=from_rung,
                to_rung=to,
                metric=m.name,
                suite=cfg.eval.name,
                eval_json=eval_json,
                points=len(ranked),
                parent_job_id=p.job["id"],
                parent_run_name=p.run_name,
                parent_run_dir=p.run_dir,
                parent_checkpoint=p.checkpoint["path"],
                parent_score=p.score,
                parent_rank=p.rank,
                parent_lr=t.point_lr,
                child_job_id=job_id,
                child_run_name=job.run_name,
                child_run_dir=str(job.run_dir),
                child_lr=t.child_lr,
                overrides=json.dumps(job.overrides),
            )
    print(
        f"ladder promote: sweep {to_sweep} recorded in {ledger.where} as job(s) {', '.join(map(str, ids))}, "
        f"with their lineage; {num(planned, 3)} GPU-hours planned",
        flush=True,
    )
    try:
        code = launcher.start(jobs, ledger)
    except KeyboardInterrupt:
        code = 130
    where = [
        ov for ov in overrides if _in(override_key(ov), ("trainer.run_root", "ledger", "registry"))
    ]
    print(
        f"ladder promote: once the promoted runs are evaluated: ladder promotion-report --sweep {sweep}"
        + "".join(f" {ov}" for ov in where),
        flush=True,
    )
    return code


def render_plan(
    sweep, to_sweep, from_rung, to, metric: Metric, suite, ranked, chosen, transfers, jobs, notes
) -> None:
    from rich.table import Table

    console = make_console()
    console.print(
        f"promote the top {len(chosen)} of {len(ranked)}: sweep {sweep} ({from_rung}) -> sweep {to_sweep} "
        f"({to}), ranked by {metric.name} (suite {suite})",
        highlight=False,
    )
    t = Table()
    for col, right in (
        ("rank", True),
        ("point", False),
        (metric.name, True),
        ("lr", True),
        ("promoted run", False),
        (f"lr at {to}", True),
        ("GPU-hours", True),
    ):
        t.add_column(col, justify="right" if right else "left", overflow="fold")
    by_point = {p.run_dir: (tr, j) for p, tr, j in zip(chosen, transfers, jobs)}
    for p in ranked:
        tr, job = by_point.get(p.run_dir, (None, None))
        t.add_row(
            str(p.rank),
            safe_text(p.run_name),
            f"{p.score:.4g}",
            f"{point_lr(p):.3g}",
            safe_text(job.run_name) if job else "-",
            f"{tr.child_lr:.3g}" if tr else "-",
            num(job.plan.gpu_hours, 3) if job else "-",
            style=None if job else "dim",
        )
    console.print(t)
    for p, tr, job in zip(chosen, transfers, jobs):
        console.print(
            f"{job.run_name} (from job {p.job['id']}, lr: {tr.rule}):\n  ladder launch "
            + " ".join(shlex.quote(ov) for ov in tr.overrides),
            soft_wrap=True,
            highlight=False,
        )
        if tr.not_carried:
            console.print(
                f"  not carried (they belong to the rung): {' '.join(tr.not_carried)}",
                highlight=False,
            )
    for note in notes:
        console.print(f"note: {note}", highlight=False)


def cmd_promote(args) -> int:
    return promote(
        args.sweep,
        args.to,
        args.top,
        args.metric,
        args.overrides,
        as_name=args.as_name,
        dry_run=args.dry_run,
        allow_running=args.allow_running,
        override_reason=args.override_budget,
        strict=getattr(args, "strict", False),
    )
