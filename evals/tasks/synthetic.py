"""The synthetic task's held-out split, scored by greedy generation and exact match.

result = score_heldout(model, tokenizer, "training/assets/synthetic/reverse_heldout.jsonl")
"""

from __future__ import annotations

import json

import torch

from evals.tasks.generate import generator_name, greedy_complete
from training.data.chat_data import IGNORE, check_jsonl, encode_chat
from training.data.synthetic import VERSION
from training.rl.verifiers.registry import (
    exact_match,  # the GRPO reward for this task is the same check
)


def load_heldout(path: str, max_examples: int | None = None) -> list[dict]:
    check_jsonl(path)
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:max_examples] if max_examples else rows


def score_heldout(
    model,
    tokenizer,
    path: str,
    max_examples: int | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 64,
    generator=None,
) -> dict:
    rows = load_heldout(path, max_examples)
    prompts = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]
    answers = [
        next(m["content"] for m in reversed(r["messages"]) if m["role"] == "assistant")
        for r in rows
    ]
    outputs = greedy_complete(
        model,
        tokenizer,
        prompts,
        max_new_tokens,
        batch_size,
        description="eval reverse",
        generator=generator,
    )
    examples = [
        {"id": r.get("id", str(i)), "target": a, "output": o, "correct": exact_match(o, a) == 1.0}
        for i, (r, a, o) in enumerate(zip(rows, answers, outputs))
    ]
    for e in examples:
        e["score"] = float(e["correct"])  # per example, for paired bootstraps in `ladder compare`
    correct = sum(e["correct"] for e in examples)
    loss = heldout_loss(model, tokenizer, rows)
    return {
        "metric": "exact_match",
        "score": 100.0 * correct / len(examples),
        "exact_match": 100.0 * correct / len(examples),
        "n": len(examples),
        "task_version": VERSION,
        "generation": {
            "do_sample": False,
            "max_new_tokens": max_new_tokens,
            "generator": generator_name(generator),
        },
        "prompt_format": "chat_template: the row's messages up to the answer, then the assistant header",
        "examples": examples,
        # the training objective on the held-out answers: its curve beside the training loss tells
        # over-fitting from a metric that saturates (the compare report plots both)
        "heldout_loss": loss,
    }


@torch.no_grad()
def heldout_loss(model, tokenizer, rows: list[dict], max_len: int = 4096) -> float:
    """Mean cross-entropy per assistant token of the rows, teacher-forced, as training counts it."""
    model.eval()
    total, count = 0.0, 0
    for r in rows:
        ids, labels = encode_chat(tokenizer, r["messages"], max_len)
        labels_t = torch.tensor([labels], device=model.device)
        logits = model(
            input_ids=torch.tensor([ids], device=model.device), use_cache=False
        ).logits.float()
        total += float(
            torch.nn.functional.cross_entropy(
                logits[0], labels_t[0], ignore_index=IGNORE, reduction="sum"
            )
        )
        count += int((labels_t != IGNORE).sum())
    return total / max(count, 1)
