"""How long `ladder data decontaminate` takes on a large source, and its peak memory.

    .venv/bin/python bench/decontaminate.py [--rows 1000000] [--code DIR]

Writes a synthetic chat source of --rows rows (once, kept in --data): reverse-task prompts, longer
English instructions of 20-60 words, and one row in 50 in Chinese, none of them an eval prompt.
Then checks it against the `cpu` suite (820 prompts: reverse, ifeval_lite, ladder_reverse_mc) in a
fresh process, with the result cache off, and prints the seconds of the check (wall clock, and CPU
time, which a busy machine disturbs less) and the process's peak resident memory (MB). --code DIR
imports Ladder from another checkout (e.g. a `git worktree` of an older commit), so two versions
are timed on the same file and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORDS = (
    "the of and to in is that for it as with was on be by at this from or have an they which one "
    "you were her all she there would their we him been has when who will more no if out so said "
    "what up its about into than them can only other new some could time these two may then do "
    "first any my now such like our over man me even most made after also did many before must "
    "through back years where much your way well down should because each just those people how"
).split()
HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你对生能而子那得"


def write_rows(path: Path, n: int) -> None:
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(n):
            if i % 50 == 49:
                text = "".join(rng.choice(HAN) for _ in range(rng.randint(20, 80))) + "。"
            elif i % 3 == 0:
                text = "Reverse: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
            else:
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + "."
            row = {
                "messages": [
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": " ".join(rng.choice(WORDS) for _ in range(8))},
                ]
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def child(code: str, data: str, root: str) -> None:
    import resource

    sys.path.insert(0, code)
    from evals.tasks.decontaminate import decontaminate
    from training.config.compose import compose

    cfg = compose(["eval=cpu", f"data.train_files=[{data}]", f"trainer.run_root={root}"])
    t0, c0 = time.perf_counter(), time.process_time()
    report = decontaminate(cfg, use_cache=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = sum(s["rows_checked"] for s in report["sources"])
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu,
                "peak_mb": peak_mb,
                "rows": rows,
                "matching_rows": report["matching_rows"],
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--code", default=str(REPO), help="the checkout to import Ladder from")
    ap.add_argument("--data", default=None, help="the source file (written if missing)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    data = Path(args.data or Path(tempfile.gettempdir()) / f"ladder_decontam_{args.rows}.jsonl")
    if not data.is_file():
        write_rows(data, args.rows)
    with tempfile.TemporaryDirectory() as root:
        out = subprocess.run(
            [sys.executable, __file__, "--child", args.code, str(data), root],
            check=True,
            capture_output=True,
            text=True,
            cwd=args.code,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"{result['rows']:,} rows against eval=cpu ({args.code}): {result['seconds']:.1f} s "
        f"({result['cpu_seconds']:.1f} s of CPU), "
        f"peak {result['peak_mb']:.0f} MB, {result['matching_rows']} matching rows"
    )


if __name__ == "__main__":
    main()
