"""SFT training throughput: Ladder against Hugging Face TRL's SFTTrainer, in one run.

    .venv/bin/pip install -e '.[bench]'     # TRL, pinned in requirements.lock
    .venv/bin/python bench/throughput.py [--steps 40] [--warmup 5]

Both train the same tiny Llama (same config and initial weights) on the same synthetic chat
rows, with the loss on assistant tokens only, packed padding-free into rows of 1024 tokens,
2 rows per optimizer step, AdamW, on the same device and thread count. It prints useful
(trained, non-padding) tokens per second for each, their ratio, and each one's goodput
(trained tokens over tokens processed, padding included). Timing excludes the first
--warmup steps and all set-up.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

ROW_TOKENS = 1024
ROWS_PER_STEP = 2


def ladder_run(steps: int, warmup: int, n_rows: int, out: Path) -> dict:
    from training.config.compose import compose
    from training.run.metrics import read_metrics
    from training.run.trainer import train

    cfg = compose(
        [
            "rung=tiny",
            "tracker.mode=disabled",
            "trainer.eval_on_save=false",
            "trainer.save_initial=false",
            f"trainer.max_steps={steps}",
            f"trainer.save_every={steps}",
            f"trainer.run_root={out}",
            "trainer.run_name=bench",
            f"data.max_samples={n_rows}",
            f"rung.micro_batch_tokens={ROW_TOKENS}",
            f"trainer.global_batch_tokens={ROW_TOKENS * ROWS_PER_STEP}",
            "trainer.log_every=1000",
        ]
    )
    train(cfg)
    rows = read_metrics(out / "bench" / "metrics.jsonl")[warmup:]
    trained = (
        rows[-1]["tokens"] - read_metrics(out / "bench" / "metrics.jsonl")[warmup - 1]["tokens"]
    )
    seconds = sum(r["step_time_s"] for r in rows)
    processed = sum(r["tokens_per_s"] * r["step_time_s"] for r in rows)
    return {
        "useful_tokens_per_s": trained / seconds,
        "goodput": trained / processed,
        "steps": len(rows),
    }


def trl_run(steps: int, warmup: int, n_rows: int, out: Path) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from training.config.compose import compose
    from training.model.modeling import build_model, load_tokenizer

    cfg = compose(["rung=tiny"])
    tok = load_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, seed=cfg.trainer.seed)
    rows = [json.loads(line) for line in open(cfg.data.train_files[0])][:n_rows]
    # prompt-completion format: TRL trains on the completion (the assistant turn) only.
    ds = Dataset.from_list(
        [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]
    )
    args = SFTConfig(
        output_dir=str(out / "trl"),
        max_steps=steps,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=ROWS_PER_STEP,
        learning_rate=cfg.rung.lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 10),
        max_grad_norm=1.0,
        weight_decay=0.0,
        adam_beta2=0.95,
        packing=True,
        padding_free=True,
        max_length=ROW_TOKENS,
        completion_only_loss=True,
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        seed=cfg.trainer.seed,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)

    counts = {"trained": 0, "processed": 0}
    collate = trainer.data_collator

    def counting_collator(features):
        batch = collate(features)
        counts["trained"] += int((batch["labels"] != -100).sum())
        counts["processed"] += int(batch["input_ids"].numel())
        return batch

    trainer.data_collator = counting_collator
    _ = trainer.train_dataset  # packed by now

    class Timer(TrainerCallback):
        def __init__(self):
            self.t = self.seconds = 0.0
            self.start_counts = None

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warmup and self.start_counts is None:
                self.start_counts = dict(counts)
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step > warmup:
                self.seconds += time.perf_counter() - self.t

    timer = Timer()
    trainer.add_callback(timer)
    trainer.train()
    # The collator runs for step s's micro-batches just before the step: the counts at the
    # start of step `warmup` include that step's batches, so subtract what came before it.
    trained = counts["trained"] - timer.start_counts["trained"]
    processed = counts["processed"] - timer.start_counts["processed"]
    return {
        "useful_tokens_per_s": trained / timer.seconds,
        "goodput": trained / processed,
        "steps": steps - warmup,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rows", type=int, default=4000, help="training rows (enough for every step)")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        trl = trl_run(a.steps, a.warmup, a.rows, out)
        ladder = ladder_run(a.steps, a.warmup, a.rows, out)
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU x {torch.get_num_threads()} threads"
    )
    print(
        f"device: {device}; {a.steps} steps ({a.warmup} warm-up steps not timed), "
        f"{ROWS_PER_STEP} x {ROW_TOKENS}-token packed rows per step"
    )
    print(f"{'':8} {'useful tok/s':>14} {'goodput':>9}")
    for name, r in (("ladder", ladder), ("trl", trl)):
        print(f"{name:8} {r['useful_tokens_per_s']:14.0f} {r['goodput']:9.3f}")
    print(
        f"ratio ladder/trl (useful tokens/s): {ladder['useful_tokens_per_s'] / trl['useful_tokens_per_s']:.2f}"
    )


if __name__ == "__main__":
    main()
