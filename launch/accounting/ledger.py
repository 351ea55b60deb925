"""The GPU-hour ledger: every launch, its planned and used GPU-hours, its final state and its waste.

    ladder launch rung=tiny                  # records a job here, then updates it from the heartbeat
    ladder budget report                     # reads it
    from launch.accounting.ledger import Ledger
    ledger = Ledger.from_config(cfg)         # ledger.url, default sqlite:///<trainer.run_root>/ladder.db

ledger.url is a SQLite file (the embedded default) or a team's PostgreSQL server
(postgresql://user@host/db, password from ~/.pgpass or PGPASSWORD): the store, its locking
and its versioned migrations are training/common/store.py. Many processes write at once (the jobs of a
sweep, launches from several login nodes); every write is one short transaction.

Budgets are data here, not in a job's config: the `budgets` table holds each team's current
allocation (GPU-hours per week, month, quarter or year) and `budget_changes` every change, with
who made it and when (`ladder budget set`, launch/commands/budget_cmd.py). A launch holds its team's
lock while it sums the period's hours and records its jobs (launch/accounting/budget.py). `team_members`
lists who may charge a team (none listed: anyone may), `team_member_changes` every change to it
(`ladder budget members`, launch/accounting/team_members.py).

Each job records the Hydra overrides it was launched with, and the math changes its resume
applied with trainer.allow_config_change=true (jobs.config_changes); the `promotions` table records
lineage across rungs: which lower-rung job, at what score and rank, each promoted job came from
(`ladder promote`, launch/promotion/promote.py). An older file is migrated when it is opened (MIGRATIONS).

Used hours and the final state come from the trainer's heartbeat (<run_dir>/heartbeat.json).
Waste is the hours a failed or preempted run lost since its last checkpoint, and all the hours
of a run cancelled by hand.

A local job's PID means something on one host only, and only until the process ends and the PID
is reused: a job records its host and its process's start (jobs.host, jobs.process_start), and
`ladder status` and `ladder cancel` act on the PID only there and only while the same process
holds it (launch/commands/status_cmd.py). A pending local or direct job holds its launcher's
process (claim), and the heartbeat names the trainer's, so status and the budget check settle a
job whose launcher or trainer was killed at any step (launch/accounting/reconcile.py).

Names that enter the ledger from the command line (teams, members) are checked once, where they
are written (check_name); whatever is read back is printed through launch/console.safe_text,
since other tools may have written the rows.
"""

from __future__ import annotations

import getpass
import socket
import statistics
import time
from pathlib import Path

from launch.accounting.overhead import job_overhead_s
from launch.console import invisible_chars, safe_text
from training.common.errors import ConfigError
from training.common.store import Db, Store, retried
from training.common.store_url import parse_store_url
from training.run.heartbeat import process_start, read_heartbeat  # noqa: F401  (process_start: here too)

ACTIVE = ("pending", "running")  # planned hours still count against the budget
FINAL = ("completed", "failed", "preempted", "interrupted", "cancelled")  # interrupted: Ctrl-C
STATES = ACTIVE + FINAL
# Heartbeats are written on the compute nodes, sacct's times by the controller: allow for clocks
# a little apart when deciding whether a heartbeat belongs to this job.
CLOCK_SLACK_S = 30.0
SCHEMA_VERSION = 13  # 2: jobs.overrides and the promotions table (launch/promotion/promote.py); 3: jobs.config_changes
# 4: jobs.data_mixture and jobs.allow_contamination (training/data/mixture_config.py, evals/tasks/decontaminate.py)
# 5: jobs.kind (train | eval: SLURM eval jobs of `ladder eval ... launcher=slurm`)
# 6: jobs.launched_by, and the budgets and budget_changes tables (SCHEMA creates new tables)
# 7: the bench_rates table (launch/planning/rates.py: `ladder bench import`)
# 8: the team_members and team_member_changes tables (launch/accounting/team_members.py; SCHEMA creates them)
# 9: jobs.host and jobs.process_start: where a local job's PID means something, and which process it is
# 10: jobs.allow_unchecked (launch/inspection/contamination.py)
# 11: jobs.point: the sweep point a replicate belongs to (sweep.seeds; launch/cluster/sweep.py)
# 12: jobs.adapter: a LoRA/QLoRA run's adapter (training/model/lora.py: adapter_record), else null
# 13: jobs.overhead_s: a completed job's charge beyond its steps (launch/accounting/overhead.py)
MIGRATIONS = {
    2: "ALTER TABLE jobs ADD COLUMN overrides TEXT",
    3: "ALTER TABLE jobs ADD COLUMN config_changes TEXT",
    4: "ALTER TABLE jobs ADD COLUMN data_mixture TEXT; "
    "ALTER TABLE jobs ADD COLUMN allow_contamination INTEGER NOT NULL DEFAULT 0",
    5: "ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'train'",
    6: "ALTER TABLE jobs ADD COLUMN launched_by TEXT",
    9: "ALTER TABLE jobs ADD COLUMN host TEXT; ALTER TABLE jobs ADD COLUMN process_start TEXT",
    10: "ALTER TABLE jobs ADD COLUMN allow_unchecked INTEGER NOT NULL DEFAULT 0",
    11: "ALTER TABLE jobs ADD COLUMN point TEXT",
    12: "ALTER TABLE jobs ADD COLUMN adapter TEXT",
    13: "ALTER TABLE jobs ADD COLUMN overhead_s DOUBLE PRECISION",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id ID_PRIMARY_KEY,
    team TEXT NOT NULL,
    project TEXT,
    sweep TEXT,
    rung TEXT NOT NULL,
    period TEXT NOT NULL,              -- the budget period it is charged to, e.g. 2026-11
    run_name TEXT,
    run_dir TEXT,
    config_hash TEXT,
    launcher TEXT,
    external_id TEXT,                  -- the local pid or the SLURM job id
    gpus INTEGER NOT NULL,
    planned_gpu_hours DOUBLE PRECISION NOT NULL,
    used_gpu_hours DOUBLE PRECISION NOT NULL DEFAULT 0,
    waste_gpu_hours DOUBLE PRECISION NOT NULL DEFAULT 0,
    hours_before DOUBLE PRECISION NOT NULL DEFAULT 0,  -- the heartbeat's device_hours when a resumed run started
    mfu DOUBLE PRECISION,                          -- median measured MFU of the run's steps
    tokens_per_s DOUBLE PRECISION,                 -- median measured tokens/s per device
    overhead_s DOUBLE PRECISION,       -- wall seconds charged beyond its steps at that rate (completed jobs)
    state TEXT NOT NULL,
    reason TEXT,                       -- why it failed or stopped
    override_reason TEXT,              -- --override-budget "reason"
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    overrides TEXT,                    -- JSON list: the Hydra overrides the job was launched with
    config_changes TEXT,               -- JSON list of {key, old, new}: math changes its resume applied
                                       -- (trainer.allow_config_change=true), null when none
    data_mixture TEXT,                 -- JSON: the data's sources, files or hub dataset, weight, epochs, max_samples
    allow_contamination INTEGER NOT NULL DEFAULT 0,  -- 1: launched with --allow-contamination
    kind TEXT NOT NULL DEFAULT 'train',  -- train | eval (an eval job of `ladder eval ... launcher=slurm`)
    launched_by TEXT,                  -- user@host that launched it (and the database role on a server)
    host TEXT,                         -- the host a local job's process runs on (socket.gethostname())
    process_start TEXT,                -- that process's start, <boot id>:<ticks since boot> (process_start)
    allow_unchecked INTEGER NOT NULL DEFAULT 0,  -- 1: launched with --allow-unchecked
    point TEXT,                        -- the sweep point of a replicate (sweep.seeds), else null
    adapter TEXT                       -- JSON: a LoRA run's method, r, alpha, targets; null: full fine-tuning
);
CREATE INDEX IF NOT EXISTS jobs_team_period ON jobs (team, period);
CREATE INDEX IF NOT EXISTS jobs_rung ON jobs (rung);
CREATE INDEX IF NOT EXISTS jobs_sweep ON jobs (sweep);
-- Lineage across rungs: one row per job `ladder promote` launched (launch/promotion/promote.py).
CREATE TABLE IF NOT EXISTS promotions (
    id ID_PRIMARY_KEY,
    from_sweep TEXT NOT NULL,
    to_sweep TEXT NOT NULL,
    from_rung TEXT NOT NULL,
    to_rung TEXT NOT NULL,
    metric TEXT NOT NULL,              -- what the points were ranked by, e.g. reverse or average
    suite TEXT NOT NULL,               -- the eval suite and its settings as JSON (the report scores both rungs)
    eval_json TEXT NOT NULL,
    points INTEGER NOT NULL,           -- finished points of the lower-rung sweep that were ranked
    parent_job_id INTEGER NOT NULL REFERENCES jobs (id),
    parent_run_name TEXT,
    parent_run_dir TEXT NOT NULL,
    parent_checkpoint TEXT NOT NULL,   -- the scored checkpoint (the run's last registered one)
    parent_score DOUBLE PRECISION NOT NULL,
    parent_rank INTEGER NOT NULL,      -- 1 = best of the sweep
    parent_lr DOUBLE PRECISION,
    child_job_id INTEGER NOT NULL REFERENCES jobs (id),
    child_run_name TEXT NOT NULL,
    child_run_dir TEXT NOT NULL,
    child_lr DOUBLE PRECISION,
    overrides TEXT NOT NULL,           -- JSON list: the promoted job's overrides
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS promotions_from ON promotions (from_sweep);
CREATE INDEX IF NOT EXISTS promotions_to ON promotions (to_sweep);
-- A team's allocation: gpu_hours per period (launch/accounting/budget.py reads it under the team's lock).
CREATE TABLE IF NOT EXISTS budgets (
    team TEXT PRIMARY KEY,
    period TEXT NOT NULL,              -- week | month | quarter | year (UTC)
    gpu_hours DOUBLE PRECISION NOT NULL,
    set_by TEXT NOT NULL,              -- the OS user and host that set it (and the database role)
    set_at DOUBLE PRECISION NOT NULL,
    note TEXT
);
CREATE TABLE IF NOT EXISTS budget_changes (
    id ID_PRIMARY_KEY,
    team TEXT NOT NULL,
    period TEXT NOT NULL,
    gpu_hours DOUBLE PRECISION NOT NULL,
    previous_period TEXT,              -- null: the team's first allocation
    previous_gpu_hours DOUBLE PRECISION,
    set_by TEXT NOT NULL,
    set_at DOUBLE PRECISION NOT NULL,
    note TEXT
);
CREATE INDEX IF NOT EXISTS budget_changes_team ON budget_changes (team);
-- Who may charge a team (launch/accounting/team_members.py): a team with rows here admits launches by these
-- names only, a team with none is open. member: the database role on PostgreSQL, the OS user on SQLite.
CREATE TABLE IF NOT EXISTS team_members (
    team TEXT NOT NULL,
    member TEXT NOT NULL,
    added_by TEXT NOT NULL,            -- user@host that added it (and the database role)
    added_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (team, member)
);
CREATE TABLE IF NOT EXISTS team_member_changes (
    id ID_PRIMARY_KEY,
    team TEXT NOT NULL,
    member TEXT NOT NULL,
    action TEXT NOT NULL,              -- add | remove
    changed_by TEXT NOT NULL,
    changed_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS team_member_changes_team ON team_member_changes (team);
-- Throughput measured by bench/gpu.py at a model shape, imported with `ladder bench import`;
-- `ladder plan` uses it for rungs of that shape (launch/planning/rates.py).
CREATE TABLE IF NOT EXISTS bench_rates (
    id ID_PRIMARY_KEY,
    shape TEXT NOT NULL,               -- launch/planning/rates.py shape_key: hidden, MLP, heads, KV heads, vocabulary
    device TEXT NOT NULL,              -- e.g. NVIDIA H200
    recipe TEXT NOT NULL,              -- sft | dpo
    settings TEXT NOT NULL,            -- JSON: attention, compile, loss chunking, activation checkpointing
    mfu DOUBLE PRECISION NOT NULL,
    tokens_per_s DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL,              -- the imported file and the configuration's name in it
    measured_on TEXT,                  -- the date in the file
    imported_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS bench_rates_shape ON bench_rates (shape);
"""
# A new local (SQLite) ledger starts with this allocation for the default team, so that
# `ladder launch rung=tiny` works out of the box; recorded as a change like any other. A
# PostgreSQL ledger starts with none: a team's allocation is set by whoever owns it.
LOCAL_DEFAULT_BUDGET = {"team": "default", "period": "month", "gpu_hours": 10000.0}
PERIODS = ("week", "month", "quarter", "year")
NAME_MAX = 64  # team and member names; a PostgreSQL role name has at most 63 bytes
NOTE_MAX = 1000  # a budget change's note, an override's reason


def text_problem(what: str, value, max_len: int = NAME_MAX) -> str | None:
    """Why `value` cannot enter the ledger as `what`, or None: it must be UTF-8 text (argv with
    bytes that are not is surrogate-escaped, and the database would raise UnicodeEncodeError),
    with no control or format characters (an ESC sequence would act on every terminal that
    prints it), of at most max_len characters. The value is shown escaped, never raw."""
    text = str(value)
    shown = safe_text(text if len(text) <= 80 else text[:80] + "...", markup=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"{what} '{shown}' holds bytes that are not UTF-8 text (shown escaped); give it in UTF-8; "
            "nothing was changed"
        )
    bad = invisible_chars(text)
    if bad:
        return (
            f"{what} '{shown}' holds control characters ({', '.join(sorted({repr(c) for c in bad}))}); "
            "use printable text; nothing was changed"
        )
    if len(text) > max_len:
        return f"{what} is {len(text)} characters long; use at most {max_len}; nothing was changed"
    return None


def check_name(what: str, value, max_len: int = NAME_MAX) -> None:
    """ConfigError (exit status 2) for a name or note that cannot enter the ledger (text_problem)."""
    problem = text_problem(what, value, max_len)
    if problem:
        raise ConfigError(problem)


def this_host() -> str:
    return socket.gethostname()


def claim(pid: int | None = None) -> dict:
    """The process identity a local or direct job is recorded with (this process, the launcher,
    unless `pid`): its PID, host and start. While the job is pending it is the launcher's, so a
    launcher killed before the run started is told from a slow one (launch/accounting/reconcile.py)."""
    import os

    pid = os.getpid() if pid is None else pid
    return {"external_id": str(pid), "host": this_host(), "process_start": process_start(pid)}


def last_write(run_dir: str | None, since: float, until: float) -> float:
    """The newest modification time of a file in the run folder (its own last sign of life,
    for a run that died before its first heartbeat), within [since, until]; `since` if none."""
    newest = since
    try:
        for entry in Path(run_dir).iterdir() if run_dir else ():
            try:
                newest = max(newest, entry.lstat().st_mtime)
            except OSError:
                continue
    except OSError:
        pass
    return min(newest, until)


def path_from_url(url: str) -> Path:
    """The SQLite file of a ledger.url (ConfigError for a server URL: callers that need a file)."""
    where = parse_store_url(url, "ledger.url")
    if where.path is None:
        from training.common.errors import ConfigError

        raise ConfigError(f"ledger.url={url!r} is a server, not a SQLite file")
    return where.path


def os_user() -> str:
    """The OS user of this process (getpass: $LOGNAME, $USER, ... first, then the uid's name)."""
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid (a container): the uid says who it was
        import os

        return f"uid {os.getuid()}"


def who() -> str:
    """user@host of this process, for the records of who set a budget."""
    return f"{os_user()}@{socket.gethostname()}"


def identity(db: Db) -> str:
    """who(), and on a server the database role: the identity the server itself checked."""
    if db.dialect == "postgresql":
        return f"{who()} (role {db.one('SELECT current_user AS u')['u']})"
    return who()


class Ledger(Store):
    COMPONENT = "ledger"
    URL_KEY = "ledger.url"
    SCHEMA = SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    MIGRATIONS = MIGRATIONS

    @classmethod
    def from_config(cls, cfg) -> Ledger:
        return cls(cfg.ledger.url, cfg.ledger.busy_timeout_s, retry_s=cfg.ledger.retry_s)

    @classmethod
    def existing(cls, cfg) -> Ledger | None:
        """The configured ledger if its file exists (a server always does); None otherwise, so
        read-only callers create no file."""
        where = parse_store_url(cfg.ledger.url, "ledger.url")
        if where.path is not None and not where.path.is_file():
            return None
        return cls(cfg.ledger.url, cfg.ledger.busy_timeout_s, retry_s=cfg.ledger.retry_s)

    def same_as(self, url: str) -> bool:
        """Whether ledger.url names this ledger (the same file, or the same server URL)."""
        other = parse_store_url(url, "ledger.url")
        if self.backend == "sqlite" and other.path is not None:
            return other.path.resolve() == self.path.resolve()
        return other.url == self.location.url

    def on_upgrade(self, db: Db, from_version: int) -> None:
        if self.backend == "sqlite" and db.one("SELECT COUNT(*) AS n FROM budgets")["n"] == 0:
            self.set_budget(
                db,
                **LOCAL_DEFAULT_BUDGET,
                set_by="ladder (the initial allocation of a new local ledger)",
            )

    # ---- budgets (launch/accounting/budget.py, `ladder budget set`) ----------------------------------------
    @staticmethod
    def set_budget(
        db: Db,
        team: str,
        period: str,
        gpu_hours: float,
        set_by: str | None = None,
        note: str | None = None,
        now: float | None = None,
    ) -> dict:
        """Set a team's allocation and record the change; returns the previous allocation (or {})."""
        if period not in PERIODS:
            raise ValueError(f"period {period!r}: use {', '.join(PERIODS)}")
        check_name("team", team)
        if note is not None:
            check_name("note", note, NOTE_MAX)
        now = time.time() if now is None else now
        set_by = set_by or identity(db)
        db.lock(
            f"budget:{team}"
        )  # the lock a launch of the team holds while it checks (launch/accounting/budget.py)
        before = db.one("SELECT * FROM budgets WHERE team = ?", (team,)) or {}
        row = {
            "team": team,
            "period": period,
            "gpu_hours": float(gpu_hours),
            "set_by": set_by,
            "set_at": now,
            "note": note,
        }
        db.execute(
            "INSERT INTO budgets (team, period, gpu_hours, set_by, set_at, note) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (team) DO UPDATE SET period = excluded.period, gpu_hours = excluded.gpu_hours, "
            "set_by = excluded.set_by, set_at = excluded.set_at, note = excluded.note",
            tuple(row.values()),
        )
        db.insert(
            "budget_changes",
            {
                **row,
                "previous_period": before.get("period"),
                "previous_gpu_hours": before.get("gpu_hours"),
            },
        )
        return before

    def budgets(self) -> dict[str, dict]:
        return {r["team"]: r for r in self.query("SELECT * FROM budgets ORDER BY team")}

    def budget_changes(self, team: str | None = None) -> list[dict]:
        if team is None:
            return self.query("SELECT * FROM budget_changes ORDER BY id")
        return self.query("SELECT * FROM budget_changes WHERE team = ? ORDER BY id", (team,))

    # ---- writes ------------------------------------------------------------------------
    @staticmethod
    def insert_job(db: Db, **fields) -> int:
        now = time.time()
        fields.setdefault("state", "pending")
        fields.setdefault("created_at", now)
        fields.setdefault("updated_at", now)
        if fields["state"] not in STATES:
            raise ValueError(f"unknown job state {fields['state']!r}")
        return db.insert("jobs", fields)

    @retried
    def add_job(self, **fields) -> int:
        with self.transaction() as db:
            return self.insert_job(db, **fields)

    @retried
    def update_job(self, job_id: int, **fields) -> None:
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"unknown job state {fields['state']!r}")
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as db:
            cur = db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))
            if cur.rowcount != 1:
                raise KeyError(f"no job {job_id} in the ledger {self.path}")

    @retried
    def mark_started(self, job_id: int, external_id: str | None = None) -> None:
        """The job's process started on this host (external_id: its PID, when known yet; until
        then the launcher's claim stays); remember the run's hours so far (a resumed run has some)."""
        job = self.job(job_id)
        hb = read_heartbeat(Path(job["run_dir"])) if job["run_dir"] else None
        self.update_job(
            job_id,
            state="running",
            started_at=time.time(),
            hours_before=float((hb or {}).get("device_hours", 0.0)),
            **(claim(int(external_id)) if external_id is not None else {}),
        )

    @retried
    def record_pid(self, job_id: int, pid: int | str) -> None:
        """A local job's process, started on this host: its PID, the host and which process it is."""
        self.update_job(
            job_id, external_id=str(pid), host=this_host(), process_start=process_start(pid)
        )

    @retried
    def finish_from_heartbeat(
        self, job_id: int, exit_code: int | None = None, cancelled: bool = False, accounted=None
    ) -> dict:
        """Record used hours, the final state, waste and measured MFU.

        `accounted` is SLURM's word on the job (launch/slurm.SlurmState from sacct): then its start
        and end are the job's, and it is charged what the allocation held, allocated GPUs x
        elapsed, over every segment of a requeued job (a job cancelled while pending costs
        nothing). Without it (local jobs) the hours are the heartbeat's. Either way the state,
        reason and waste come from the heartbeat, and a heartbeat counts if it was written after
        the job started, never after whenever someone first looked."""
        job = self.job(job_id)
        now = time.time()
        hb = read_heartbeat(Path(job["run_dir"])) if job["run_dir"] else None
        started = job["started_at"] or job["created_at"]
        charged = None
        if accounted is not None:
            charged = accounted.charged_hours(job["gpus"])
            started = accounted.start if accounted.start is not None else started
        if hb is not None and hb.get("updated_at", 0) >= started - CLOCK_SLACK_S:
            used = max(0.0, float(hb.get("device_hours", 0.0)) - job["hours_before"])
            state, reason = hb.get("state", "failed"), hb.get("reason")
            last = min(now, float(hb["updated_at"]))  # its last heartbeat, not when it was noticed
        else:  # the process died before its first heartbeat (or never ran): charged until the
            # run folder's last write, not until whoever noticed (issue #22)
            last = last_write(job["run_dir"], started, now) if job["started_at"] else now
            used = job["gpus"] * max(0.0, last - started) / 3600 if job["started_at"] else 0.0
            hb, state, reason = None, "failed", "no heartbeat from this run"
        if charged is not None:
            used = charged
        if state == "running":  # killed hard, or exited without a final state
            state, reason = "failed", f"exited (status {exit_code}) without a final heartbeat"
        if cancelled:
            state, reason = "cancelled", reason or "cancelled by hand"
        waste = self.waste_hours(state, used, hb, started, job["gpus"])
        mfu, tok_s = measured_rates(Path(job["run_dir"])) if job["run_dir"] else (None, None)
        overhead = job_overhead_s(job, state, hb, used, charged is not None)  # plans learn it
        ended = accounted.end if accounted is not None and accounted.end is not None else last
        self.update_job(
            job_id,
            state=state,
            reason=reason,
            used_gpu_hours=used,
            waste_gpu_hours=waste,
            mfu=mfu,
            tokens_per_s=tok_s,
            overhead_s=overhead,
            finished_at=ended,
            **(
                {"started_at": started}
                if accounted is not None and accounted.start is not None
                else {}
            ),
        )
        return self.job(job_id)

    @staticmethod
    def waste_hours(state: str, used: float, hb: dict | None, started: float, gpus: int) -> float:
        if state == "cancelled":
            return used
        if state not in ("failed", "preempted", "interrupted"):
            return 0.0
        ckpt_at = (hb or {}).get("last_checkpoint_at")
        if hb is None or ckpt_at is None or ckpt_at < started:
            return used  # no checkpoint from this job: everything it did is lost
        devices = hb.get("devices") or gpus
        return min(used, devices * max(0.0, hb["updated_at"] - ckpt_at) / 3600)

    # ---- reads -------------------------------------------------------------------------

    def job(self, job_id: int) -> dict:
        rows = self.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise KeyError(f"no job {job_id} in the ledger {self.path}")
        return rows[0]

    def jobs(self, team: str | None = None, period: str | None = None) -> list[dict]:
        where, args = [], []
        for col, val in (("team", team), ("period", period)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = (
            "SELECT * FROM jobs"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY id"
        )
        return self.query(sql, tuple(args))

    @staticmethod
    def committed_hours(db: Db, team: str, period: str) -> dict[str, float]:
        """Hours charged to a team's period: used by finished jobs, max(planned, used) by active ones."""
        marks = ", ".join("?" for _ in ACTIVE)
        row = db.execute(
            f"""SELECT
                  COALESCE(SUM(CASE WHEN state IN ({marks}) THEN 0 ELSE used_gpu_hours END), 0) AS used,
                  COALESCE(SUM(CASE WHEN state IN ({marks})
                                    THEN CASE WHEN planned_gpu_hours > used_gpu_hours THEN planned_gpu_hours
                                              ELSE used_gpu_hours END ELSE 0 END), 0) AS running
                FROM jobs WHERE team = ? AND period = ?""",
            (*ACTIVE, *ACTIVE, team, period),
        ).fetchone()
        return {
            "used": row["used"],
            "running": row["running"],
            "committed": row["used"] + row["running"],
        }

    def median_rate(
        self, rung: str, column: str, adapter: bool = False
    ) -> tuple[float | None, int]:
        """Median of a measured rate (mfu or tokens_per_s) over finished runs of a rung, and how
        many. adapter: LoRA runs only, else full fine-tuning only: a LoRA token skips the base's
        weight gradients, so its tokens/s would plan a full run short (and its MFU differs)."""
        if column not in ("mfu", "tokens_per_s"):
            raise ValueError(column)
        kind = "IS NOT NULL" if adapter else "IS NULL"
        rows = self.query(
            f"SELECT {column} AS v FROM jobs WHERE rung = ? AND {column} IS NOT NULL "
            f"AND adapter {kind}",
            (rung,),
        )
        values = [r["v"] for r in rows]
        return (statistics.median(values) if values else None), len(values)

    # ---- sweeps and promotions (launch/promotion/promote.py) --------------------------------------
    def sweep_jobs(self, sweep: str) -> list[dict]:
        return self.query("SELECT * FROM jobs WHERE sweep = ? ORDER BY id", (sweep,))

    def sweeps(self) -> dict[str, int]:
        """Every sweep name in the ledger and its number of jobs."""
        rows = self.query(
            "SELECT sweep, COUNT(*) AS n FROM jobs WHERE sweep IS NOT NULL GROUP BY sweep ORDER BY sweep"
        )
        return {r["sweep"]: r["n"] for r in rows}

    @staticmethod
    def insert_promotion(db: Db, **fields) -> int:
        fields.setdefault("created_at", time.time())
        return db.insert("promotions", fields)

    def promotions(self, sweep: str | None = None) -> list[dict]:
        """Lineage rows whose lower-rung or higher-rung sweep is `sweep` (all of them for None)."""
        if sweep is None:
            return self.query("SELECT * FROM promotions ORDER BY id")
        return self.query(
            "SELECT * FROM promotions WHERE from_sweep = ? OR to_sweep = ? ORDER BY id",
            (sweep, sweep),
        )


def measured_rates(run_dir: Path) -> tuple[float | None, float | None]:
    """Median MFU and tokens/s per device over the steps in the run's metrics.jsonl."""
    from training.run.metrics import read_metrics

    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None, None
    rows = read_metrics(path)

    def median(key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    return median("mfu"), median("tokens_per_s")
