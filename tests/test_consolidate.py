"""Sharded weights streamed to Hugging Face format (training/engine/consolidate.py) are byte for byte what
save_pretrained writes: in one process against save_pretrained itself, and on 2 processes
(FSDP2, ZeRO-3) against the whole-state-dict gather the engines used before."""

from __future__ import annotations

import filecmp
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from distributed_helpers import free_port, run

from training.config.compose import compose
from training.engine.consolidate import write_streamed
from training.model.modeling import build_model, load_tokenizer

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shard", ["50GB", 2_000_000])  # one file, and five with an index
def test_streamed_weights_equal_save_pretrained_byte_for_byte(tmp_path, tied, dtype, shard):
    cfg = compose(["rung=tiny", f"model.tie_word_embeddings={str(tied).lower()}"])
    model = build_model(cfg.model, load_tokenizer(cfg.model), dtype=dtype)
    model.save_pretrained(tmp_path / "hf", max_shard_size=shard)
    sd = model.state_dict()
    fetched = []

    def fetch(name):
        fetched.append(name)
        return sd[name]

    (tmp_path / "streamed").mkdir()
    write_streamed(
        tmp_path / "streamed",
        model,
        {n: (tuple(t.shape), t.dtype) for n, t in sd.items()},
        fetch,
        main=True,
        total_parameters=model.num_parameters(),
        max_shard_size=shard,
    )
    names = sorted(os.listdir(tmp_path / "hf"))
    assert names == sorted(os.listdir(tmp_path / "streamed"))
    for n in names:
        assert filecmp.cmp(tmp_path / "hf" / n, tmp_path / "streamed" / n, shallow=False), n
    assert (
        len(fetched) == len(set(fetched)) == len(sd) - tied
    )  # each tensor gathered once; a tied copy never


@pytest.mark.parametrize("engine", ["fsdp2", "deepspeed_zero3"])
def test_two_process_consolidation_matches_the_whole_state_dict_gather(tmp_path, engine):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        str(REPO / "bench" / "consolidation_memory.py"),
        "--engine",
        engine,
        "--check",
        "--out",
        str(tmp_path),
    ]
    proc = run(cmd, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["identical"] and "model.safetensors" in res["files"]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / f"{engine}-stream")
    assert sum(p.numel() for p in model.parameters()) == res["params"]
