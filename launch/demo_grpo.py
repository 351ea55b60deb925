"""The GRPO leg of `make pipeline` (launch/demo.py): RL on verifiable rewards from an under-trained model.

    python -m launch.demo --pipeline

1. `ladder train rung=tiny trainer.max_steps=64 optim.schedule=constant ...`: a deliberately short
   SFT run, stopped around where the tiny model starts to get the reverse task right (held-out exact
   match low but not zero), so there is room for RL to show what it adds.
2. `ladder train recipe=grpo model.name_or_path=<that checkpoint>` on data=reverse_rlvr (reverse
   prompts rewarded by exact match, arithmetic prompts by their final number).
Both checkpoints go back to launch/demo.py, which evaluates them and runs `ladder compare`.
Measured (`make pipeline` on a quiet 2-core CPU, all 500 held-out rows, 2026-12-01): exact match
36.0 -> 67.6, +31.6 points [95% CI +26.6, +36.4] by `ladder compare`'s paired bootstrap; GRPO's 40
steps took 22 s.

"""

from __future__ import annotations

from pathlib import Path

SHORT_SFT = [
    "trainer.max_steps=64",
    "trainer.save_every=64",
    "optim.schedule=constant",
    "optim.warmup_ratio=0.3125",
]
# dapo (token-level loss, dynamic sampling) at temperature 0.5: more groups with a right answer, so more
# signal per step; a short warmup, because Adam's first steps move every weight by ~lr whatever its
# gradient (without it, lr 1e-3 wrecked the model in two steps).
GRPO = [
    "recipe=grpo",
    "recipe.loss=dapo",
    "recipe.clip_high=0.28",
    "generator.temperature=0.5",
    "trainer.max_steps=40",
    "trainer.save_every=40",
    "recipe.prompts_per_step=16",
    "recipe.num_generations=8",
    "optim.lr=3e-4",
    "optim.schedule=constant",
    "optim.warmup_ratio=0.2",
]


def run_grpo(console, ladder, name: str) -> list[tuple[str, Path]] | None:
    from training.run.checkpoint import complete_checkpoints

    short_args = ["train", "rung=tiny", f"trainer.run_name={name}-sft-short", *SHORT_SFT]
    console.rule("[bold]ladder " + " ".join(short_args))
    if ladder(short_args):
        return None
    start = complete_checkpoints(Path("runs") / f"{name}-sft-short")[-1]
    grpo_args = ["train", *GRPO, f"model.name_or_path={start}", f"trainer.run_name={name}-grpo"]
    console.rule("[bold]ladder " + " ".join(grpo_args))
    if ladder(grpo_args):
        return None
    return [
        ("under-trained SFT", start),
        ("+ GRPO", complete_checkpoints(Path("runs") / f"{name}-grpo")[-1]),
    ]
