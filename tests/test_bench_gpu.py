"""bench/gpu.py never rots: its --smoke mode runs every code path (Ladder's SFT and DPO steps, the
chunked and full-logit losses, activation checkpointing, TRL's SFTTrainer) on a tiny shape."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_gpu_bench_smoke_runs_every_configuration(tmp_path):
    bench = load_bench()
    out = tmp_path / "bench.json"
    cases = bench.main(["--smoke", "--out", str(out)])
    results = {c.name: c.result for c in cases}
    assert {
        "ladder sdpa",
        "ladder full logits",
        "ladder act-ckpt",
        "ladder dpo",
        "trl sdpa",
    } <= set(results)
    for name, r in results.items():
        assert "error" not in r, (name, r)
        assert r["useful_tokens_per_s"] > 0 and r["tokens_per_s"] >= r["useful_tokens_per_s"]
        assert r["mfu"] is None  # a CPU has no datasheet peak: no MFU is made up
    # the loss variants compute the same function on the same first rows
    sft = [
        results[n]["first_loss"] for n in ("ladder sdpa", "ladder full logits", "ladder act-ckpt")
    ]
    assert max(sft) - min(sft) < 1e-4, sft
    saved = json.loads(out.read_text())
    assert saved["micro_batch_tokens"] == 256 and len(saved["cases"]) == len(cases)


def test_packed_rows_are_exactly_the_micro_batch_and_documents_restart_positions():
    bench = load_bench()
    docs = bench.documents(4 * 512, vocab=100, max_len=256, seed=1)
    rows = bench.pack_rows(docs, 512)
    assert rows and all(r["input_ids"].numel() == 512 == sum(r["doc_lens"]) for r in rows)
    for r in rows:
        pos = r["position_ids"][0].tolist()
        assert pos.count(0) == len(r["doc_lens"])
        # no label crosses into the next document: each document's last label is untrained
        ends = [sum(r["doc_lens"][: i + 1]) - 1 for i in range(len(r["doc_lens"]))]
        assert all(r["labels"][0, e] == -100 for e in ends)


def test_8b_shape_is_cut_to_the_layers_that_fit():
    bench = load_bench()
    assert bench.fit_layers("llama3_8b", 4096, 112e9) == 20
    assert bench.fit_layers("llama3_8b", 4096, 1e15) == 32  # never more than the model has
    assert bench.fit_layers("llama3_8b", 4096, 1e9) == 1
