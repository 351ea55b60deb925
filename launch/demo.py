"""`make demo` and `make pipeline`: the tiny pipeline on a CPU, through the commands a user runs.

    python -m launch.demo              # make demo: SFT, then evaluation
    python -m launch.demo --pipeline   # make pipeline: SFT, then DPO, then GRPO, then evaluation and comparison

1. `ladder train rung=tiny trainer.run_name=demo-<time>`: trains the tiny model (~1 min),
   saving and scoring the untrained model (step 0) and every checkpoint, logging to W&B offline.
2. `ladder eval` on the untrained and the trained checkpoint (held-out split, exact match).
3. With --pipeline: `ladder train recipe=dpo model.name_or_path=<SFT checkpoint>` on the
   synthetic preference pairs, its evaluation, and `ladder compare` of SFT against DPO. Then GRPO
   (launch/demo_grpo.py): a deliberately under-trained SFT model (a short SFT run, held-out exact
   match low but not zero) trained with `ladder train recipe=grpo` on data=reverse_rlvr, evaluated,
   and `ladder compare`d with its start.
4. Prints the scores side by side and where everything went.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.table import Table

DPO_STEPS = 30
DPO_PAIRS = 1000


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument(
        "--pipeline", action="store_true", help="also run DPO and compare it with SFT"
    )
    opts = args.parse_args(argv)
    from launch.cli import main as ladder
    from launch.commands.eval_cmd import run_eval  # the code behind `ladder eval`
    from launch.console import make_console
    from training.run.checkpoint import complete_checkpoints

    console = make_console()
    name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    train_args = ["train", "rung=tiny", f"trainer.run_name={name}"]
    console.rule("[bold]ladder " + " ".join(train_args))
    t0 = time.time()
    rc = ladder(train_args)
    if rc:
        return rc
    train_s = time.time() - t0
    run_dir = Path("runs") / name
    ckpts = complete_checkpoints(run_dir)
    untrained, trained = ckpts[0], ckpts[-1]

    rows = [("untrained", untrained), ("SFT", trained)]
    if opts.pipeline:
        dpo_args = [
            "train",
            "recipe=dpo",
            f"model.name_or_path={trained}",
            f"trainer.run_name={name}-dpo",
            f"trainer.max_steps={DPO_STEPS}",
            f"trainer.save_every={DPO_STEPS}",
            f"data.max_samples={DPO_PAIRS}",
        ]
        console.rule("[bold]ladder " + " ".join(dpo_args))
        rc = ladder(dpo_args)
        if rc:
            return rc
        dpo_dir = Path("runs") / f"{name}-dpo"
        rows.append(("SFT + DPO", complete_checkpoints(dpo_dir)[-1]))
        from launch.demo_grpo import run_grpo

        grpo = run_grpo(console, ladder, name)
        if grpo is None:
            return 1
        rows += grpo

    scores = {}
    for _, ckpt in rows:
        console.rule(f"[bold]ladder eval {ckpt} tracker.mode=disabled")
        # Training already logged these scores to W&B at each checkpoint's step; don't log twice.
        scores[ckpt] = run_eval(str(ckpt), ["tracker.mode=disabled"])

    table = Table(title="held-out exact match, synthetic reverse task")
    for col, just in (("model", "left"), ("step", "right"), ("exact match (%)", "right")):
        table.add_column(col, justify=just)
    for label, ckpt in rows:
        table.add_row(
            label, str(scores[ckpt]["step"]), f"{scores[ckpt]['scores']['reverse/exact_match']:.1f}"
        )
    gain = (
        scores[trained]["scores"]["reverse/exact_match"]
        - scores[untrained]["scores"]["reverse/exact_match"]
    )
    console.rule("[bold]result")
    console.print(table)
    console.print(f"SFT gain: [bold]{gain:+.1f}[/bold] points after {train_s:.0f} s of training")
    if opts.pipeline:
        metrics = [json.loads(line) for line in open(dpo_dir / "metrics.jsonl")]
        first, last = metrics[0], metrics[-1]
        console.print(
            f"DPO preference accuracy (chosen over rejected, vs the reference): "
            f"{first['rewards/accuracy']:.2f} at step 1 -> {last['rewards/accuracy']:.2f} at step "
            f"{last['step']}; loss {first['loss']:.3f} -> {last['loss']:.3f}"
        )
        compare(console, ladder, trained, rows[2][1])
        em = {ckpt: scores[ckpt]["scores"]["reverse/exact_match"] for _, ckpt in rows}
        console.print(
            f"GRPO gain over its under-trained start: [bold]{em[rows[-1][1]] - em[rows[-2][1]]:+.1f}"
            "[/bold] points of held-out exact match"
        )
        compare(console, ladder, rows[-2][1], rows[-1][1])

    wandb_dirs = sorted((run_dir / "wandb").glob("offline-run-*"))
    console.print("\n[bold]where everything went[/bold]")
    console.print(f"  run directory     {run_dir}/")
    console.print(f"  resolved config   {run_dir}/config.yaml")
    console.print(f"  per-step metrics  {run_dir}/metrics.jsonl")
    console.print(
        f"  checkpoints       {run_dir}/checkpoints/ (Hugging Face format; {len(ckpts)} complete)"
    )
    console.print(f"  untrained model   {untrained}")
    console.print(f"  trained model     {trained}")
    console.print(f"  eval results      {trained}/eval/synthetic.json")
    if opts.pipeline:
        console.print(
            f"  DPO run           {dpo_dir}/ (reference log-probs cached under runs/cache/ref_logps/)"
        )
    if wandb_dirs:
        console.print(
            f"  W&B offline run   {wandb_dirs[-1]}  (upload: wandb sync {wandb_dirs[-1]})"
        )
    return 0


def compare(console, ladder, baseline: Path, other: Path) -> None:
    args = ["compare", str(baseline), str(other), "--baseline", str(baseline)]
    console.rule("[bold]ladder " + " ".join(args))
    ladder(args)


if __name__ == "__main__":
    sys.exit(main())
