"""Evaluate a checkpoint on an eval suite and write the result beside it.

    ladder eval runs/tiny-sft-reverse/checkpoints/step_000200 [eval=synthetic]

The result goes to <checkpoint>/eval/<suite>.json: per-task scores, the generation
settings, and every example's output.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from evals.synthetic import score_heldout
from training.checkpoint import check_checkpoint
from training.errors import ConfigError

EVAL_CODE_VERSION = 1
BUILTIN_TASKS = {"reverse"}


def result_path(ckpt: Path, suite: str) -> Path:
    return Path(ckpt) / "eval" / f"{suite}.json"


def evaluate_model(model, tokenizer, eval_cfg: DictConfig) -> dict:
    tasks = {}
    for task in eval_cfg.tasks:
        if task not in BUILTIN_TASKS:
            raise ConfigError(f"eval.tasks: unknown task {task!r}; built-in tasks are {sorted(BUILTIN_TASKS)}")
        tasks[task] = score_heldout(model, tokenizer, eval_cfg.heldout_file, eval_cfg.max_examples,
                                    eval_cfg.max_new_tokens, eval_cfg.batch_size)
    return tasks


def evaluate_checkpoint(ckpt: str | Path, eval_cfg: DictConfig) -> dict:
    ckpt = check_checkpoint(ckpt)
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    t0 = time.time()
    tasks = evaluate_model(model, tokenizer, eval_cfg)
    meta = json.loads((ckpt / "ladder_meta.json").read_text()) if (ckpt / "ladder_meta.json").exists() else {}
    result = {
        "checkpoint": str(ckpt.resolve()),
        "step": meta.get("step"),
        "suite": eval_cfg.name,
        "eval_code_version": EVAL_CODE_VERSION,
        "seconds": round(time.time() - t0, 2),
        "scores": {f"{t}/exact_match": r["exact_match"] for t, r in tasks.items()},
        "tasks": tasks,
    }
    out = result_path(ckpt, eval_cfg.name)
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out)
    result["path"] = str(out)
    return result
