"""Where a GRPO step's time goes on this machine: generation, log-prob passes, training.

    .venv/bin/python bench/grpo.py [--steps 8] [--warmup 2] [--prompts 16] [--generations 8] [--new-tokens 16]
    .venv/bin/python bench/grpo.py --device cuda        # on a GPU (generator=hf)

Runs recipe=grpo on the tiny rung from a random init (the split does not depend on what the model
knows, only on how many tokens it samples and trains on) with ppo_epochs=2 and kl_beta>0, so both
log-prob passes (the rollout policy's and the reference's) run on every rollout batch. It prints
the mean seconds per step of each phase, the generation share, and generated tokens per second,
all from the run's own metrics.jsonl (the same numbers W&B gets). The first --warmup steps are
left out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    from training.config.compose import compose
    from training.run.metrics import read_metrics
    from training.run.trainer import train

    with tempfile.TemporaryDirectory() as root:
        cfg = compose(
            [
                "recipe=grpo",
                "model.from_scratch=true",  # the split does not depend on what the model knows
                "rung=tiny",
                "tracker.mode=disabled",
                "trainer.eval_on_save=false",
                "trainer.save_initial=false",
                f"trainer.max_steps={a.steps}",
                f"trainer.save_every={a.steps}",
                f"trainer.run_root={root}",
                "trainer.run_name=bench",
                f"recipe.prompts_per_step={a.prompts}",
                f"recipe.num_generations={a.generations}",
                f"generator.max_new_tokens={a.new_tokens}",
                "recipe.ppo_epochs=2",
                "recipe.kl_beta=0.01",
                f"rung.device={a.device}",
                "trainer.log_every=1000",
            ]
        )
        train(cfg)
        rows = read_metrics(Path(root) / "bench" / "metrics.jsonl")[a.warmup :]
    gen_rows = [r for r in rows if r["gen_time_s"] > 0]  # ppo_epochs=2: every other step generates
    mean = lambda key, rs=rows: sum(r[key] for r in rs) / len(rs)
    step, gen, lp = mean("step_time_s"), mean("gen_time_s"), mean("logprob_time_s")
    train_s = mean("fwd_bwd_time_s") + mean("optim_time_s")
    out = {
        "steps_timed": len(rows),
        "answers_per_rollout_batch": a.prompts * a.generations,
        "step_time_s": step,
        "gen_time_s_per_step": gen,
        "logprob_time_s_per_step": lp,
        "train_time_s_per_step": train_s,
        "generation_share": gen / step,
        "logprob_share": lp / step,
        "train_share": train_s / step,
        "gen_tokens_per_s": mean("gen_tokens_per_s", gen_rows),
        "train_tokens_per_s": mean("tokens_per_s"),
        "response_len_mean": mean("response_len_mean"),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
