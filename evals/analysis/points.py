"""Sweep points over their seeds: the table `ladder leaderboard` and `ladder compare` add.

    pts = leaderboard_points(registry, eval_cfg, rows)   # rows: leaderboard()'s
    pts = comparison_points(comparison, registry)        # compare()'s entries
    print_points(pts, tasks, title)

Each run counts once, with its latest scored checkpoint (the same step for every seed of a
sweep); the runs that share a sweep.point are its seeds. Points are ranked by the mean over
seeds, each beside its seed standard deviation and its 95% CI over examples; "vs next" says
whether a point separates from the one ranked below it under evals/analysis/seed_noise.py's
rule (clears the CI over examples and the one over seeds and examples).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table

from evals.analysis.bootstrap import LEVEL
from evals.analysis.seed_noise import (
    PointDelta,
    average_point_delta,
    example_ci,
    matrix,
    paired_points,
    point_delta,
    point_of,
    seed_of,
    seed_std,
)
from training.common.console import make_console
from training.common.store import safe_text


@dataclass
class Seed:
    run_name: str
    step: int | None
    seed: int | None
    examples: dict[str, list[dict]]  # task -> per-example rows {id, score}


@dataclass
class Point:
    point: str
    seeds: list[Seed] = field(default_factory=list)
    value: float = 0.0  # mean over seeds of the ranked score (a task, or the tasks' average)
    std: float | None = None  # over seeds
    lo: float = 0.0  # 95% CI over examples of the seed-averaged score
    hi: float = 0.0
    vs_next: PointDelta | None = None

    def to_json(self) -> dict:
        return {
            "point": self.point,
            "runs": [s.run_name for s in self.seeds],
            "seeds": [s.seed for s in self.seeds],
            "steps": [s.step for s in self.seeds],
            "mean": self.value,
            "seed_std": self.std,
            "ci": [self.lo, self.hi],
            "vs_next": self.vs_next.to_json() if self.vs_next else None,
        }


def score(rows: list[dict]) -> float:
    return 100.0 * float(np.mean([float(e["score"]) for e in rows])) if rows else 0.0


def rank(groups: dict[str, list[Seed]], tasks: list[str]) -> list[Point]:
    """Points ranked by their mean over seeds, each with its spread and the test against the next."""
    pts = []
    for name, seeds in groups.items():
        per_seed = [np.mean([score(s.examples[t]) for t in tasks]) for s in seeds]
        samples = np.mean(
            [example_ci(matrix([s.examples[t] for s in seeds])[0]) for t in tasks],
            axis=0,
        )
        lo, hi = np.quantile(samples, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
        pts.append(
            Point(name, seeds, float(np.mean(per_seed)), seed_std(per_seed), float(lo), float(hi))
        )
    pts.sort(key=lambda p: (-p.value, p.point))
    for a, b in zip(pts, pts[1:]):
        a.vs_next = separation(b, a, tasks)
    return pts


def separation(base: Point, cand: Point, tasks: list[str]) -> PointDelta | None:
    """cand minus base over the tasks: seed_noise's two intervals, averaged over tasks."""
    deltas = []
    for t in tasks:
        mb, mc = paired_points(
            [s.examples[t] for s in base.seeds], [s.examples[t] for s in cand.seeds]
        )
        d = point_delta(mb, mc)
        if d is not None:
            deltas.append(d)
    return average_point_delta(deltas)


def checkpoint_examples(registry, ck: dict, keys: dict[str, str]) -> dict[str, list[dict]] | None:
    """A registered checkpoint's per-example rows for each task (task -> settings key), from the
    eval cache; None when one is missing."""
    from evals.store.cache import EvalCache

    cache = EvalCache(registry.cache_dir)
    results = {x["settings_key"]: x for x in registry.results(ck["content_hash"])}
    out = {}
    for t, key in keys.items():
        hit = cache.get(results[key]["cache_key"]) if key in results else None
        if not (hit or {}).get("examples"):
            return None
        out[t] = hit["examples"]
    return out


def leaderboard_points(
    registry, eval_cfg, rows: list[dict], task: str | None = None
) -> list[Point]:
    """The leaderboard's rows as points: each run's latest step with every task scored."""
    from evals.store.cache import task_specs

    keys = {s.name: s.settings_key for s in task_specs(eval_cfg)}
    tasks = [task] if task else list(keys)
    by_path = {c["path"]: c for c in registry.checkpoints()}
    latest: dict[str, dict] = {}
    for r in rows:
        if r.get("complete") and (
            r["run_name"] not in latest or (r["step"] or 0) > (latest[r["run_name"]]["step"] or 0)
        ):
            latest[r["run_name"]] = r
    groups: dict[str, list[Seed]] = {}
    for run, r in sorted(latest.items()):
        ck = by_path.get(r["path"])
        examples = checkpoint_examples(registry, ck, {t: keys[t] for t in tasks}) if ck else None
        if examples is None:
            continue  # per-example results gone from the cache: nothing to resample
        seed = Seed(run, r["step"], seed_of(ck["config_json"]), examples)
        groups.setdefault(point_of(ck["config_json"], run), []).append(seed)
    return rank(groups, tasks)


def comparison_points(c, registry) -> list[Point]:
    """compare()'s entries as points (their checkpoints' saved sweep.point)."""
    by_path = {c2["path"]: c2 for c2 in registry.checkpoints()}
    groups: dict[str, list[Seed]] = {}
    seen: set[str] = set()
    for e in c.entries:
        ck = by_path.get(str(e.checkpoint)) or {}
        run = e.result["run_name"] or str(e.checkpoint)
        if run in seen:  # one checkpoint per run: the first named
            continue
        seen.add(run)
        seed = Seed(
            run,
            e.result["step"],
            seed_of(ck.get("config_json")),
            {t: e.result["tasks"][t]["examples"] for t in c.tasks},
        )
        groups.setdefault(point_of(ck.get("config_json"), run), []).append(seed)
    return rank(groups, c.tasks)


def has_replicates(points: list[Point]) -> bool:
    return any(len(p.seeds) > 1 for p in points)


def verdict(d: PointDelta | None) -> str:
    if d is None:
        return "n/a"
    text = f"{d.delta:+.1f} [{d.lo:+.1f}, {d.hi:+.1f}]"
    if not d.clears_examples:
        return f"{text} not separable (examples)"
    if not d.seeds_measured:
        return f"{text} separable on examples; seed noise unmeasured (1 seed)"
    return f"{text} " + ("separable" if d.clears_seeds else "not separable (seeds)")


def print_points(pts: list[Point], title: str, console: Console | None = None) -> None:
    t = Table(title=title)
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("point", overflow="fold")
    t.add_column("seeds", justify="right", no_wrap=True)
    t.add_column("mean", justify="right", no_wrap=True)
    t.add_column("seed sd", justify="right", no_wrap=True)
    t.add_column("95% CI (examples)", justify="right", no_wrap=True)
    t.add_column("vs next: Δ [95% CI seeds+examples]", overflow="fold")
    for i, p in enumerate(pts, 1):
        t.add_row(
            str(i),
            safe_text(p.point),
            str(len(p.seeds)),
            f"{p.value:.1f}",
            f"{p.std:.1f}" if p.std is not None else "—",
            f"[{p.lo:.1f}, {p.hi:.1f}]",
            verdict(p.vs_next) if p.vs_next is not None or i < len(pts) else "",
        )
    console = console or make_console()
    console.print(t)
    console.print(
        "A point's score is the mean over its seeds. Two points are separable when the delta's 95% "
        "CI excludes 0 both over examples (paired) and over seeds and examples together (seeds "
        "resampled within each point, examples paired across points).",
        highlight=False,
    )
