"""The local registry: checkpoints, their run metadata and their eval scores, in one SQLite file.

    ladder eval CHECKPOINT                  # registers the checkpoint and its scores
    ladder leaderboard / ladder compare     # read it, offline
    reg = Registry.for_checkpoint(ckpt)     # <run root>/registry.db, or registry.url when set

A checkpoint row holds its path, content hash, run, rung, recipe, data, sweep, learning rate,
step, saved-at time, device-hours at that step and the whole resolved config. A result row
holds one task's score for one content hash under one set of settings (its cache key), and
the path of the file with every example's result (evals/cache.py). Scores join checkpoints by
content hash, so a copied checkpoint shares its results. Many processes write at once (async
evaluators of a run, a sweep's jobs): WAL mode, a busy timeout and short BEGIN IMMEDIATE
transactions, as in the ledger (launch/ledger.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import OmegaConf

from training import sqlite_store
from training.sqlite_store import SqliteStore

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    path TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    run_name TEXT, run_dir TEXT, rung TEXT, recipe TEXT, data TEXT, sweep TEXT,
    lr REAL, step INTEGER,
    saved_at TEXT,                 -- from ladder_meta.json (UTC)
    device_hours REAL,             -- GPU-hours the run had used at this step
    config_json TEXT,              -- the resolved run config (ladder_config.yaml)
    registered_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_hash ON checkpoints (content_hash);
CREATE INDEX IF NOT EXISTS checkpoints_sweep ON checkpoints (sweep);
CREATE TABLE IF NOT EXISTS results (
    cache_key TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    task TEXT NOT NULL, metric TEXT NOT NULL, score REAL NOT NULL, n INTEGER NOT NULL,
    task_version TEXT, settings_key TEXT NOT NULL, eval_code_version INTEGER,
    suite TEXT, examples_path TEXT, seconds REAL,
    generation_json TEXT, prompt_format_json TEXT,
    evaluated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_hash ON results (content_hash);
CREATE TABLE IF NOT EXISTS wandb_logged (
    wandb_run_id TEXT NOT NULL, cache_key TEXT NOT NULL, step INTEGER,
    PRIMARY KEY (wandb_run_id, cache_key)
);
"""


def path_from_url(url: str) -> Path:
    return sqlite_store.path_from_url(url, "registry.url")


def run_dir_of(ckpt: Path) -> Path | None:
    """runs/<name> for runs/<name>/checkpoints/step_N; None for a checkpoint outside a run."""
    ckpt = Path(ckpt).resolve()
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


def registry_path(url: str | None, ckpt: Path | None = None, run_root: str | Path = "runs") -> Path:
    if url:
        return path_from_url(url)
    run_dir = run_dir_of(ckpt) if ckpt is not None else None
    return (run_dir.parent if run_dir is not None else Path(run_root)) / "registry.db"


class Registry(SqliteStore):
    SCHEMA = SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION

    @classmethod
    def from_config(cls, cfg, ckpt: Path | None = None) -> "Registry":
        return cls(registry_path(cfg.registry.url, ckpt, cfg.trainer.run_root), cfg.registry.busy_timeout_s)

    @property
    def cache_dir(self) -> Path:
        return self.path.parent / "eval_cache"

    # ---- writes ------------------------------------------------------------------------
    def register_checkpoint(self, ckpt: Path, content_hash: str) -> dict:
        row = checkpoint_metadata(Path(ckpt), content_hash)
        cols = ", ".join(row)
        with self.transaction() as db:
            db.execute(f"INSERT OR REPLACE INTO checkpoints ({cols}) VALUES ({', '.join('?' * len(row))})",
                       tuple(row.values()))
        return row

    def record_result(self, cache_key: str, content_hash: str, spec, result: dict, examples_path: Path,
                      suite: str, replace: bool = True) -> None:
        """replace=False (a cache hit) keeps an existing row and its evaluated_at time."""
        from evals.cache import EVAL_CODE_VERSION
        with self.transaction() as db:
            db.execute(
                f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO results (cache_key, content_hash, task, metric, score, n, task_version, "
                "settings_key, eval_code_version, suite, examples_path, seconds, generation_json, "
                "prompt_format_json, evaluated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (cache_key, content_hash, spec.name, result["metric"], result["score"], result["n"],
                 str(result.get("task_version")), spec.settings_key, EVAL_CODE_VERSION, suite, str(examples_path),
                 result.get("seconds"), json.dumps(result.get("generation")),
                 json.dumps(result.get("prompt_format")), time.time()))

    def mark_logged(self, wandb_run_id: str, keys: list[str], step: int) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO wandb_logged VALUES (?, ?, ?)", [(wandb_run_id, k, step) for k in keys])

    # ---- reads -------------------------------------------------------------------------
    def was_logged(self, wandb_run_id: str, keys: list[str]) -> bool:
        marks = "?" * len(keys)
        rows = self.query(f"SELECT COUNT(*) AS n FROM wandb_logged WHERE wandb_run_id = ? AND cache_key IN "
                          f"({', '.join(marks)})", (wandb_run_id, *keys))
        return bool(keys) and rows[0]["n"] == len(keys)

    def checkpoints(self, sweep: str | None = None, run_dir: str | None = None, **equal) -> list[dict]:
        where, args = [], []
        for col, value in [("sweep", sweep), ("run_dir", run_dir), *equal.items()]:
            if value is None:
                continue
            if col == "lr":  # floats from YAML: compare with a relative tolerance
                where.append("ABS(lr - ?) <= 1e-9 * ABS(?)")
                args += [float(value), float(value)]
            else:
                where.append(f"{col} = ?")
                args.append(value)
        sql = "SELECT * FROM checkpoints" + (" WHERE " + " AND ".join(where) if where else "")
        return self.query(sql + " ORDER BY run_name, step", tuple(args))

    def results(self, content_hash: str, settings_keys: list[str] | None = None) -> list[dict]:
        rows = self.query("SELECT * FROM results WHERE content_hash = ?", (content_hash,))
        return [r for r in rows if settings_keys is None or r["settings_key"] in settings_keys]


def checkpoint_metadata(ckpt: Path, content_hash: str) -> dict:
    """What the registry keeps about a checkpoint: read from its own files and its run's."""
    from training.schema import LadderConfig
    meta_file, cfg_file = ckpt / "ladder_meta.json", ckpt / "ladder_config.yaml"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    cfg = None
    if cfg_file.exists():
        saved = OmegaConf.load(cfg_file)
        try:
            cfg = OmegaConf.merge(OmegaConf.structured(LadderConfig), saved)
        except Exception:  # a config from an older schema: keep what it says, untyped
            cfg = saved
    run_dir = run_dir_of(ckpt)
    step = meta.get("step")
    sel = (lambda key: OmegaConf.select(cfg, key)) if cfg is not None else (lambda key: None)
    lr = sel("optim.lr")
    if lr is None and sel("rung.lr") is not None:
        lr = sel("rung.lr") * (sel("recipe.lr_scale") or 1.0)
    return {
        "path": str(ckpt.resolve()), "content_hash": content_hash,
        "run_name": meta.get("run_name") or sel("trainer.run_name") or (run_dir.name if run_dir else ckpt.name),
        "run_dir": str(run_dir) if run_dir else None,
        "rung": sel("rung.name"), "recipe": sel("recipe.name"), "data": sel("data.name"), "sweep": sel("sweep.name"),
        "lr": lr, "step": step, "saved_at": meta.get("saved_at"),
        "device_hours": device_hours_at(run_dir, step) if run_dir is not None and step is not None else None,
        "config_json": json.dumps(OmegaConf.to_container(cfg, enum_to_str=True)) if cfg is not None else None,
        "registered_at": time.time(),
    }


def device_hours_at(run_dir: Path, step: int) -> float | None:
    """GPU-hours a run had used when it saved `step`: the run's total (heartbeat.json's
    device_hours, or the ledger's used hours) shared out over steps by metrics.jsonl's step times."""
    from training.heartbeat import read_heartbeat
    from training.metrics import read_metrics
    hb = read_heartbeat(run_dir) or {}
    total, upto_step = hb.get("device_hours"), hb.get("step")
    if total is None:
        return None
    try:
        rows = read_metrics(run_dir / "metrics.jsonl")
    except OSError:
        rows = []
    times = {r["step"]: r.get("step_time_s") or 0.0 for r in rows}
    if not times or step == 0:
        return 0.0 if step == 0 else float(total)
    upto_step = upto_step or max(times)
    spent = sum(t for s, t in times.items() if s <= upto_step)
    done = sum(t for s, t in times.items() if s <= step)
    return float(total) * (done / spent) if spent > 0 else float(total)
