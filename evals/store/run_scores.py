"""The score of a run on an eval metric, from the registry: what `ladder promote` ranks by.

    metric = parse_metric("reverse", cfg.eval)          # a task of the suite, task/metric, or average
    ckpt, score = run_score(run_dir, cfg, metric, {})   # the run's last registered checkpoint and its score

A run is scored by its last registered checkpoint (the highest step), counting only results
with the eval suite's current settings (evals/store/cache.py's settings key), as `ladder leaderboard`
does, so scores of different runs, and of different rungs, are comparable. Nothing is evaluated
here: `ladder eval` and trainer.eval_on_save fill the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from training.common.errors import ConfigError


@dataclass
class Metric:
    """--metric resolved against the eval suite: the tasks it averages and their settings keys."""

    name: str
    keys: dict[str, str]  # task -> settings key of the suite's current settings
    metric: str | None = None  # `task/metric` names the metric too
    suite_keys: set[str] = field(
        default_factory=set
    )  # every task of the suite (for "other settings")


def parse_metric(metric: str, eval_cfg: DictConfig) -> Metric:
    from evals.store.cache import task_specs

    specs = {s.name: s.settings_key for s in task_specs(eval_cfg)}
    if metric == "average":
        return Metric(metric, specs, None, set(specs.values()))
    task, _, name = metric.partition("/")
    if task not in specs:
        raise ConfigError(
            f"--metric {metric}: not a task of the eval suite {eval_cfg.name!r} (its tasks: "
            f"{', '.join(specs)}; or `average`). Give the eval overrides the sweep was scored "
            "with, e.g. eval=cpu"
        )
    return Metric(metric, {task: specs[task]}, name or None, set(specs.values()))


def registry_for(run_dir: str | Path, cfg: DictConfig, cache: dict | None = None):
    """The registry a run's checkpoints are registered in (registry.url, else beside the run);
    None when that file does not exist (nothing was ever evaluated there)."""
    from evals.store.registry import Registry, registry_path

    path = registry_path(cfg.registry.url, Path(run_dir) / "checkpoints" / "step_0")
    if isinstance(path, Path) and not path.is_file():  # a server URL always exists
        return None
    cache = {} if cache is None else cache
    if path not in cache:
        cache[path] = Registry(path, cfg.registry.busy_timeout_s, cache_root=Path(run_dir).parent)
    return cache[path]


def last_checkpoint(registry, run_dir: str) -> dict | None:
    rows = registry.checkpoints(run_dir=str(run_dir)) if registry is not None else []
    return max(rows, key=lambda r: r["step"] or 0) if rows else None


def score_of(registry, checkpoint: dict, metric: Metric) -> float | None:
    results = {r["settings_key"]: r for r in registry.results(checkpoint["content_hash"])}
    values = []
    for key in metric.keys.values():
        r = results.get(key)
        if r is None or (metric.metric is not None and r["metric"] != metric.metric):
            return None
        values.append(r["score"])
    return sum(values) / len(values)


def run_score(
    run_dir: str, cfg: DictConfig, metric: Metric, cache: dict
) -> tuple[dict | None, float | None]:
    """(the run's last registered checkpoint, its score on the metric), either None when missing."""
    registry = registry_for(run_dir, cfg, cache)
    ckpt = last_checkpoint(registry, run_dir)
    return ckpt, (score_of(registry, ckpt, metric) if ckpt is not None else None)


def available_metrics(run_dirs: list[str], cfg: DictConfig, metric: Metric, cache: dict) -> str:
    """What the registry does hold for these runs' last checkpoints, to say what --metric could be."""
    seen: dict[tuple[str, str], bool] = {}
    for run_dir in run_dirs:
        registry = registry_for(run_dir, cfg, cache)
        ckpt = last_checkpoint(registry, run_dir)
        if ckpt is None:
            continue
        for r in registry.results(ckpt["content_hash"]):
            label = (f"{r['task']}/{r['metric']}", r["suite"] or "?")
            seen[label] = seen.get(label, False) or r["settings_key"] in metric.suite_keys
    if not seen:
        return "the registry holds no scores for them"
    return "the registry holds: " + "; ".join(
        f"{label} (suite {suite}{'' if current else ', other settings than this eval config'})"
        for (label, suite), current in sorted(seen.items())
    )
