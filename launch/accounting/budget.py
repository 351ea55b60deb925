"""Team GPU-hour budgets: the check a launch makes, and the numbers of `ladder budget report`.

    ladder budget set --team llm --period month --gpu-hours 5000   # launch/commands/budget_cmd.py
    ladder budget report                       # every team and period in the ledger
    ladder launch rung=8b --override-budget "deadline for the 8B ablation, approved by J."

A team's allocation (`gpu_hours` per week, month, quarter or year, in UTC) is data in the
ledger, set by whoever owns it; a job's config names only its team (budget.team), so no
override of a job can raise it. A job is charged to the period it was launched in. What a team
has left is its allocation minus the hours used by finished jobs and, for jobs still pending or
running, the larger of their planned and used hours (a running job has claimed its plan).

A team that lists members admits launches by them only (launch/accounting/team_members.py); one with none
listed is open. The check and the insert are one transaction that first takes the team's lock
(a transaction advisory lock on PostgreSQL; SQLite's write lock covers the file), so launches
from many processes and hosts are admitted one at a time and two cannot both take the last hours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from launch.accounting.ledger import (
    ACTIVE,
    LOCAL_DEFAULT_BUDGET,
    NAME_MAX,
    NOTE_MAX,
    Ledger,
    check_name,
    identity,
)
from launch.accounting.team_members import require_member
from launch.console import make_console, num, safe_text
from training.common.errors import BudgetError, ConfigError
from training.common.store import Db, StoreUnavailable


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
    raise ConfigError(f"budget period {period!r}: use week, month, quarter or year")


def _team(budget) -> str:
    return budget if isinstance(budget, str) else budget.team  # cfg.budget, or the team's name


def no_allocation_message(ledger: Ledger, team: str) -> str:
    teams = [
        safe_text(t, markup=False) for t in sorted(ledger.budgets())
    ]  # rows any tool may have written
    return (
        f"team {team!r} has no GPU-hour allocation in the ledger {ledger.where}"
        + (f" (teams with one: {', '.join(teams)})" if teams else "")
        + f". Whoever owns the allocation sets it: ladder budget set --team {safe_text(team, markup=False)} "
        "--period month --gpu-hours H (with the same ledger.url)"
    )


def check_and_record(
    ledger: Ledger,
    budget,
    planned_gpu_hours: float,
    job: dict,
    override_reason: str | None = None,
    now: float | None = None,
) -> int:
    """Refuse a job whose planned hours exceed what its team has left this period (BudgetError),
    unless an override reason is given; otherwise record it in the ledger. Returns the job id."""
    return check_and_record_many(ledger, budget, [(planned_gpu_hours, job)], override_reason, now)[
        0
    ]


def over_budget_message(
    allocation: dict, period: str, charged: dict, planned: float, n_jobs: int
) -> str | None:
    """Why `planned` more GPU-hours do not fit the team's period, or None when they do."""
    left = allocation["gpu_hours"] - charged["committed"]
    if planned <= left:
        return None
    what = "this job plans" if n_jobs == 1 else f"these {n_jobs} jobs plan"
    return (
        f"over budget: {what} {num(planned)} GPU-hours, but team '{safe_text(allocation['team'], markup=False)}' "
        f"has {num(max(left, 0))} of its {num(allocation['gpu_hours'])} GPU-hours left in {period} "
        f"(used {num(charged['used'])}, pending or running {num(charged['running'])}); "
        f"it is over by {num(planned - left)} GPU-hours"
    )


def locked_allocation(ledger: Ledger, db: Db, team: str) -> dict:
    """The team's budget row, under the team's lock until the transaction ends: every launch of
    the team waits here for the one before it to commit, so its sums include that one's jobs.
    A named lock rather than SELECT ... FOR UPDATE, which needs UPDATE rights on `budgets`: so a
    server can let launchers read allocations and only their owners change them."""
    db.lock(f"budget:{team}")
    row = db.one("SELECT * FROM budgets WHERE team = ?", (team,))
    if row is None:
        raise BudgetError(no_allocation_message(ledger, team) + ". Nothing was launched")
    return row


def settle_team(ledger: Ledger, team: str) -> None:
    """Release the hours of the team's dead launches, and charge what its dead runs used, before
    they are summed (launch/accounting/reconcile.py): a ghost's planned hours refuse no launch."""
    from launch.accounting.reconcile import LOCAL, reconcile

    marks = ", ".join("?" for _ in LOCAL)
    reconcile(
        ledger,
        ledger.query(
            f"SELECT * FROM jobs WHERE team = ? AND launcher IN ({marks}) AND state IN "
            "('pending', 'running', 'failed') ORDER BY id",
            (team, *LOCAL),
        ),
    )


def check_and_record_many(
    ledger: Ledger,
    budget,
    jobs: list[tuple[float, dict]],
    override_reason: str | None = None,
    now: float | None = None,
    new_sweep: str | None = None,
) -> list[int]:
    """The same for the jobs of a sweep, as a whole: all of them are recorded or none is.
    `budget` is the job's cfg.budget (only its team is read) or a team name. `new_sweep`: refuse
    if that sweep already has jobs, checked under the same lock (two promotions to one target)."""
    if override_reason is not None and not override_reason.strip():
        raise BudgetError(
            '--override-budget needs a reason, e.g. --override-budget "deadline, approved by X"'
        )
    now = time.time() if now is None else now
    team = _team(budget)
    check_name("budget.team", team)  # where a job's team enters the ledger
    if override_reason is not None:
        check_name("--override-budget", override_reason, NOTE_MAX)
    planned = sum(hours for hours, _ in jobs)
    attempts = 0

    def admit() -> list[int]:
        nonlocal attempts
        attempts += 1
        if attempts > 1:  # after an outage: the last try may have committed before the line went
            done = committed_before(ledger, jobs, now)
            if done is not None:
                return done
        with ledger.transaction() as db:
            if new_sweep is not None:
                db.lock(
                    f"sweep:{new_sweep}"
                )  # a promotion to a sweep of another team still meets this lock
                if db.one("SELECT id FROM jobs WHERE sweep = ? LIMIT 1", (new_sweep,)):
                    raise ConfigError(
                        f"sweep {new_sweep!r} already has jobs in the ledger (another promotion got "
                        "there first?); name the new one with --as NAME. Nothing was launched"
                    )
            allocation = locked_allocation(ledger, db, team)
            require_member(
                ledger, db, team
            )  # under the lock: a removal waits for this launch, or it sees the removal
            period = period_key(allocation["period"], now)
            over = over_budget_message(
                allocation, period, ledger.committed_hours(db, team, period), planned, len(jobs)
            )
            if over and override_reason is None:
                raise BudgetError(
                    f"{over}. Nothing was launched. Make the job smaller "
                    '(trainer.max_steps, rung.nodes, fewer sweep points) or pass --override-budget "reason" '
                    "to launch it anyway (the reason is recorded in the ledger)."
                )
            launched_by = identity(
                db
            )  # the team is the job's word; who launched it is recorded beside it
            return [
                ledger.insert_job(
                    db,
                    team=team,
                    period=period,
                    planned_gpu_hours=hours,
                    launched_by=launched_by,
                    override_reason=override_reason,
                    created_at=now,
                    updated_at=now,
                    **job,
                )
                for hours, job in jobs
            ]

    try:
        settle_team(ledger, team)
        return ledger.retrying(admit)
    except StoreUnavailable as e:
        raise StoreUnavailable(f"{e}; nothing was launched or recorded") from None


def committed_before(
    ledger: Ledger, jobs: list[tuple[float, dict]], now: float
) -> list[int] | None:
    """The ids of these jobs if an earlier try recorded them (same run folders, same created_at)."""
    dirs = [job.get("run_dir") for _, job in jobs]
    if None in dirs:
        return None
    rows = ledger.query("SELECT id, run_dir FROM jobs WHERE created_at = ? ORDER BY id", (now,))
    ids = {r["run_dir"]: r["id"] for r in rows}
    return [ids[d] for d in dirs] if all(d in ids for d in dirs) else None


def team_standing(
    ledger: Ledger | None, budget, now: float | None = None
) -> tuple[dict, str, dict]:
    """(allocation, period, charged) of a team, read-only: what a launch would see (dry runs)."""
    team = _team(budget)
    allocation = ledger.budgets().get(team) if ledger is not None else None
    if (
        ledger is None
    ):  # no local ledger file yet: the launch creates it, with the default team's allocation
        if team != LOCAL_DEFAULT_BUDGET["team"]:
            raise BudgetError(
                f"team {team!r} has no GPU-hour allocation: a new local ledger gives one to team "
                f"{LOCAL_DEFAULT_BUDGET['team']!r} only; set one with ladder budget set --team "
                f"{safe_text(team, markup=False)}"
            )
        allocation = LOCAL_DEFAULT_BUDGET
        return (
            allocation,
            period_key(allocation["period"], now),
            {"used": 0.0, "running": 0.0, "committed": 0.0},
        )
    if allocation is None:
        raise BudgetError(no_allocation_message(ledger, team))
    period = period_key(allocation["period"], now)
    with ledger.transaction() as db:  # the same sums and membership a launch checks under its lock
        require_member(ledger, db, team, launching=False)
        charged = ledger.committed_hours(db, team, period)
    return allocation, period, charged


def dry_run_budget_line(
    ledger: Ledger | None, budget, planned: float, n_jobs: int, override_reason: str | None = None
) -> str:
    """What the budget check of a real launch would say, read-only (`ladder launch --dry-run`)."""
    try:
        allocation, period, charged = team_standing(ledger, budget)
    except BudgetError as e:
        return f"budget: would be REFUSED: {e}"
    over = over_budget_message(allocation, period, charged, planned, n_jobs)
    if over is None:
        left = allocation["gpu_hours"] - charged["committed"]
        return (
            f"budget: would pass: team '{safe_text(allocation['team'], markup=False)}' has {num(left)} of "
            f"{num(allocation['gpu_hours'])} GPU-hours left in {period}, {num(left - planned)} after this launch"
        )
    if override_reason is not None:
        return f"budget: {over}; --override-budget would launch it anyway, recording the reason"
    return f'budget: would be REFUSED: {over} (--override-budget "reason" to launch anyway)'


@dataclass
class BudgetRow:
    team: str
    period: str
    allocated: float | None  # None: the team has no allocation in the ledger
    jobs: int
    used: float
    eval_used: (
        float  # of `used`, the hours of eval jobs (kind eval: on SLURM or handed off locally)
    )
    running: float  # planned hours of jobs still pending or running
    wasted: float
    useful: float  # used hours weighted by measured MFU
    left: float | None
    committed: float  # used by finished jobs + max(planned, used) of active ones
    cost: float


def report_rows(
    ledger: Ledger | None,
    price_per_gpu_hour: float = 0.0,
    team: str | None = None,
    now: float | None = None,
) -> list[BudgetRow]:
    """Per team and period; allocations from the ledger (those are per period: the current one
    is the same number for every period of the team's kind)."""
    jobs = ledger.jobs(team=team) if ledger is not None else []
    budgets = ledger.budgets() if ledger is not None else {}
    keys = {(j["team"], j["period"]) for j in jobs}
    for t, b in budgets.items():  # every team's current period shows, even before its first job
        if team is None or t == team:
            keys.add((t, period_key(b["period"], now)))
    rows = []
    for t, period in sorted(keys):
        mine = [j for j in jobs if j["team"] == t and j["period"] == period]
        active = [j for j in mine if j["state"] in ACTIVE]
        done = [j for j in mine if j["state"] not in ACTIVE]
        used = sum(j["used_gpu_hours"] for j in mine)
        committed = sum(j["used_gpu_hours"] for j in done) + sum(
            max(j["planned_gpu_hours"], j["used_gpu_hours"]) for j in active
        )
        b = budgets.get(t)
        price = price_per_gpu_hour
        rows.append(
            BudgetRow(
                team=t,
                period=period,
                allocated=b["gpu_hours"] if b is not None else None,
                jobs=len(mine),
                used=used,
                eval_used=sum(j["used_gpu_hours"] for j in mine if j.get("kind") == "eval"),
                running=sum(j["planned_gpu_hours"] for j in active),
                wasted=sum(j["waste_gpu_hours"] for j in mine),
                useful=sum(j["used_gpu_hours"] * j["mfu"] for j in mine if j["mfu"] is not None),
                left=(b["gpu_hours"] - committed) if b is not None else None,
                committed=committed,
                cost=used * price,
            )
        )
    return rows


PLAN_TOLERANCE = 0.15  # issue #14: plans and charged hours should agree within 15%


def plan_accuracy(ledger: Ledger | None, team: str | None = None) -> list[dict]:
    """Completed training jobs with the GPU-hours planned at launch and those charged: how far
    `ladder plan` is from what the jobs used (launch/planning/rates.py measures the rate that closes the gap)."""
    jobs = ledger.jobs(team=team) if ledger is not None else []
    return [
        {
            "id": j["id"],
            "run": j["run_name"] or "-",
            "rung": j["rung"],
            "planned": j["planned_gpu_hours"],
            "used": j["used_gpu_hours"],
            "ratio": j["used_gpu_hours"] / j["planned_gpu_hours"],
        }
        for j in jobs
        if j["state"] == "completed"
        and (j.get("kind") or "train") == "train"
        and j["planned_gpu_hours"] > 0
    ]


def render_plan_accuracy(rows: list[dict], console=None, last: int = 15) -> None:
    from rich.table import Table

    if not rows:
        return
    console = console or make_console()
    table = Table(
        title="Planned against used GPU-hours, completed training jobs", title_justify="left"
    )
    for col in ("job", "run", "rung", "planned", "used", "used / planned"):
        table.add_column(col, justify="left" if col in ("run", "rung") else "right", no_wrap=True)
    for r in rows[-last:]:
        off = abs(r["ratio"] - 1) > PLAN_TOLERANCE
        ratio = f"{r['ratio']:.2f}"
        table.add_row(
            str(r["id"]),
            safe_text(r["run"]),
            safe_text(r["rung"]),
            num(r["planned"]),
            num(r["used"]),
            f"[red]{ratio}[/red]" if off else ratio,
        )
    console.print(table)
    within = sum(abs(r["ratio"] - 1) <= PLAN_TOLERANCE for r in rows)
    ratios = sorted(r["ratio"] for r in rows)
    console.print(
        f"{within} of {len(rows)} completed jobs used within {PLAN_TOLERANCE:.0%} of their plan "
        f"(median used / planned {ratios[len(ratios) // 2]:.2f}"
        + (f"; the last {last} shown" if len(rows) > last else "")
        + ")",
        style="dim",
    )


def shown_name(name: str) -> str:
    """A team name as a table shows it: names are at most NAME_MAX characters when they enter the
    ledger, so a longer one was written by another tool; its start is shown, with its length."""
    if len(name) <= NAME_MAX:
        return name
    return f"{name[: NAME_MAX - 1]}… ({len(name):,} characters)"


def render_report(rows: list[BudgetRow], ledger_path: Path | str, console=None) -> None:
    from rich.table import Table

    console = console or make_console()
    table = Table(title="Device-hours (GPU-hours on GPUs) by team and period", title_justify="left")
    for col in (
        "team",
        "period",
        "jobs",
        "allocated",
        "used",
        "eval",
        "running (planned)",
        "wasted",
        "useful (MFU x used)",
        "left",
        "committed",
        "cost",
    ):
        # the team column folds, never the numbers: a long name takes lines, not their width
        table.add_column(
            col,
            justify="left" if col in ("team", "period") else "right",
            no_wrap=col != "team",
            overflow="fold",
            min_width=len(col) if col != "team" else 8,
        )
    for r in rows:
        committed = None if not r.allocated else r.committed / r.allocated
        left = (
            "-" if r.left is None else (f"[red]{num(r.left)}[/red]" if r.left < 0 else num(r.left))
        )
        table.add_row(
            safe_text(shown_name(r.team)),
            safe_text(r.period),
            str(r.jobs),
            "-" if r.allocated is None else num(r.allocated),
            num(r.used),
            num(r.eval_used),
            num(r.running),
            num(r.wasted),
            num(r.useful),
            left,
            "-" if committed is None else f"{committed:.0%}",
            f"${num(r.cost)}",
        )
    console.print(table)
    console.print(
        f"ledger: {safe_text(ledger_path)}\n"
        "committed: hours used by finished jobs + max(planned, used) of running ones, over allocated\n"
        "useful: used x measured MFU (jobs without a measured MFU count 0)\n"
        "eval: of the used hours, those of eval jobs (kind eval: `ladder eval ... launcher=slurm` and "
        "`ladder eval --pending` on any launcher), charged to the same team\n"
        "hours are device-hours: GPU-hours for jobs on GPUs, process-hours for the CPU rungs",
        style="dim",
    )


def plot_report(rows: list[BudgetRow], path: str | Path) -> Path:
    """A horizontal bar per team and period: used (less waste), wasted, running, left; allocation marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display on clusters and CI
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--plot {path}: the plot is written as PNG; name a .png file")
    path.parent.mkdir(parents=True, exist_ok=True)
    # escaped: matplotlib would read a team's `$...$` as mathtext (and raise on a bad one)
    labels = [safe_text(f"{r.team}  {r.period}", markup=False).replace("$", r"\$") for r in rows]
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
    ax.set_xlabel("device-hours: GPU-hours, or process-hours on CPU rungs (black line: allocation)")
    ax.invert_yaxis()
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.set_title("GPU-hour budgets")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # keeps the legend beside the axes
    plt.close(fig)
    return path
