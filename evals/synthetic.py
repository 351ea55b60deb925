"""The synthetic task's held-out split, scored by greedy generation and exact match.

    result = score_heldout(model, tokenizer, "training/assets/synthetic/reverse_heldout.jsonl")
"""

from __future__ import annotations

import json

from evals.generate import greedy_complete
from training.chat_data import check_jsonl
from training.synthetic import VERSION


def load_heldout(path: str, max_examples: int | None = None) -> list[dict]:
    check_jsonl(path)
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:max_examples] if max_examples else rows


def score_heldout(model, tokenizer, path: str, max_examples: int | None = None,
                  max_new_tokens: int = 24, batch_size: int = 64) -> dict:
    rows = load_heldout(path, max_examples)
    prompts = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]
    answers = [next(m["content"] for m in reversed(r["messages"]) if m["role"] == "assistant") for r in rows]
    outputs = greedy_complete(model, tokenizer, prompts, max_new_tokens, batch_size)
    examples = [{"id": r.get("id", str(i)), "target": a, "output": o, "correct": o.strip() == a.strip()}
                for i, (r, a, o) in enumerate(zip(rows, answers, outputs))]
    for e in examples:
        e["score"] = float(e["correct"])  # per example, for paired bootstraps in `ladder compare`
    correct = sum(e["correct"] for e in examples)
    return {
        "metric": "exact_match",
        "score": 100.0 * correct / len(examples),
        "exact_match": 100.0 * correct / len(examples),
        "n": len(examples),
        "task_version": VERSION,
        "generation": {"do_sample": False, "max_new_tokens": max_new_tokens},
        "prompt_format": "chat_template: the row's messages up to the answer, then the assistant header",
        "examples": examples,
    }
