"""Seed noise: sweep points as the mean over their replicates, and when two points differ.

    ladder leaderboard --sweep lr        # a points table when a point has several seeds
    ladder compare sweep:lr              # the same points, each against the baseline's point
    d = point_delta(base, cand)          # base, cand: one (seeds x examples) score matrix each

A point is what `sweep.seeds=N` runs N times (sweep.point, launch/cluster/sweep.py); a run
without one is a point of one seed. Its score is the mean over its seeds, shown with the seed
standard deviation (ddof 1) beside the 95% CI over examples.

The rule: a difference between two points is significant only when it clears both kinds of
noise. (1) Examples: the paired bootstrap over examples (evals/analysis/bootstrap.py) of the
seed-averaged scores excludes 0. (2) Seeds and examples together: each resample draws the
examples once, shared by the two points (paired, as in (1)), and each point's seeds with
replacement, independently (the seeds of two points are different runs, nothing pairs them);
the 95% interval of that delta excludes 0. With one seed per point (2) adds nothing and the
seed noise is unmeasured: `seeds_measured` is false and the tables say so. With 2-3 seeds the
seed resampling is coarse: the interval is honest about what a handful of runs can show,
not a precise estimate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from evals.analysis.bootstrap import LEVEL, RESAMPLES, SEED

CHUNK = 250  # resamples per batch: bounds memory at CHUNK x seeds x examples floats


@dataclass
class PointDelta:
    delta: float  # candidate point's mean over seeds minus the baseline's, in points (0-100)
    lo: float  # 95% interval over seeds and examples
    hi: float
    example_lo: float  # 95% interval over examples only, of the seed-averaged scores
    example_hi: float
    n: int  # paired examples
    seeds: tuple[int, int]  # (baseline, candidate)
    samples: np.ndarray | None = None  # resampled deltas over seeds and examples, for averaging
    example_samples: np.ndarray | None = None  # over examples only

    @property
    def seeds_measured(self) -> bool:
        return min(self.seeds) > 1

    @property
    def clears_examples(self) -> bool:
        return self.example_lo > 0 or self.example_hi < 0

    @property
    def clears_seeds(self) -> bool:
        return self.lo > 0 or self.hi < 0

    @property
    def significant(self) -> bool:
        return self.clears_examples and self.clears_seeds

    def to_json(self) -> dict:
        return {
            "delta": self.delta,
            "lo": self.lo,
            "hi": self.hi,
            "example_lo": self.example_lo,
            "example_hi": self.example_hi,
            "n": self.n,
            "seeds": list(self.seeds),
            "seeds_measured": self.seeds_measured,
            "significant": self.significant,
        }


def seed_std(values) -> float | None:
    """The standard deviation over seeds (ddof 1), None for a single seed."""
    v = np.asarray(values, dtype=float)
    return float(v.std(ddof=1)) if len(v) > 1 else None


def matrix(seeds: list[list[dict]], ids: list | None = None) -> tuple[np.ndarray, list]:
    """Per-example rows ({id, score}) of each seed as a (seeds x examples) matrix over the
    examples every seed holds (or over `ids`)."""
    by = [{e["id"]: float(e["score"]) for e in rows} for rows in seeds]
    if ids is None:
        ids = [i for i in by[0] if all(i in b for b in by[1:])]
    return np.array([[b[i] for i in ids] for b in by], dtype=float).reshape(len(by), len(ids)), ids


def paired_points(base: list[list[dict]], cand: list[list[dict]]) -> tuple[np.ndarray, np.ndarray]:
    """Both points' matrices over the examples all their seeds share, matched by example id."""
    _, ids_b = matrix(base)
    _, ids_c = matrix(cand)
    shared = set(ids_c)
    ids = [i for i in ids_b if i in shared]
    return matrix(base, ids)[0], matrix(cand, ids)[0]


def point_delta(
    base: np.ndarray, cand: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED
) -> PointDelta | None:
    """base, cand: (seeds x examples) scores in [0, 1] on the same examples, in the same order."""
    if base.shape[1] == 0 or base.shape[1] != cand.shape[1]:
        return None
    b, c = 100.0 * base, 100.0 * cand
    n = b.shape[1]
    rng = np.random.default_rng(seed)
    q = [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2]
    diff = c.mean(axis=0) - b.mean(axis=0)  # seed-averaged, per example
    ex = diff[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    both = []
    for start in range(0, resamples, CHUNK):
        r = min(CHUNK, resamples - start)
        idx = rng.integers(0, n, size=(r, n))  # the same examples for both points: paired
        mb = b[:, idx].mean(axis=2)  # (seeds, r): each seed's mean on the drawn examples
        mc = c[:, idx].mean(axis=2)
        sb = rng.integers(0, b.shape[0], size=(r, b.shape[0]))  # seeds, with replacement
        sc = rng.integers(0, c.shape[0], size=(r, c.shape[0]))
        cols = np.arange(r)[:, None]
        both.append(mc[sc, cols].mean(axis=1) - mb[sb, cols].mean(axis=1))
    lo, hi = np.quantile(np.concatenate(both), q)
    elo, ehi = np.quantile(ex, q)
    return PointDelta(
        float(diff.mean()),
        float(lo),
        float(hi),
        float(elo),
        float(ehi),
        n,
        (b.shape[0], c.shape[0]),
        np.concatenate(both),
        ex,
    )


def average_point_delta(deltas: list[PointDelta]) -> PointDelta | None:
    """The average over tasks: each resample averages the tasks' resampled deltas (as
    bootstrap.average_delta does for checkpoints)."""
    if not deltas:
        return None
    both = np.mean([d.samples for d in deltas], axis=0)
    ex = np.mean([d.example_samples for d in deltas], axis=0)
    q = [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2]
    lo, hi = np.quantile(both, q)
    elo, ehi = np.quantile(ex, q)
    return PointDelta(
        float(np.mean([d.delta for d in deltas])),
        float(lo),
        float(hi),
        float(elo),
        float(ehi),
        sum(d.n for d in deltas),
        (min(d.seeds[0] for d in deltas), min(d.seeds[1] for d in deltas)),
        both,
        ex,
    )


def example_ci(scores: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Resampled means over examples of a point's seed-averaged scores (seeds x examples), in points."""
    avg = 100.0 * scores.mean(axis=0)
    rng = np.random.default_rng(seed)
    return avg[rng.integers(0, len(avg), size=(resamples, len(avg)))].mean(axis=1)


def point_of(config_json: str | None, run_name: str | None) -> str:
    """A checkpoint's point: its saved sweep.point, else its run (a point of one seed)."""
    try:
        cfg = json.loads(config_json) if config_json else {}
    except ValueError:
        cfg = {}
    sweep = cfg.get("sweep") if isinstance(cfg, dict) else None
    point = sweep.get("point") if isinstance(sweep, dict) else None
    return str(point) if point else str(run_name or "?")


def seed_of(config_json: str | None) -> int | None:
    try:
        trainer = (json.loads(config_json) if config_json else {}).get("trainer") or {}
        return int(trainer["seed"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
