"""`make demo`: the whole tiny pipeline on a CPU, through the same commands a user runs.

    python -m launch.demo

1. `ladder train rung=tiny trainer.run_name=demo-<time>`: trains the tiny model (~1 min),
   saving and scoring the untrained model (step 0) and every checkpoint, logging to W&B offline.
2. `ladder eval` on the untrained and the trained checkpoint (held-out split, exact match).
3. Prints the two scores side by side and where everything went.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> int:
    from launch.cli import main as ladder
    from training.checkpoint import complete_checkpoints

    console = Console()
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

    from launch.eval_cmd import run_eval  # the code behind `ladder eval`
    scores = {}
    for ckpt in (untrained, trained):
        console.rule(f"[bold]ladder eval {ckpt} tracker.mode=disabled")
        # Training already logged these scores to W&B at each checkpoint's step; don't log twice.
        scores[ckpt] = run_eval(str(ckpt), ["tracker.mode=disabled"])

    table = Table(title="held-out exact match, synthetic reverse task")
    table.add_column("model")
    table.add_column("step", justify="right")
    table.add_column("exact match (%)", justify="right")
    for label, ckpt in (("untrained", untrained), ("trained", trained)):
        table.add_row(label, str(scores[ckpt]["step"]), f"{scores[ckpt]['scores']['reverse/exact_match']:.1f}")
    gain = scores[trained]["scores"]["reverse/exact_match"] - scores[untrained]["scores"]["reverse/exact_match"]
    console.rule("[bold]result")
    console.print(table)
    console.print(f"gain: [bold]{gain:+.1f}[/bold] points after {train_s:.0f} s of training")
    wandb_dirs = sorted((run_dir / "wandb").glob("offline-run-*"))
    console.print("\n[bold]where everything went[/bold]")
    console.print(f"  run directory     {run_dir}/")
    console.print(f"  resolved config   {run_dir}/config.yaml")
    console.print(f"  per-step metrics  {run_dir}/metrics.jsonl")
    console.print(f"  checkpoints       {run_dir}/checkpoints/ (Hugging Face format; {len(ckpts)} complete)")
    console.print(f"  untrained model   {untrained}")
    console.print(f"  trained model     {trained}")
    console.print(f"  eval results      {trained}/eval/synthetic.json")
    if wandb_dirs:
        console.print(f"  W&B offline run   {wandb_dirs[-1]}  (upload: wandb sync {wandb_dirs[-1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
