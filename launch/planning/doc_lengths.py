"""Document lengths measured by `ladder data inspect`, kept for `ladder plan`'s attention FLOPs.

    ladder data inspect rung=8b        # writes <run_root>/data_inspect/<data>-<key>.json
    ladder plan rung=8b                # attention at the measured lengths, and says so

Attention costs 6 x layers x hidden x s^2 per document of s tokens (training/model/flops.py), so for
T planned tokens it is 6 L d T x sum(s^2) / sum(s): the "attention length" below, a token-weighted
mean length. Without a measurement the plan takes data.max_seq_len for every document, an upper
bound. The file is keyed by what decides the lengths (the data node, the tokenizer and the
recipe's format; for RLVR prompts also generator.max_new_tokens, since a sampled sequence is its
prompt plus up to that many tokens), so a change to any of them is never planned with stale lengths.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from training.common.safe_files import write_atomic


def summarize(lengths: list[int]) -> dict:
    """The lengths, in tokens, of the packed documents a run draws (each side of a pair is one)."""
    total = sum(lengths)
    return {
        "documents": len(lengths),
        "tokens": total,
        "mean": total / len(lengths) if lengths else 0.0,
        "max": max(lengths, default=0),
        "attention_length": sum(s * s for s in lengths) / total if total else 0.0,
    }


def lengths_key(cfg: DictConfig) -> str:
    data = OmegaConf.to_container(cfg.data, resolve=True, enum_to_str=True)
    data.pop("decontamination", None)  # a check before launch; no document changes with it
    tokenizer = OmegaConf.select(cfg, "model.tokenizer") or cfg.model.name_or_path or cfg.model.name
    key = {"data": data, "tokenizer": tokenizer, "format": cfg.recipe.loss}
    if cfg.data.format == "rlvr":  # only here, so the keys of SFT and DPO data stay as they were
        key["max_new_tokens"] = cfg.generator.max_new_tokens
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def lengths_path(cfg: DictConfig) -> Path:
    return Path(cfg.trainer.run_root) / "data_inspect" / f"{cfg.data.name}-{lengths_key(cfg)}.json"


def save_lengths(cfg: DictConfig, summary: dict) -> Path:
    path = lengths_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(
        path,
        json.dumps(
            {"data": cfg.data.name, "max_seq_len": cfg.data.max_seq_len, **summary}, indent=1
        )
        + "\n",
    )  # a temporary name of its own, renamed: never through a planted link (training/common/safe_files.py)
    return path


def planning_length(cfg: DictConfig) -> tuple[float, str]:
    """(attention length in tokens, where it came from) for the plan."""
    path = lengths_path(cfg)
    try:
        saved = json.loads(path.read_text())
        if saved.get("attention_length"):
            return float(saved["attention_length"]), (
                f"measured by `ladder data inspect` ({saved['documents']:,} documents, mean {saved['mean']:,.0f} "
                f"tokens; {path})"
            )
    except (OSError, ValueError, KeyError):
        pass
    return float(cfg.data.max_seq_len), (
        "data.max_seq_len for every document, an upper bound (`ladder data "
        "inspect` with these overrides measures the real lengths)"
    )
