"""The synthetic chat task that the tiny rung learns on a CPU in about a minute.

Regenerate the shipped files (deterministic, byte-identical):
    python -m training.data.synthetic

It also writes reverse_pref_train.jsonl, preference pairs for DPO: the same prompts with the
right answer chosen and a plausible wrong one (not reversed, or two letters swapped) rejected,
reverse_rlvr_{train,heldout}.jsonl, prompts for GRPO (data=reverse_rlvr) in open-instruct's RLVR
row format (and rlvr_{reverse,arith}_train.jsonl, its train prompts split by verifier for the RLVR
mixture data=rlvr_mix), and arith_train.jsonl, a small second source for mixtures (data=reverse_mix): "Compute: 12 + 7"
-> "19", with its own random stream, so adding it changed none of the reverse files.

Each example asks the assistant to reverse a short sequence of letters, e.g.
user "Reverse: k q z m" -> assistant "m z q k". It has exactly one right answer, so it
is scored by exact match, and an untrained model scores 0. The train and held-out
splits are disjoint by prompt: a held-out prompt never appears in train.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "synthetic"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
TASK = "reverse"
VERSION = 1  # bump when the task's generation or scoring changes: it keys eval caches


def make_prompt(letters: list[str]) -> str:
    return "Reverse: " + " ".join(letters)


def make_answer(letters: list[str]) -> str:
    return " ".join(reversed(letters))


def generate(
    n_train: int = 20000, n_heldout: int = 500, seed: int = 1234, min_len: int = 3, max_len: int = 6
) -> tuple[list[dict], list[dict]]:
    """Draw unique prompts; the first n_heldout go to the held-out split, the rest to train."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    while len(rows) < n_train + n_heldout:
        letters = [rng.choice(LETTERS) for _ in range(rng.randint(min_len, max_len))]
        prompt = make_prompt(letters)
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append(
            {
                "id": f"{TASK}-{len(rows):06d}",
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": make_answer(letters)},
                ],
            }
        )
    return rows[n_heldout:], rows[:n_heldout]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")


def main() -> None:
    train, heldout = generate()
    write_jsonl(ASSETS / f"{TASK}_train.jsonl", train)
    write_jsonl(ASSETS / f"{TASK}_heldout.jsonl", heldout)
    print(f"wrote {len(train)} train and {len(heldout)} held-out rows to {ASSETS}")
    main_preference()
    arith = generate_arith()
    write_jsonl(ASSETS / "arith_train.jsonl", arith)
    print(f"wrote {len(arith)} arithmetic rows to {ASSETS}")
    main_rlvr()


def generate_arith(n: int = 2000, seed: int = 4321, max_operand: int = 99) -> list[dict]:
    """Unique additions and subtractions of two numbers up to max_operand, answered exactly."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    while len(rows) < n:
        a, b, op = rng.randint(0, max_operand), rng.randint(0, max_operand), rng.choice("+-")
        prompt = f"Compute: {a} {op} {b}"
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append(
            {
                "id": f"arith-{len(rows):06d}",
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": str(a + b if op == "+" else a - b)},
                ],
            }
        )
    return rows


def rlvr_row(row: dict, dataset: str) -> dict:
    """open-instruct's RLVR format: the prompt's messages, the answer to check, the verifier's name."""
    return {
        "id": row["id"],
        "messages": row["messages"][:-1],
        "ground_truth": row["messages"][-1]["content"],
        "dataset": dataset,
    }


def main_rlvr(
    n_reverse: int = 2000,
    n_arith: int = 300,
    n_heldout_reverse: int = 200,
    n_heldout_arith: int = 100,
) -> None:
    """GRPO prompts: reverse prompts from the reverse train split (held-out ones from its held-out
    split) and arithmetic prompts (held-out ones are later draws), so the splits are disjoint."""
    train, heldout = generate()
    arith = generate_arith()
    rl_train = [rlvr_row(r, "reverse") for r in train[:n_reverse]] + [
        rlvr_row(r, "arith") for r in arith[:n_arith]
    ]
    rl_heldout = [rlvr_row(r, "reverse") for r in heldout[:n_heldout_reverse]] + [
        rlvr_row(r, "arith") for r in arith[n_arith : n_arith + n_heldout_arith]
    ]
    write_jsonl(ASSETS / f"{TASK}_rlvr_train.jsonl", rl_train)
    write_jsonl(ASSETS / f"{TASK}_rlvr_heldout.jsonl", rl_heldout)
    # the same train prompts split by verifier, as two sources of an RLVR mixture (data=rlvr_mix)
    write_jsonl(ASSETS / "rlvr_reverse_train.jsonl", rl_train[:n_reverse])
    write_jsonl(ASSETS / "rlvr_arith_train.jsonl", rl_train[n_reverse:])
    print(f"wrote {len(rl_train)} RLVR train and {len(rl_heldout)} held-out prompts to {ASSETS}")


def wrong_answer(letters: list[str], rng: random.Random) -> str:
    """A plausible mistake: the letters not reversed, or reversed with two neighbours swapped."""
    out = list(reversed(letters))
    if rng.random() < 0.5 or len(set(letters)) == 1:
        out = list(letters)
    else:
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    if out == list(reversed(letters)):  # a palindrome: change one letter instead
        out[0] = LETTERS[(LETTERS.index(out[0]) + 1) % len(LETTERS)]
    return " ".join(out)


def preference_pairs(rows: list[dict], seed: int = 99) -> list[dict]:
    """Preference rows in the common chosen/rejected format: the right answer is chosen."""
    rng = random.Random(seed)
    pairs = []
    for r in rows:
        prompt = r["messages"][:-1]
        letters = prompt[-1]["content"].split(": ", 1)[1].split()
        pairs.append(
            {
                "id": r["id"].replace(TASK, f"{TASK}-pref"),
                "chosen": prompt + [{"role": "assistant", "content": make_answer(letters)}],
                "rejected": prompt + [{"role": "assistant", "content": wrong_answer(letters, rng)}],
            }
        )
    return pairs


def main_preference() -> None:
    train, _ = generate()
    write_jsonl(ASSETS / f"{TASK}_pref_train.jsonl", preference_pairs(train[:4000]))
    print(f"wrote 4000 preference pairs to {ASSETS}")


if __name__ == "__main__":
    main()
