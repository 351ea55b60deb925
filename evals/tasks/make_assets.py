"""Regenerate the built-in eval assets under evals/assets/ (deterministic, byte-identical):

    python -m evals.tasks.make_assets

- ifeval_lite.jsonl: instruction-following prompts in the spirit of IFEval, each with
  programmatic constraints that evals/tasks/instructions.py checks ("answer in all lowercase",
  "use exactly N words", "end with the word X", ...).
- lm_eval/reverse_mc.jsonl: a multiple-choice version of the synthetic task's held-out split
  for lm-evaluation-harness (evals/assets/lm_eval/ladder_reverse_mc.yaml): the right reversal
  against the unreversed sequence and two near misses, scored by log-likelihood.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from training.data.synthetic import ASSETS as SYNTHETIC_ASSETS
from training.data.synthetic import write_jsonl

ASSETS = Path(__file__).resolve().parents[1] / "assets"
IFEVAL_FILE = ASSETS / "ifeval_lite.jsonl"
REVERSE_MC_FILE = ASSETS / "lm_eval" / "reverse_mc.jsonl"

REQUESTS = [
    "Reverse: k q z m",
    "Reverse: a b c d e",
    "Name three colors.",
    "Describe the sea.",
    "Say hello to a friend.",
    "List some fruits.",
    "Give a short answer: what is two plus two?",
    "Tell me about the weather.",
    "Write a greeting.",
    "Explain what a list is.",
    "Reverse: x y z",
    "Name an animal.",
    "Describe a quick brown fox.",
    "Answer the question: is the sky blue?",
]
WORDS = ["done", "yes", "ok", "end", "fox", "blue", "stop"]

# (type, phrase template, parameter choices): the phrase is appended to a request.
CONSTRAINTS = [
    ("lowercase", "Answer in all lowercase letters.", None),
    ("uppercase", "Answer in all capital letters.", None),
    ("word_count", "Use exactly {n} words.", [1, 2, 3, 4, 5]),
    ("max_words", "Use at most {n} words.", [2, 4, 6, 8]),
    ("min_words", "Use at least {n} words.", [2, 3, 5]),
    ("ends_with", "End your answer with the word {word}.", WORDS),
    ("starts_with", "Start your answer with the word {word}.", WORDS),
    ("include_word", "Include the word {word}.", WORDS),
    ("no_commas", "Do not use any commas.", None),
    ("single_line", "Answer on a single line.", None),
]


def ifeval_rows(n: int = 120, seed: int = 6) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        request = rng.choice(REQUESTS)
        chosen = rng.sample(CONSTRAINTS, k=rng.choice([1, 1, 2]))
        if {"lowercase", "uppercase"} <= {c[0] for c in chosen}:  # contradictory: keep the first
            chosen = chosen[:1]
        phrases, checks = [], []
        for kind, template, params in chosen:
            check: dict = {"type": kind}
            if params is not None:
                value = rng.choice(params)
                key = "n" if isinstance(value, int) else "word"
                check[key] = value
                phrases.append(template.format(**{key: value}))
            else:
                phrases.append(template)
            checks.append(check)
        rows.append(
            {
                "id": f"ifeval_lite-{i:04d}",
                "prompt": " ".join([request, *phrases]),
                "checks": checks,
            }
        )
    return rows


def reverse_mc_rows(n: int = 200, seed: int = 7) -> list[dict]:
    """Choices: the reversal, the sequence as given, and two near misses (a swap of two letters)."""
    rng = random.Random(seed)
    rows = []
    with open(SYNTHETIC_ASSETS / "reverse_heldout.jsonl") as f:
        heldout = [json.loads(line) for line in f][:n]
    for row in heldout:
        prompt = row["messages"][0]["content"]
        right = row["messages"][1]["content"].split()
        candidates = {" ".join(right)}
        wrong = [" ".join(reversed(right))]
        for _ in range(20):
            if len(wrong) >= 3:
                break
            swapped = list(right)
            i, j = rng.sample(range(len(swapped)), 2)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            text = " ".join(swapped)
            if text not in candidates and text not in wrong:
                wrong.append(text)
        wrong = [w for w in wrong if w not in candidates]
        choices = [" ".join(right), *wrong]
        order = list(range(len(choices)))
        rng.shuffle(order)
        rows.append(
            {
                "id": row["id"],
                "prompt": prompt,
                "choices": [choices[k] for k in order],
                "label": order.index(0),
            }
        )
    return rows


def main() -> None:
    write_jsonl(IFEVAL_FILE, ifeval_rows())
    write_jsonl(REVERSE_MC_FILE, reverse_mc_rows())
    print(f"wrote {IFEVAL_FILE} and {REVERSE_MC_FILE}")


if __name__ == "__main__":
    main()
