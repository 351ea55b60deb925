"""Seed noise in promotion: rank points by their mean over seeds, and check the cut at K.

    groups, cut = rank_by_point(ranked_runs, top, examples_of)   # promote.py, --top K
    acc, lo, hi = decision_accuracy_ci(lower, higher)            # promotion_report.py

A sweep run with sweep.seeds=N has N runs per point (the ledger's jobs.point); `ladder promote`
ranks the points by the mean of their runs' scores and promotes each chosen point once, as
its first replicate (the lowest seed: no pick of a lucky seed). The cut between the K-th and the
(K+1)-th point is tested with evals/analysis/seed_noise.py's rule (separable only when the
interval over examples and the one over seeds and examples both exclude 0); when it does not
clear, promote says so and lists both, and --strict refuses.

DataDecide's pairwise decision accuracy (Magnusson et al., 2025) is the fraction of pairs of
configurations whose order at the lower rung holds at the higher rung (a pair tied at the higher
rung counts half; pairs tied at the lower rung are not decisions and are skipped). Its interval
resamples the configurations with replacement (2000 seeded resamples, pairs of distinct draws).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from evals.analysis.bootstrap import LEVEL, RESAMPLES, SEED
from training.common.errors import ConfigError


@dataclass
class PointGroup:
    point: str
    runs: list = field(default_factory=list)  # promote.Point rows, lowest seed first
    mean: float = 0.0

    @property
    def representative(self):
        return self.runs[0]


@dataclass
class Cut:
    """The test between the K-th and the (K+1)-th point."""

    above: PointGroup
    below: PointGroup
    delta: object | None  # seed_noise.PointDelta

    @property
    def separable(self) -> bool:
        return self.delta is not None and self.delta.significant

    def note(self, k: int) -> str:
        d = self.delta
        what = (
            "no shared per-example results to test them"
            if d is None
            else f"Δ {d.delta:+.2f} points, 95% CI over examples [{d.example_lo:+.2f}, "
            f"{d.example_hi:+.2f}], over seeds and examples [{d.lo:+.2f}, {d.hi:+.2f}], seeds "
            f"{d.seeds[1]} and {d.seeds[0]}"
        )
        return (
            f"points ranked {k} and {k + 1} are not separable: {self.above.point} "
            f"(mean {self.above.mean:.4g} over {len(self.above.runs)} seed(s)) and "
            f"{self.below.point} (mean {self.below.mean:.4g} over {len(self.below.runs)}); {what}"
        )


def point_name(run) -> str:
    return run.job.get("point") or run.run_name


def rank_by_point(
    runs: list, top: int, examples_of: Callable[[object], dict | None]
) -> tuple[list[PointGroup], Cut | None]:
    """runs: scored promote.Point rows. examples_of(run): {task: per-example rows} or None."""
    from evals.analysis.seed_noise import average_point_delta, paired_points, point_delta

    groups: dict[str, PointGroup] = {}
    for r in runs:
        groups.setdefault(point_name(r), PointGroup(point_name(r))).runs.append(r)
    for g in groups.values():
        g.runs.sort(key=lambda r: (seed_key(r), r.run_name))
        g.mean = float(np.mean([r.score for r in g.runs]))
    ranked = sorted(groups.values(), key=lambda g: (-g.mean, g.point))
    if top > len(ranked):
        raise ConfigError(
            f"--top {top}, but the sweep has {len(ranked)} finished point(s) "
            f"({len(runs)} runs); use --top {len(ranked)} or less"
        )
    if top == len(ranked):
        return ranked, None
    above, below = ranked[top - 1], ranked[top]
    ex_a = [examples_of(r) for r in above.runs]
    ex_b = [examples_of(r) for r in below.runs]
    if any(e is None for e in ex_a + ex_b):
        return ranked, Cut(above, below, None)
    deltas = []
    for t in ex_a[0]:
        mb, ma = paired_points([e[t] for e in ex_b], [e[t] for e in ex_a])
        d = point_delta(mb, ma)
        if d is not None:
            deltas.append(d)
    return ranked, Cut(above, below, average_point_delta(deltas))


def seed_key(run) -> int:
    try:
        import json

        for ov in json.loads(run.job.get("overrides") or "[]"):
            name, _, value = ov.lstrip("+").partition("=")
            if name == "trainer.seed":
                return int(value)
    except (ValueError, TypeError):
        pass
    return 0


def decision_accuracy(lower: list[float], higher: list[float]) -> float | None:
    """Fraction of pairs ordered at the lower rung whose order holds at the higher rung."""
    agree = pairs = 0.0
    for i, j in itertools.combinations(range(len(lower)), 2):
        a = np.sign(lower[i] - lower[j])
        if a == 0:
            continue
        b = np.sign(higher[i] - higher[j])
        pairs += 1
        agree += 1.0 if a == b else 0.5 if b == 0 else 0.0
    return agree / pairs if pairs else None


def decision_accuracy_ci(
    lower: list[float], higher: list[float], resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float | None, float | None, float | None]:
    """(accuracy, 95% interval) with configurations resampled with replacement."""
    acc = decision_accuracy(lower, higher)
    n = len(lower)
    if acc is None or n < 3:
        return acc, None, None
    x, y = np.asarray(lower, float), np.asarray(higher, float)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        i, j = np.triu_indices(n, 1)
        i, j = idx[i], idx[j]
        keep = i != j  # a configuration drawn twice is not a pair
        a = np.sign(x[i] - x[j])[keep]
        b = np.sign(y[i] - y[j])[keep]
        decided = a != 0
        if decided.sum():
            score = np.where(a == b, 1.0, np.where(b == 0, 0.5, 0.0))[decided]
            draws.append(score.mean())
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return acc, float(lo), float(hi)
