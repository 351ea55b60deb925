"""Compute saved by the DPO reference cache: step time with and without it, in one run.

    .venv/bin/python bench/dpo_cache.py [--steps 12] [--pairs 400]

Trains the same DPO job (tiny SFT start, same data, batch and steps) twice: with the
reference log-probs precomputed into the cache (recipe.precompute_reference=true; the pass
runs once, then every later run of a sweep reuses it), and with the reference model running
beside the policy on every batch (false). Prints the mean step time of each, their ratio, and
the cached run's time including its one-off reference pass, amortised over the steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run(
    root: Path, name: str, start: Path, steps: int, pairs: int, precompute: bool
) -> tuple[float, dict | None]:
    from training.config.compose import compose
    from training.run.metrics import read_metrics
    from training.run.trainer import train

    train(
        compose(
            [
                "recipe=dpo",
                f"model.name_or_path={start}",
                "tracker.mode=disabled",
                "trainer.eval_on_save=false",
                "trainer.save_initial=false",
                f"trainer.max_steps={steps}",
                f"trainer.save_every={steps}",
                f"trainer.run_root={root}",
                f"trainer.run_name={name}",
                f"data.max_samples={pairs}",
                f"recipe.precompute_reference={str(precompute).lower()}",
                "trainer.log_every=1000",
            ]
        )
    )
    rows = read_metrics(root / name / "metrics.jsonl")[2:]  # the first steps warm up
    ref = root / name / "reference_pass.json"
    return statistics.mean(r["step_time_s"] for r in rows), json.loads(
        ref.read_text()
    ) if ref.exists() else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--pairs", type=int, default=400)
    a = p.parse_args()
    from training.config.compose import compose
    from training.run.trainer import train

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        sft = train(
            compose(
                [
                    "rung=tiny",
                    "tracker.mode=disabled",
                    "trainer.eval_on_save=false",
                    "trainer.save_initial=false",
                    "trainer.max_steps=20",
                    f"trainer.run_root={root}",
                    "trainer.run_name=sft",
                    "trainer.log_every=1000",
                ]
            )
        )
        start = sft.checkpoints[-1]
        cached_s, ref = run(root, "cached", start, a.steps, a.pairs, True)
        online_s, _ = run(root, "online", start, a.steps, a.pairs, False)
    amortised = cached_s + ref["seconds"] / a.steps
    print(f"DPO, {a.pairs} pairs, {a.steps} steps, tiny model, CPU")
    print(f"step time with the cache (reference precomputed): {cached_s:.3f} s")
    print(f"step time without it (reference beside the policy): {online_s:.3f} s")
    print(f"ratio without / with: {online_s / cached_s:.2f}")
    print(
        f"one-off reference pass: {ref['seconds']:.1f} s for {ref['pairs']} pairs; amortised over this run's "
        f"{a.steps} steps the cached step costs {amortised:.3f} s ({online_s / amortised:.2f}x faster); a second "
        "run of the sweep pays nothing for it"
    )


if __name__ == "__main__":
    main()
