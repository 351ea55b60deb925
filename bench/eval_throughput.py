"""Eval throughput on the tiny model, and the time the eval cache saves when a comparison is re-run.

    .venv/bin/python bench/eval_throughput.py CKPT_A CKPT_B [--examples 200] [--suite cpu]

For each task of the suite it times one evaluation of CKPT_A (model loading excluded from the
built-in tasks' rate, included in lm-eval's, which loads its own) and prints examples per
second. Then it runs the same `compare A B` twice against a fresh, empty registry and cache:
the first run evaluates both checkpoints, the second is answered from the cache. Results go
into bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoints", nargs=2)
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--suite", default="cpu")
    args = p.parse_args()

    import torch

    from evals.analysis.compare import compare
    from evals.runner import load_model, run_builtin
    from evals.store.cache import task_specs
    from evals.store.registry import Registry
    from evals.tasks.lm_harness import run_lm_eval
    from training.config.compose import compose

    cfg = compose([f"eval={args.suite}", f"eval.max_examples={args.examples}"])
    ckpt = Path(args.checkpoints[0])
    rates = {}
    model, tokenizer = load_model(ckpt, "cpu")
    for spec in task_specs(cfg.eval):
        t0 = time.perf_counter()
        if spec.kind == "builtin":
            n = run_builtin(spec, model, tokenizer, cfg.eval)["n"]
        else:
            n = run_lm_eval(ckpt, cfg.eval.lm_eval, [spec.name], args.examples, "cpu")[spec.name][
                "n"
            ]
        dt = time.perf_counter() - t0
        rates[spec.name] = {
            "examples": n,
            "seconds": round(dt, 2),
            "examples_per_s": round(n / dt, 1),
        }

    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp) / "registry.db")
        timings = []
        for _ in range(2):
            t0 = time.perf_counter()
            compare(list(args.checkpoints), cfg.eval, registry)
            timings.append(round(time.perf_counter() - t0, 2))
    print(
        json.dumps(
            {
                "suite": args.suite,
                "threads": torch.get_num_threads(),
                "per_task": rates,
                "compare_cold_s": timings[0],
                "compare_cached_s": timings[1],
                "saved_s": round(timings[0] - timings[1], 2),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
