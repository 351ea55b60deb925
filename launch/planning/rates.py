"""Measured throughput for planning: finished runs of a rung in the ledger, else bench results
at the rung's model shape, else the rung's assumption.

    ladder bench import runs/bench_gpu.json       # bench/gpu.py's figures into the ledger
    rate, kind, source = planning_rate(cfg, ledger)  # launch/planning/plan.py: "measured (3 runs)" or "assumed"

A finished run records the median MFU of its steps (launch/accounting/ledger.py measured_rates). A bench
result counts for a rung when it ran the same model shape (hidden size, MLP, heads, KV heads and
vocabulary: bench/gpu.py cuts the 8B shape to the layers that fit one GPU, which changes MFU
little) with the same recipe family and the settings the rung's job would run with: torch.compile,
activation checkpointing, the chunked loss and the attention kernel. Runs of the rung itself come
first: they include what a bench leaves out (several nodes, the data loader, checkpoints).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from training.common.errors import ConfigError
from training.recipes.losses import LOSSES

# bench/gpu.py's attention choices that `auto` would make on a GPU (training/model/attention.py)
AUTO_ON_GPU = ("flash_attention_2", "flex_attention")


def shape_key(hidden: int, intermediate: int, heads: int, kv_heads: int, vocab: int) -> str:
    return f"h{hidden}-mlp{intermediate}-a{heads}-kv{kv_heads}-v{vocab}"


def cfg_shape(cfg) -> str | None:
    m = cfg.model
    if not m.vocab_size:  # the tiny rung's vocabulary comes from its tokenizer: never a bench shape
        return None
    return shape_key(m.hidden_size, m.intermediate_size, m.num_heads, m.num_kv_heads, m.vocab_size)


def job_settings(cfg) -> dict:
    """The settings a bench result must share with the job to stand for it."""
    # bench rows name the recipe group of the loss's family (sft, dpo: bench/gpu.py); RL losses their own
    spec = LOSSES.get(cfg.recipe.loss)
    return {
        "recipe": spec.recipe if spec and spec.family != "rl" else cfg.recipe.loss,
        "compile": bool(cfg.trainer.compile),
        "ckpt": bool(cfg.rung.activation_checkpointing),
        "chunked": cfg.trainer.loss_chunk_tokens > 0,
        "attn": cfg.model.attn_implementation,
    }


def matches(row: dict, want: dict) -> bool:
    s = json.loads(row["settings"])
    attn_ok = s["attn"] in AUTO_ON_GPU if want["attn"] == "auto" else s["attn"] == want["attn"]
    return (
        row["recipe"] == want["recipe"]
        and attn_ok
        and s["compile"] == want["compile"]
        and s["ckpt"] == want["ckpt"]
        and s["chunked"] == want["chunked"]
    )


def planning_rate(cfg, ledger) -> tuple[float, str, str]:
    """(rate, kind, where it came from)."""
    r = cfg.rung
    kind = "mfu" if r.peak_flops_per_device else "tokens_per_s"
    if ledger is not None:
        from training.model import lora

        adapter = lora.enabled(cfg)  # LoRA runs plan LoRA runs; full fine-tuning plans its own
        value, n = ledger.median_rate(r.name, kind, adapter)
        if value:
            runs = f"{n} {'LoRA ' if adapter else ''}run{'s' if n != 1 else ''}"
            return (value, kind, f"measured ({runs} of rung {r.name} in the ledger, median)")
        shape = cfg_shape(cfg)
        if (
            kind == "mfu" and shape
        ):  # a bench's MFU carries to the rung's GPUs; its tokens/s would not
            want = job_settings(cfg)
            rows = [
                row
                for row in ledger.query("SELECT * FROM bench_rates WHERE shape = ?", (shape,))
                if matches(row, want)
            ]
            if rows:
                devices = sorted({row["device"] for row in rows})
                return (
                    statistics.median(row["mfu"] for row in rows),
                    kind,
                    f"measured ({len(rows)} run{'s' if len(rows) != 1 else ''} of bench/gpu.py at this shape "
                    f"on {', '.join(devices)}, median)",
                )
    assumed = r.assumed_mfu if kind == "mfu" else r.assumed_tokens_per_s
    if not assumed:
        raise ConfigError(
            f"rung {r.name} has no peak_flops_per_device and no assumed_tokens_per_s, and the "
            "ledger has no measured run of it: set rung.assumed_tokens_per_s to plan its time"
        )
    return assumed, kind, f"assumed (rung.assumed_{'mfu' if kind == 'mfu' else 'tokens_per_s'})"


def import_bench(ledger, path: Path) -> list[dict]:
    """Record every Ladder configuration of a bench/gpu.py JSON file that has an MFU; returns them."""
    try:
        data = json.loads(path.read_text())
        cases, device = data["cases"], data["device"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{path}: not a bench/gpu.py result file ({type(e).__name__}: {e})"
        ) from None
    rows = []
    for c in cases:
        res = c.get("result") or {}
        if c.get("harness") != "ladder" or res.get("mfu") is None or "hidden" not in res:
            continue  # TRL's baseline, a failed or skipped configuration, or a CPU run (no MFU)
        rows.append(
            {
                "shape": shape_key(
                    res["hidden"], res["intermediate"], res["heads"], res["kv_heads"], res["vocab"]
                ),
                "device": device,
                "recipe": c["recipe"],
                "mfu": float(res["mfu"]),
                "tokens_per_s": float(res["tokens_per_s"]),
                "measured_on": data.get("date"),
                "settings": json.dumps(
                    {
                        "attn": c["attn"],
                        "compile": c["compile"],
                        "ckpt": c["ckpt"],
                        "chunked": c["chunk_tokens"] > 0,
                        "layers": res.get("layers"),
                    }
                ),
                "source": f"{path.name}: {c['name']}",
                "imported_at": time.time(),
            }
        )
    if not rows:
        raise ConfigError(
            f"{path}: no Ladder configuration with a measured MFU (a --smoke run on a CPU has none)"
        )
    with ledger.transaction() as db:
        for row in rows:
            db.insert("bench_rates", row)
    return rows
