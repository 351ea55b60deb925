"""Seed noise in comparisons (#26 item 2): points over seeds, and the two-interval rule.

Synthetic per-example scores, in process: example i of a seed with threshold t scores
1 when u_i < t, so one latent difficulty u pairs the examples across seeds and points."""

from __future__ import annotations

import numpy as np

from evals.analysis.points import Seed, rank
from evals.analysis.seed_noise import paired_points, point_delta

U = np.random.default_rng(1).random(400)


def rows(t: float) -> list[dict]:
    return [{"id": i, "score": float(u < t)} for i, u in enumerate(U)]


def mat(thresholds):
    return paired_points([rows(t) for t in thresholds], [rows(t) for t in thresholds])[0]


def test_a_gap_inside_the_seed_noise_clears_the_examples_but_is_not_significant():
    # B beats A by 5 points on every seed pair, but reseeding one point moves it by 20
    a, b = mat([0.50, 0.60, 0.70]), mat([0.55, 0.65, 0.75])
    d = point_delta(a, b)
    assert abs(d.delta - 5.0) < 1.5 and d.seeds == (3, 3) and d.n == 400
    assert d.clears_examples, (d.example_lo, d.example_hi)  # paired examples: a tight interval
    assert not d.clears_seeds and d.lo < 0 < d.hi
    assert not d.significant


def test_a_gap_beyond_the_seed_noise_clears_both_and_is_significant():
    a, b = mat([0.40, 0.42, 0.44]), mat([0.60, 0.62, 0.64])
    d = point_delta(a, b)
    assert d.clears_examples and d.clears_seeds and d.significant and d.lo > 10
    one = point_delta(mat([0.40]), mat([0.60]))  # one seed each: seed noise unmeasured
    assert not one.seeds_measured and one.significant
    assert abs(one.lo - one.example_lo) < 1.5  # seed resampling adds nothing with one seed


def test_points_rank_by_the_mean_over_seeds_and_say_when_the_next_is_not_separable():
    def seeds(name, ts):
        return [Seed(f"{name}-s{k}", 10, k, {"t": rows(t)}) for k, t in enumerate(ts)]

    groups = {
        "lo": seeds("lo", [0.40, 0.42, 0.44]),
        "mid": seeds("mid", [0.50, 0.60, 0.70]),
        "hi": seeds("hi", [0.55, 0.65, 0.75]),
    }
    pts = rank(groups, ["t"])
    assert [p.point for p in pts] == ["hi", "mid", "lo"]
    assert (
        abs(pts[0].std - 100 * np.std([np.mean(U < t) for t in (0.55, 0.65, 0.75)], ddof=1)) < 1e-9
    )
    assert pts[0].lo < pts[0].value < pts[0].hi
    assert not pts[0].vs_next.significant  # hi vs mid: inside the seed noise
    assert pts[1].vs_next.significant and pts[1].vs_next.delta > 0  # mid vs lo
    assert pts[2].vs_next is None
