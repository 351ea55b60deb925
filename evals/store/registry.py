"""The registry: checkpoints, their run metadata and their eval scores, in one store.

    ladder eval CHECKPOINT                  # registers the checkpoint and its scores
    ladder leaderboard / ladder compare     # read it, offline
    reg = Registry.for_checkpoint(ckpt)     # <run root>/registry.db, or registry.url when set

A checkpoint row holds its path, content hash, run, rung, recipe, data, sweep, learning rate, step,
saved-at time, device-hours at that step, the whole resolved config, its lineage (its run and
the model it started from, and for an average the checkpoints averaged: checkpoint_lineage) and,
for an adapter checkpoint, its adapter (method, r, alpha, from its adapter_config.json). A
result row holds one task's score for one content hash under one set of settings (its cache key),
and the path of the file with every example's result (evals/store/cache.py). Scores join
checkpoints by content hash, so a copied checkpoint shares its results. Many processes write at
once (async evaluators of a run, a sweep's jobs): short transactions on a SQLite file or a team's
PostgreSQL server (registry.url=postgresql://...), as in the ledger (training/common/store.py). The
per-example results stay files: beside a SQLite registry, or under the run root for a server.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import OmegaConf

from evals.store.checkpoint_ref import CheckpointRef, read_ref, run_dir_of  # noqa: F401  (run_dir_of: for older callers)
from training.common.store import Store
from training.common.store_url import parse_store_url

SCHEMA_VERSION = 3  # 2: checkpoints.lineage; 3: checkpoints.adapter
MIGRATIONS = {
    2: "ALTER TABLE checkpoints ADD COLUMN lineage TEXT",
    3: "ALTER TABLE checkpoints ADD COLUMN adapter TEXT",
}
SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    path TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    run_name TEXT, run_dir TEXT, rung TEXT, recipe TEXT, data TEXT, sweep TEXT,
    lr DOUBLE PRECISION, step INTEGER,
    saved_at TEXT,                 -- from ladder_meta.json (UTC)
    device_hours DOUBLE PRECISION,             -- GPU-hours the run had used at this step
    config_json TEXT,              -- the resolved run config (ladder_config.yaml)
    lineage TEXT,                  -- JSON (checkpoint_lineage); null in rows before version 2
    adapter TEXT,                  -- JSON {method, r, alpha}; null: full weights, or before version 3
    registered_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_hash ON checkpoints (content_hash);
CREATE INDEX IF NOT EXISTS checkpoints_sweep ON checkpoints (sweep);
CREATE TABLE IF NOT EXISTS results (
    cache_key TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    task TEXT NOT NULL, metric TEXT NOT NULL, score DOUBLE PRECISION NOT NULL, n INTEGER NOT NULL,
    task_version TEXT, settings_key TEXT NOT NULL, eval_code_version INTEGER,
    suite TEXT, examples_path TEXT, seconds DOUBLE PRECISION,
    generation_json TEXT, prompt_format_json TEXT,
    evaluated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS results_hash ON results (content_hash);
CREATE TABLE IF NOT EXISTS wandb_logged (
    wandb_run_id TEXT NOT NULL, cache_key TEXT NOT NULL, step INTEGER,
    PRIMARY KEY (wandb_run_id, cache_key)
);
"""


def path_from_url(url: str) -> Path | str:
    """The SQLite file registry.url names, or the URL itself for a server."""
    where = parse_store_url(url, "registry.url")
    return where.path if where.path is not None else where.url


def run_root_of(ckpt: Path | None, run_root: str | Path = "runs") -> Path:
    run_dir = run_dir_of(ckpt) if ckpt is not None else None
    return run_dir.parent if run_dir is not None else Path(run_root)


def registry_path(
    url: str | None, ckpt: Path | None = None, run_root: str | Path = "runs"
) -> Path | str:
    """registry.url (a SQLite Path, or a server URL), else registry.db in the checkpoint's run root."""
    if url:
        return path_from_url(url)
    return run_root_of(ckpt, run_root) / "registry.db"


class Registry(Store):
    COMPONENT = "registry"
    URL_KEY = "registry.url"
    SCHEMA = SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    MIGRATIONS = MIGRATIONS  # an older registry gains the columns when opened; its rows stay

    def __init__(self, target, busy_timeout_s: float = 60.0, cache_root: str | Path | None = None):
        """cache_root: where a server-backed registry keeps per-example results (default ./runs)."""
        self.cache_root = Path(cache_root) if cache_root is not None else None
        super().__init__(target, busy_timeout_s)

    @classmethod
    def from_config(cls, cfg, ckpt: Path | None = None) -> Registry:
        return cls(
            registry_path(cfg.registry.url, ckpt, cfg.trainer.run_root),
            cfg.registry.busy_timeout_s,
            cache_root=run_root_of(ckpt, cfg.trainer.run_root),
        )

    @property
    def cache_dir(self) -> Path:
        if self.backend == "sqlite":
            return self.path.parent / "eval_cache"
        return (self.cache_root or Path("runs")) / "eval_cache"

    # ---- writes ------------------------------------------------------------------------
    def register_checkpoint(
        self, ckpt: CheckpointRef | Path, content_hash: str | None = None
    ) -> dict:
        """ckpt: the resolved checkpoint (evals/store/checkpoint_ref.py), or a path and its content hash."""
        row = checkpoint_metadata(
            ckpt if isinstance(ckpt, CheckpointRef) else read_ref(ckpt, content_hash)
        )
        cols = ", ".join(row)
        update = ", ".join(f"{c} = excluded.{c}" for c in row if c != "path")
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO checkpoints ({cols}) VALUES ({', '.join('?' * len(row))}) "
                f"ON CONFLICT (path) DO UPDATE SET {update}",
                tuple(row.values()),
            )
        return row

    def record_result(
        self,
        cache_key: str,
        content_hash: str,
        spec,
        result: dict,
        examples_path: Path,
        suite: str,
        replace: bool = True,
    ) -> None:
        """replace=False (a cache hit) keeps an existing row and its evaluated_at time."""
        from evals.store.cache import EVAL_CODE_VERSION

        cols = (
            "cache_key, content_hash, task, metric, score, n, task_version, settings_key, eval_code_version, "
            "suite, examples_path, seconds, generation_json, prompt_format_json, evaluated_at"
        )
        on_conflict = (
            "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in cols.split(", ")[1:])
            if replace
            else "DO NOTHING"
        )
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO results ({cols}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                f"ON CONFLICT (cache_key) {on_conflict}",
                (
                    cache_key,
                    content_hash,
                    spec.name,
                    result["metric"],
                    result["score"],
                    result["n"],
                    str(result.get("task_version")),
                    spec.settings_key,
                    EVAL_CODE_VERSION,
                    suite,
                    str(examples_path),
                    result.get("seconds"),
                    json.dumps(result.get("generation")),
                    json.dumps(result.get("prompt_format")),
                    time.time(),
                ),
            )

    def mark_logged(self, wandb_run_id: str, keys: list[str], step: int) -> None:
        with self.transaction() as db:
            for k in keys:
                db.execute(
                    "INSERT INTO wandb_logged (wandb_run_id, cache_key, step) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (wandb_run_id, k, step),
                )

    # ---- reads -------------------------------------------------------------------------
    def was_logged(self, wandb_run_id: str, keys: list[str]) -> bool:
        if not keys:  # `IN ()` is not SQL PostgreSQL accepts
            return False
        marks = "?" * len(keys)
        rows = self.query(
            f"SELECT COUNT(*) AS n FROM wandb_logged WHERE wandb_run_id = ? AND cache_key IN "
            f"({', '.join(marks)})",
            (wandb_run_id, *keys),
        )
        return bool(keys) and rows[0]["n"] == len(keys)

    def checkpoints(
        self, sweep: str | None = None, run_dir: str | None = None, **equal
    ) -> list[dict]:
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


def checkpoint_metadata(ref: CheckpointRef) -> dict:
    """What the registry keeps about a checkpoint: its resolved value's fields (read once)."""
    run_dir, step, sel, cfg = ref.run_dir, ref.step, ref.select, ref.config
    lr = sel("optim.lr")
    if lr is None and sel("rung.lr") is not None:  # the rule of training/config/validate.py
        lr = sel("rung.lr") * (sel("recipe.lr_scale") or 1.0)
        if sel("model.lora.enabled"):  # LoRA's rate (model.lora.lr_scale) was left out before
            lr *= sel("model.lora.lr_scale") or 1.0
    return {
        "path": str(ref.path),
        "content_hash": ref.content_hash,
        "run_name": ref.run_name,
        "run_dir": str(run_dir) if run_dir else None,
        "rung": sel("rung.name"),
        "recipe": sel("recipe.name"),
        "data": sel("data.name"),
        "sweep": sel("sweep.name"),
        "lr": lr,
        "step": step,
        "saved_at": ref.meta.get("saved_at"),
        "device_hours": device_hours_at(run_dir, step)
        if run_dir is not None and step is not None
        else None,
        "config_json": json.dumps(OmegaConf.to_container(cfg, enum_to_str=True))
        if cfg is not None
        else None,
        "lineage": json.dumps(checkpoint_lineage(ref)),
        "adapter": json.dumps(ref.adapter) if ref.adapter is not None else None,
        "registered_at": time.time(),
    }


def checkpoint_lineage(ref: CheckpointRef) -> dict:
    """What a checkpoint came from: its run, its step, the model it started from
    (model.name_or_path: the SFT checkpoint a DPO run trained on), and for an average
    (`ladder average`, trainer.average_last) the checkpoints averaged, each's path, run, step and
    content hash, as ladder_meta.json's `averaged_from` names them."""
    init = ref.select("model.name_or_path")
    lineage = {
        "run_name": ref.run_name,
        "run_dir": str(ref.run_dir) if ref.run_dir else None,
        "step": ref.step,
        "init": init if isinstance(init, str) else None,
    }
    averaged = ref.meta.get("averaged_from")
    if isinstance(averaged, list):  # the checkpoint's own file: keep only the fields we know
        keys = ("path", "run_name", "step", "content_hash")
        lineage["averaged_from"] = [
            {k: x.get(k) for k in keys} for x in averaged if isinstance(x, dict)
        ]
    return lineage


def averaged_from(row: dict) -> list[dict]:
    """The checkpoints a registry row's checkpoint averages ([] for a trained one, and for a row
    registered before the lineage column)."""
    try:
        lineage = json.loads(row.get("lineage") or "null")
    except ValueError:
        return []
    found = lineage.get("averaged_from") if isinstance(lineage, dict) else None
    return found if isinstance(found, list) else []


def adapter_of(row: dict) -> dict | None:
    """A registry row's adapter {method, r, alpha}, None for full weights (and for a row registered
    before the adapter column, or one another tool wrote that does not hold an object)."""
    try:
        adapter = json.loads(row.get("adapter") or "null")
    except ValueError:
        return None
    return adapter if isinstance(adapter, dict) else None


def adapter_text(adapter: dict | None) -> str:
    """How a listing shows it: `LoRA r=16 alpha=32`, or `full` for full fine-tuning."""
    if adapter is None:
        return "full"
    return f"LoRA r={adapter.get('r')} alpha={adapter.get('alpha')}"


def device_hours_at(run_dir: Path, step: int) -> float | None:
    """GPU-hours a run had used when it saved `step`: the run's total (heartbeat.json's
    device_hours, or the ledger's used hours) shared out over steps by metrics.jsonl's step times."""
    from training.run.heartbeat import read_heartbeat
    from training.run.metrics import read_metrics

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
