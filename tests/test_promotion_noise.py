"""Noise-aware promotion (#26 item 3): points ranked by their mean over seeds, the cut at K
tested against seed and example noise, and DataDecide's pairwise decision accuracy. In process,
on synthetic ledger rows and per-example scores (example i scores 1 when u_i < the seed's t)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from launch.promotion.noise import decision_accuracy, decision_accuracy_ci
from launch.promotion.promote import Point, choose_points
from training.common.errors import ConfigError

U = np.random.default_rng(2).random(300)


def sweep(points: dict[str, list[float]]) -> tuple[list[Point], dict]:
    """Ledger rows of a sweep with replicates, and each run's per-example rows."""
    runs, examples = [], {}
    for name, ts in points.items():
        for k, t in enumerate(ts):
            run = f"{name}-s{k}"
            job = {"id": len(runs), "run_name": run, "point": name, "state": "completed"}
            job["overrides"] = json.dumps([f"trainer.seed={k}", f"trainer.run_name={run}"])
            rows = [{"id": i, "score": float(u < t)} for i, u in enumerate(U)]
            runs.append(Point(f"/runs/{run}", job, {"path": run}, 100 * float(np.mean(U < t))))
            examples[run] = {"t": rows}
    runs.sort(key=lambda p: -p.score)  # rank_points' order: by run score
    return runs, examples


def test_promote_ranks_points_by_their_mean_and_flags_an_inseparable_cut():
    runs, ex = sweep({"a": [0.50, 0.60, 0.70], "b": [0.56, 0.66, 0.76], "c": [0.2, 0.22, 0.24]})
    # a's best seed (0.70) outscores b's worst two: a run ranking would mix them; points do not
    chosen, notes = choose_points(runs, 1, lambda p: ex[p.run_name], strict=False)
    assert [(p.run_name, p.rank) for p in chosen] == [("b-s0", 1)]  # the point's first seed
    assert chosen[0].score == pytest.approx(
        np.mean([100 * np.mean(U < t) for t in (0.56, 0.66, 0.76)])
    )
    assert (
        len(notes) == 1 and "ranked 1 and 2 are not separable: b" in notes[0] and " a (" in notes[0]
    )
    with pytest.raises(ConfigError, match="--strict: points ranked 1 and 2 are not separable"):
        choose_points(runs, 1, lambda p: ex[p.run_name], strict=True)
    # the cut at 2 (a, b above; c far below) clears both: no note, and --strict promotes
    chosen, notes = choose_points(runs, 2, lambda p: ex[p.run_name], strict=True)
    assert [p.run_name for p in chosen] == ["b-s0", "a-s0"] and notes == []
    with pytest.raises(ConfigError, match="--top 4, but the sweep has 3 finished point"):
        choose_points(runs, 4, lambda p: ex[p.run_name], strict=True)


def test_pairwise_decision_accuracy_equals_the_hand_count():
    # 6 pairs; only (2nd, 3rd) flips at the higher rung: 5/6
    assert decision_accuracy([4, 3, 2, 1], [40, 20, 30, 10]) == pytest.approx(5 / 6)
    # a pair tied at the higher rung counts half; one tied at the lower rung is no decision
    assert decision_accuracy([3, 2, 1], [3, 1, 1]) == pytest.approx(2.5 / 3)
    assert decision_accuracy([1, 1], [2, 3]) is None
    acc, lo, hi = decision_accuracy_ci([6, 5, 4, 3, 2, 1], [6, 4, 5, 3, 1, 2])
    assert acc == pytest.approx(13 / 15) and 0 <= lo <= acc <= hi <= 1 and lo < hi
