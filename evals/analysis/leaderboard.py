"""Rank registered checkpoints across runs by their scores on an eval suite.

    ladder leaderboard                                   # each run's best checkpoint, suite eval=synthetic
    ladder leaderboard --all                             # every checkpoint, untrained step 0 included
    ladder leaderboard --sweep lr-sweep --rung tiny --recipe sft --lr 3e-3 eval=cpu
    rows = leaderboard(registry, cfg.eval, sweep="lr-sweep")
    shown, hidden = best_per_run(rows)

Only results scored with the suite's current settings count (the same task versions, examples
and generation budget: evals/store/cache.py's settings key), so every number in a column is
comparable. Checkpoints are ranked by the average over the suite's tasks, or by one task with
--task; a checkpoint missing a task ranks after those that have all of them. By default each run
shows its best checkpoint only, and the untrained step-0 copies a run saves first (a DPO run's is
its SFT starting model) are left out: they rank a run's start, not what it trained. Nothing is
evaluated here: run `ladder eval` (or train with evals on save) first.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from evals.store.cache import task_specs
from evals.store.registry import Registry, adapter_of, adapter_text
from training.common.console import make_console
from training.common.errors import ConfigError, EvalError
from training.common.store import safe_text
from training.run.checkpoint import COMPLETE

# the command-line flag of each filter, to say in words what matched nothing
FLAGS = {
    "sweep": "--sweep",
    "rung": "--rung",
    "recipe": "--recipe",
    "data": "--data",
    "lr": "--lr",
    "run_name": "--run",
}


def leaderboard(
    registry: Registry,
    eval_cfg: DictConfig,
    task: str | None = None,
    top: int | None = None,
    **filters,
) -> tuple[list[str], list[dict]]:
    """Returns (task names, ranked rows); filters: sweep, rung, recipe, data, lr, run_name."""
    keys = {s.name: s.settings_key for s in task_specs(eval_cfg)}
    if task is not None and task not in keys:
        raise ConfigError(f"--task {task}: not a task of suite {eval_cfg.name!r} ({sorted(keys)})")
    checkpoints = registry.checkpoints(**filters)
    if not checkpoints:
        active = [f"{FLAGS.get(k, k)} {v}" for k, v in filters.items() if v is not None]
        known = ""
        if filters.get("sweep") is not None:
            sweeps = sorted(
                {safe_text(c["sweep"], markup=False) for c in registry.checkpoints() if c["sweep"]}
            )
            known = f"; the sweeps it knows: {', '.join(sweeps) if sweeps else 'none'}"
        raise EvalError(
            f"no checkpoints in the registry {registry.path}"
            + (f" match {' and '.join(active)}" if active else "")
            + known
            + "; evaluate some with `ladder eval`"
        )
    by_hash: dict[str, dict] = {}
    rows = []
    for ck in checkpoints:
        if ck["content_hash"] not in by_hash:
            by_hash[ck["content_hash"]] = {
                r["settings_key"]: r for r in registry.results(ck["content_hash"])
            }
        res = by_hash[ck["content_hash"]]
        scores = {t: res[k]["score"] for t, k in keys.items() if k in res}
        if not scores:
            continue
        complete = len(scores) == len(keys)
        rows.append(
            {
                **{
                    k: ck[k]
                    for k in ("run_name", "step", "rung", "recipe", "data", "lr", "sweep", "path")
                },
                # keep_last prunes old checkpoints: their scores stay, but they cannot be promoted or reloaded
                "on_disk": Path(ck["path"], COMPLETE).is_file(),
                "adapter": adapter_of(ck),  # {method, r, alpha}; None: full weights
                "scores": scores,
                "complete": complete,
                "average": sum(scores.values()) / len(scores) if complete else None,
            }
        )
    if not rows:
        raise EvalError(
            f"none of the {len(checkpoints)} matching checkpoint(s) has results for suite "
            f"{eval_cfg.name!r} with its current settings; run `ladder eval CKPT eval={eval_cfg.name}`"
        )

    def rank_key(r):
        value = r["scores"].get(task) if task else r["average"]
        return (value is None, -(value or 0.0), r["run_name"] or "", r["step"] or 0)

    rows.sort(key=rank_key)
    return list(keys), rows[:top] if top else rows


def best_per_run(rows: list[dict]) -> tuple[list[dict], dict[str, int]]:
    """The best-ranked checkpoint of each run from ranked rows, step-0 copies left out; and how
    many were hidden, as {"initial": step-0 checkpoints, "other": the runs' other checkpoints}."""
    shown, seen, hidden = [], set(), {"initial": 0, "other": 0}
    for r in rows:
        run = r["run_name"] or r["path"]
        if r["step"] == 0:
            hidden["initial"] += 1
        elif run in seen:
            hidden["other"] += 1
        else:
            seen.add(run)
            shown.append(r)
    return shown, hidden


def hidden_note(hidden: dict[str, int]) -> str | None:
    parts = []
    if hidden["initial"]:
        parts.append(f"{hidden['initial']} untrained step-0 checkpoint(s)")
    if hidden["other"]:
        parts.append(f"{hidden['other']} other checkpoint(s) of the runs shown")
    if not parts:
        return None
    return f"not shown: {' and '.join(parts)}; --all shows every checkpoint"


def print_leaderboard(
    tasks: list[str], rows: list[dict], suite: str, by: str | None, console: Console | None = None
) -> None:
    one_task = len(tasks) == 1  # its average is its score: no column for it
    by = by or (tasks[0] if one_task else "the average over tasks")
    t = Table(title=f"leaderboard: suite {suite!r}, ranked by {by}")
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("checkpoint", overflow="fold")
    t.add_column("rung recipe data lr", no_wrap=True)
    show_sweep = any(r["sweep"] for r in rows)
    if show_sweep:
        t.add_column("sweep", overflow="fold")
    show_adapter = any(r["adapter"] for r in rows)  # a column only where LoRA is in the table
    if show_adapter:
        t.add_column("adapter", overflow="fold")
    for task in tasks:  # long task names fold in the header; a score (<= 5 characters) never does
        t.add_column(task, justify="right", min_width=5, overflow="fold")
    if not one_task:
        t.add_column("average", justify="right", no_wrap=True)
    for i, r in enumerate(rows, 1):  # registry rows may have been written by other tools: safe_text
        lr = f"{r['lr']:.0e}" if r["lr"] is not None else "?"
        meta = " ".join(safe_text(r[k] or "?") for k in ("rung", "recipe", "data")) + f" {lr}"
        name = f"{safe_text(r['run_name'])}@{safe_text(r['step'])}" + (
            # a line of its own: folded by width, the note would be cut mid-phrase
            "" if r["on_disk"] else "\n[dim](pruned from disk)[/dim]"
        )
        t.add_row(
            str(i),
            name,
            meta,
            *([safe_text(r["sweep"] or "")] if show_sweep else []),
            *([safe_text(adapter_text(r["adapter"]))] if show_adapter else []),
            *[f"{r['scores'][k]:.1f}" if k in r["scores"] else "—" for k in tasks],
            *([] if one_task else [f"{r['average']:.1f}" if r["average"] is not None else "—"]),
        )
    (console or make_console()).print(t)
