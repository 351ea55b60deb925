"""Paired bootstrap confidence intervals for the difference between two checkpoints' scores.

    ladder compare A B                    # uses it for every task and for the average row
    d = paired_delta(base_examples, cand_examples)   # delta, 95% CI and resampled deltas

Two checkpoints scored on the same examples are compared example by example: the delta is the
mean of per-example differences (in points, 0-100) and its 95% interval comes from resampling
examples with replacement (2000 resamples, fixed seed, so the same inputs give the same
interval). The interval excluding 0 is what `compare` calls significant. Resampling examples
keeps each example's pair together, which is what makes a two-point gap on 500 shared
examples detectable when two unpaired intervals would overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95


@dataclass
class Delta:
    delta: float  # candidate minus baseline, in points
    lo: float
    hi: float
    n: int  # paired examples
    samples: np.ndarray  # the resampled deltas, for averaging across tasks

    @property
    def significant(self) -> bool:
        return self.lo > 0 or self.hi < 0


def paired_scores(base: list[dict], cand: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per-example scores of the examples both results hold, matched by example id."""
    b = {e["id"]: float(e["score"]) for e in base}
    c = {e["id"]: float(e["score"]) for e in cand}
    ids = [i for i in b if i in c]
    return np.array([b[i] for i in ids]), np.array([c[i] for i in ids])


def paired_delta(
    base: list[dict], cand: list[dict], resamples: int = RESAMPLES, seed: int = SEED
) -> Delta | None:
    b, c = paired_scores(base, cand)
    if len(b) == 0:
        return None
    diff = 100.0 * (c - b)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
    samples = diff[idx].mean(axis=1)
    lo, hi = np.quantile(samples, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return Delta(float(diff.mean()), float(lo), float(hi), len(diff), samples)


def average_delta(deltas: list[Delta]) -> Delta | None:
    """The average over tasks: each resample averages the tasks' resampled deltas (tasks are
    resampled independently: they hold different examples)."""
    if not deltas:
        return None
    samples = np.mean([d.samples for d in deltas], axis=0)
    lo, hi = np.quantile(samples, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return Delta(
        float(np.mean([d.delta for d in deltas])),
        float(lo),
        float(hi),
        sum(d.n for d in deltas),
        samples,
    )
