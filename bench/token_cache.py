"""How much faster a second run's data set-up is with the token cache (training/data/token_cache.py).

    .venv/bin/python bench/token_cache.py [--rows 100000]

Writes a synthetic chat source of --rows rows (the reverse task's format, unique prompts), then
times the data set-up of an SFT run on it (the trainer's own call: read and check the rows,
tokenise them with the chat template, pack) three times, each in a fresh process so nothing is
shared in memory: the first run (empty token cache), a second run (the cache hit), and a second
run with the cache bypassed (what every run paid before the cache, with the `datasets` arrow
cache already warm). Prints the seconds of each and the ratio first / second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def setup_once(root: str, data: str, use_cache: bool) -> dict:
    """One run's data set-up, timed in this process."""
    from training.config.compose import compose
    from training.data.mixture import load_sources, make_stream
    from training.model.modeling import load_tokenizer

    cfg = compose(
        [
            "rung=tiny",
            f"trainer.run_root={root}",
            f"data.train_files=[{data}]",
            "data.max_seq_len=64",
        ]
    )
    tok = load_tokenizer(cfg.model)
    t0 = time.perf_counter()
    sources = load_sources(cfg, tok, "messages", cache=use_cache)
    stream = make_stream(cfg, sources, cfg.rung.micro_batch_tokens, cfg.trainer.seed, "messages")
    stream.micro_batch(0)  # the first batch, as the first step asks for it
    return {
        "seconds": time.perf_counter() - t0,
        "cached": sources[0].cached,
        "documents": len(stream.docs),
    }


def run_child(root: str, data: str, use_cache: bool) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", root, data, str(int(use_cache))],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        root, data, use = a.child
        print(json.dumps(setup_once(root, data, use == "1")))
        return
    from training.data.synthetic import generate, write_jsonl

    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "source.jsonl"
        train, _ = generate(n_train=a.rows, n_heldout=0, seed=7, min_len=3, max_len=8)
        write_jsonl(data, train)
        os.environ["HF_DATASETS_CACHE"] = str(
            Path(d) / "hf_datasets"
        )  # a cold `datasets` cache for the first run
        first = run_child(d, str(data), True)
        second = run_child(d, str(data), True)
        bypass = run_child(d, str(data), False)
        size = sum(f.stat().st_size for f in (Path(d) / "cache" / "tokens").iterdir())
        jsonl_mib = data.stat().st_size / 2**20
    assert (
        not first["cached"]
        and second["cached"]
        and first["documents"] == second["documents"] == a.rows
    )
    print(
        f"data set-up of an SFT run on {a.rows:,} rows ({jsonl_mib:.1f} MiB of jsonl), tiny tokenizer, "
        "max_seq_len 64, CPU"
    )
    print(f"first run (empty token cache):        {first['seconds']:7.2f} s")
    print(f"second run (token cache hit):         {second['seconds']:7.2f} s")
    print(f"second run, cache bypassed:           {bypass['seconds']:7.2f} s")
    print(f"cache entry: {size / 2**20:.1f} MiB")
    print(
        f"ratio first / second: {first['seconds'] / second['seconds']:.1f}x; "
        f"bypassed / cached: {bypass['seconds'] / second['seconds']:.1f}x"
    )


if __name__ == "__main__":
    main()
