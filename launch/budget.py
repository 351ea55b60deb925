"""Team GPU-hour budgets: the check a launch makes, and `ladder budget report`.

    ladder budget report                       # every team and period in the ledger
    ladder budget report --plot budget.png     # and a chart
    ladder launch rung=8b --override-budget "deadline for the 8B ablation, approved by J."

configs/budget/<name>.yaml gives a team `gpu_hours` per `period` (week, month, quarter, year,
in UTC). A job is charged to the period it was launched in. What a team has left is its
allocation minus the hours used by finished jobs and, for jobs still pending or running, the
larger of their planned and used hours (a running job has claimed its plan).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from launch.console import make_console, num
from launch.ledger import ACTIVE, Ledger
from training.compose import CONFIG_DIR
from training.errors import BudgetError, ConfigError
from training.schema import BudgetConfig


def period_key(period: str, when: float | None = None) -> str:
    t = time.gmtime(time.time() if when is None else when)
    if period == "week":
        return time.strftime("%G-W%V", t)
    if period == "month":
        return time.strftime("%Y-%m", t)
    if period == "quarter":
        return f"{t.tm_year}-Q{(t.tm_mon - 1) // 3 + 1}"
    if period == "year":
        return str(t.tm_year)
    raise ConfigError(f"budget.period={period!r}: use week, month, quarter or year")


def _name(period) -> str:
    return getattr(period, "value", period)  # an Enum from a typed config, or a plain string


def check_and_record(ledger: Ledger, budget, planned_gpu_hours: float, job: dict,
                     override_reason: str | None = None, now: float | None = None) -> int:
    """Refuse a job whose planned hours exceed what its team has left this period (BudgetError),
    unless an override reason is given; otherwise record it in the ledger. Returns the job id.
    The check and the insert are one transaction, so two launches cannot both take the last hours."""
    return check_and_record_many(ledger, budget, [(planned_gpu_hours, job)], override_reason, now)[0]


def over_budget_message(budget, period: str, charged: dict, planned: float, n_jobs: int) -> str | None:
    """Why `planned` more GPU-hours do not fit the team's period, or None when they do."""
    left = budget.gpu_hours - charged["committed"]
    if planned <= left:
        return None
    what = "this job plans" if n_jobs == 1 else f"these {n_jobs} jobs plan"
    return (f"over budget: {what} {num(planned)} GPU-hours, but team "
            f"'{budget.team}' has {num(max(left, 0))} of its {num(budget.gpu_hours)} GPU-hours left in "
            f"{period} (used {num(charged['used'])}, pending or running {num(charged['running'])}); "
            f"it is over by {num(planned - left)} GPU-hours")


def check_and_record_many(ledger: Ledger, budget, jobs: list[tuple[float, dict]],
                          override_reason: str | None = None, now: float | None = None) -> list[int]:
    """The same for the jobs of a sweep, as a whole: all of them are recorded or none is."""
    if override_reason is not None and not override_reason.strip():
        raise BudgetError("--override-budget needs a reason, e.g. --override-budget \"deadline, approved by X\"")
    now = time.time() if now is None else now
    period = period_key(_name(budget.period), now)
    planned = sum(hours for hours, _ in jobs)
    with ledger.transaction() as db:
        over = over_budget_message(budget, period, ledger.committed_hours(db, budget.team, period), planned, len(jobs))
        if over and override_reason is None:
            raise BudgetError(
                f"{over}. Nothing was launched. Make the job smaller "
                "(trainer.max_steps, rung.nodes, fewer sweep points) or pass --override-budget \"reason\" "
                "to launch it anyway (the reason is recorded in the ledger).")
        return [ledger.insert_job(db, team=budget.team, period=period, planned_gpu_hours=hours,
                                  override_reason=override_reason, created_at=now, updated_at=now, **job)
                for hours, job in jobs]


def dry_run_budget_line(ledger: Ledger | None, budget, planned: float, n_jobs: int,
                        override_reason: str | None = None) -> str:
    """What the budget check of a real launch would say, read-only (`ladder launch --dry-run`)."""
    period = period_key(_name(budget.period))
    charged = {"used": 0.0, "running": 0.0, "committed": 0.0}
    if ledger is not None:  # read-only: the same sums a launch takes under its lock
        with ledger.transaction() as db:
            charged = ledger.committed_hours(db, budget.team, period)
    over = over_budget_message(budget, period, charged, planned, n_jobs)
    if over is None:
        left = budget.gpu_hours - charged["committed"]
        return (f"budget: would pass: team '{budget.team}' has {num(left)} of {num(budget.gpu_hours)} GPU-hours "
                f"left in {period}, {num(left - planned)} after this launch")
    if override_reason is not None:
        return f"budget: {over}; --override-budget would launch it anyway, recording the reason"
    return f"budget: would be REFUSED: {over} (--override-budget \"reason\" to launch anyway)"


def load_budgets(extra=None) -> dict[str, BudgetConfig]:
    """Every configs/budget/*.yaml by team; `extra` (the composed cfg.budget) wins for its team."""
    budgets = {}
    for path in sorted((CONFIG_DIR / "budget").glob("*.yaml")):
        try:
            b = OmegaConf.merge(OmegaConf.structured(BudgetConfig), OmegaConf.load(path))
        except Exception as e:  # a broken budget file is the user's to fix: name it
            raise ConfigError(f"{path}: {e}") from None
        budgets[b.team] = b
    if extra is not None:
        budgets[extra.team] = extra
    return budgets


@dataclass
class BudgetRow:
    team: str
    period: str
    allocated: float | None  # None: the team has no budget file
    jobs: int
    used: float
    eval_used: float  # of `used`, the hours of eval jobs (kind eval: `ladder eval ... launcher=slurm`)
    running: float  # planned hours of jobs still pending or running
    wasted: float
    useful: float  # used hours weighted by measured MFU
    left: float | None
    committed: float  # used by finished jobs + max(planned, used) of active ones
    cost: float


def report_rows(ledger: Ledger | None, budgets: dict, team: str | None = None,
                now: float | None = None) -> list[BudgetRow]:
    jobs = ledger.jobs(team=team) if ledger is not None else []
    keys = {(j["team"], j["period"]) for j in jobs}
    for t, b in budgets.items():  # every team's current period shows, even before its first job
        if team is None or t == team:
            keys.add((t, period_key(_name(b.period), now)))
    rows = []
    for t, period in sorted(keys):
        mine = [j for j in jobs if j["team"] == t and j["period"] == period]
        active = [j for j in mine if j["state"] in ACTIVE]
        done = [j for j in mine if j["state"] not in ACTIVE]
        used = sum(j["used_gpu_hours"] for j in mine)
        committed = sum(j["used_gpu_hours"] for j in done) + sum(
            max(j["planned_gpu_hours"], j["used_gpu_hours"]) for j in active)
        b = budgets.get(t)
        price = b.price_per_gpu_hour if b is not None else 0.0
        rows.append(BudgetRow(
            team=t, period=period, allocated=b.gpu_hours if b is not None else None, jobs=len(mine),
            used=used, eval_used=sum(j["used_gpu_hours"] for j in mine if j.get("kind") == "eval"),
            running=sum(j["planned_gpu_hours"] for j in active),
            wasted=sum(j["waste_gpu_hours"] for j in mine),
            useful=sum(j["used_gpu_hours"] * j["mfu"] for j in mine if j["mfu"] is not None),
            left=(b.gpu_hours - committed) if b is not None else None, committed=committed,
            cost=used * price))
    return rows


def render_report(rows: list[BudgetRow], ledger_path: Path | str, console=None) -> None:
    from rich.table import Table
    console = console or make_console()
    table = Table(title="GPU-hours by team and period", title_justify="left")
    for col in ("team", "period", "jobs", "allocated", "used", "eval", "running (planned)", "wasted",
                "useful (MFU x used)", "left", "committed", "cost"):
        table.add_column(col, justify="left" if col in ("team", "period") else "right", no_wrap=True)
    for r in rows:
        committed = None if not r.allocated else r.committed / r.allocated
        left = "-" if r.left is None else (f"[red]{num(r.left)}[/red]" if r.left < 0 else num(r.left))
        table.add_row(r.team, r.period, str(r.jobs), "-" if r.allocated is None else num(r.allocated),
                      num(r.used), num(r.eval_used), num(r.running), num(r.wasted), num(r.useful), left,
                      "-" if committed is None else f"{committed:.0%}", f"${num(r.cost)}")
    console.print(table)
    console.print(f"ledger: {ledger_path}\n"
                  "committed: hours used by finished jobs + max(planned, used) of running ones, over allocated\n"
                  "useful: used x measured MFU (jobs without a measured MFU count 0)\n"
                  "eval: of the used hours, those of SLURM eval jobs (`ladder eval ... launcher=slurm`), charged to the same team",
                  style="dim")


def plot_report(rows: list[BudgetRow], path: str | Path) -> Path:
    """A horizontal bar per team and period: used (less waste), wasted, running, left; allocation marked."""
    import matplotlib
    matplotlib.use("Agg")  # no display on clusters and CI
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--plot {path}: the plot is written as PNG; name a .png file")
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [f"{r.team}  {r.period}" for r in rows]
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.6 * max(1, len(rows))))
    good = [r.used - r.wasted for r in rows]
    waste = [r.wasted for r in rows]
    running = [max(r.committed - r.used, 0.0) for r in rows]  # still to come from active jobs
    left = [max(r.left, 0.0) if r.left is not None else 0.0 for r in rows]
    ax.barh(labels, good, color="#4c72b0", label="used")
    ax.barh(labels, waste, left=good, color="#c44e52", label="wasted")
    base = [g + w for g, w in zip(good, waste)]
    ax.barh(labels, running, left=base, color="#dd8452", label="running (planned)")
    base = [b + r for b, r in zip(base, running)]
    ax.barh(labels, left, left=base, color="#d9d9d9", label="left")
    for i, r in enumerate(rows):
        if r.allocated is not None:
            ax.plot([r.allocated, r.allocated], [i - 0.4, i + 0.4], color="black", lw=1.5)
    ax.set_xlabel("GPU-hours (black line: allocation)")
    ax.invert_yaxis()
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.set_title("GPU-hour budgets")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # keeps the legend beside the axes
    plt.close(fig)
    return path


def cmd_budget_report(args) -> int:
    from training.compose import compose
    cfg = compose(args.overrides)
    ledger = Ledger.existing(cfg)
    if ledger is not None:  # jobs still pending or running: bring them up to date first
        from launch.ledger import ACTIVE
        from launch.status_cmd import refresh
        refresh(ledger, [j for j in ledger.jobs() if j["state"] in ACTIVE])
    rows = report_rows(ledger, load_budgets(cfg.budget), team=args.team)
    render_report(rows, ledger.path if ledger else f"{cfg.ledger.url} (no jobs recorded yet)")
    if args.plot:
        print(f"plot: {plot_report(rows, args.plot)}")
    return 0
