"""DPO: the loss against its formula, the reference cache, 2-process ZeRO-3, and learning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST, losses, train_in_process
from distributed_helpers import run, torchrun_cmd

from training.config.compose import compose
from training.data.preference import collate_pairs, load_pairs
from training.model.modeling import build_model, load_tokenizer
from training.recipes import ref_cache
from training.recipes.registry import DPO

PAIRS = 96


def dpo_overrides(root: Path, name: str, start: Path, steps: int = 6, extra=()) -> list[str]:
    return [
        *FAST,
        "recipe=dpo",
        f"model.name_or_path={start}",
        f"trainer.run_root={root}",
        f"trainer.run_name={name}",
        f"trainer.max_steps={steps}",
        f"trainer.save_every={steps}",
        f"data.max_samples={PAIRS}",
        "rung.micro_batch_tokens=512",
        "trainer.global_batch_tokens=1024",
        *extra,
    ]


@pytest.fixture(scope="module")
def setup():
    cfg = compose(["recipe=dpo", "data.max_samples=8"])
    tok = load_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, seed=0)
    pairs = load_pairs(cfg.data, tok)
    return model, tok, pairs


def direct_logps(model, ids, labels):
    """Summed log-prob of the labelled tokens of one unpacked document."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
    lab = torch.tensor(labels)
    keep = lab != -100
    return float(F.log_softmax(logits, -1)[keep].gather(1, lab[keep][:, None]).sum()), int(
        keep.sum()
    )


def test_loss_is_ln2_when_policy_equals_reference(setup):
    model, _, pairs = setup
    batch = collate_pairs(pairs, list(range(len(pairs))))
    recipe = DPO("dpo_sigmoid", beta=0.1, label_smoothing=0.0, gamma=0.5)
    with torch.no_grad():
        sums, _ = DPO.sequence_logps(model, batch)
    recipe.ref_logps = torch.stack([sums[0::2], sums[1::2]], 1)
    with torch.no_grad():
        loss, stats = recipe.loss_sum(model, batch)
    assert float(loss) / len(pairs) == pytest.approx(math.log(2), abs=1e-6)
    assert stats["rewards/accuracy"] == 0 and abs(stats["rewards/margin"]) < 1e-4


@pytest.mark.parametrize(
    "kind,eps", [("dpo_sigmoid", 0.0), ("dpo_sigmoid", 0.1), ("dpo_norm", 0.0), ("simpo", 0.0)]
)
def test_loss_and_rewards_match_the_formula(setup, kind, eps):
    model, _, pairs = setup
    beta, gamma = 0.7, 0.4
    recipe = DPO(kind, beta=beta, label_smoothing=eps, gamma=gamma)
    ref = torch.tensor([[-30.0 - i, -25.0 + i] for i in range(len(pairs))])  # a made-up reference
    recipe.ref_logps = ref
    batch = collate_pairs(pairs, list(range(len(pairs))))
    with torch.no_grad():
        loss, stats = recipe.loss_sum(model, batch)
    want_loss = want_chosen = want_acc = 0.0
    for i, (ic, lc, ir, lr) in enumerate(pairs):
        pc, nc = direct_logps(model, ic, lc)
        pr, nr = direct_logps(model, ir, lr)
        rc, rr = float(ref[i, 0]), float(ref[i, 1])
        if kind == "dpo_sigmoid":
            c, r = pc - rc, pr - rr
        elif kind == "dpo_norm":
            c, r = (pc - rc) / nc, (pr - rr) / nr
        else:
            c, r = pc / nc, pr / nr
        z = c - r - (gamma / beta if kind == "simpo" else 0.0)
        sig = lambda x: 1 / (1 + math.exp(-x))
        want_loss += -(1 - eps) * math.log(sig(beta * z)) - eps * math.log(sig(-beta * z))
        want_chosen += beta * c
        want_acc += c > r  # the margin's basis: for SimPO, without gamma (as TRL)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    assert stats["rewards/chosen"] == pytest.approx(want_chosen, rel=1e-4)
    assert stats["rewards/accuracy"] == want_acc


def test_cache_key_covers_tokenizer_and_sample_limit(setup):
    _, tok, _ = setup
    cfg = compose(["recipe=dpo", "data.max_samples=10"])
    base = ref_cache.cache_key("ref", tok, cfg.data)
    assert base == ref_cache.cache_key(
        "ref", tok, compose(["recipe=dpo", "data.max_samples=10"]).data
    )
    assert base != ref_cache.cache_key(
        "ref", tok, compose(["recipe=dpo", "data.max_samples=11"]).data
    )
    assert base != ref_cache.cache_key(
        "ref", tok, compose(["recipe=dpo", "data.max_seq_len=63"]).data
    )
    assert base != ref_cache.cache_key("other-ref", tok, cfg.data)
    other = load_tokenizer(cfg.model)
    other.chat_template = tok.chat_template.replace("<|im_start|>", "<|im_start|> ")
    assert base != ref_cache.cache_key("ref", other, cfg.data)
    other = load_tokenizer(cfg.model)
    other.add_tokens(["<|new|>"])
    assert base != ref_cache.cache_key("ref", other, cfg.data)


def test_corrupt_cache_entry_is_recomputed_not_used(tmp_path):
    logps = torch.randn(5, 2, dtype=torch.float64)
    ref_cache.store(tmp_path, "k", logps, {})
    assert torch.equal(ref_cache.load(tmp_path, "k", 5), logps)
    assert ref_cache.load(tmp_path, "k", 6) is None  # stale: the data changed size
    data = tmp_path / "k.pt"
    raw = bytearray(data.read_bytes())
    raw[-20] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert ref_cache.load(tmp_path, "k", 5) is None


def test_sweep_runs_share_the_reference_cache_and_limits_invalidate_it(tmp_path, trained_run):
    start = trained_run.checkpoints[-1]
    first = train_in_process(dpo_overrides(tmp_path, "lr-a", start, steps=2))
    second = train_in_process(
        dpo_overrides(tmp_path, "lr-b", start, steps=2, extra=["recipe.lr_scale=0.2"])
    )
    a = json.loads((first.run_dir / "reference_pass.json").read_text())
    b = json.loads((second.run_dir / "reference_pass.json").read_text())
    assert a["cached"] is False and a["tokens"] > 0
    assert (
        b["cached"] is True and b["tokens"] == 0 and b["cache_key"] == a["cache_key"]
    )  # no reference forward pass
    rows = [json.loads(line) for line in open(second.run_dir / "metrics.jsonl")]
    assert rows[0]["ref_cached"] is True
    assert rows[0]["loss"] == pytest.approx(
        math.log(2), abs=1e-6
    )  # the cached log-probs are the policy's
    fewer = train_in_process(
        dpo_overrides(tmp_path, "fewer", start, steps=2, extra=[f"data.max_samples={PAIRS - 8}"])
    )
    c = json.loads((fewer.run_dir / "reference_pass.json").read_text())
    assert c["cached"] is False and c["cache_key"] != a["cache_key"]


def test_preference_accuracy_rises(tmp_path, trained_run):
    start = trained_run.checkpoints[1]  # half-trained SFT (step 75)
    result = train_in_process(dpo_overrides(tmp_path, "learn", start, steps=12))
    rows = [json.loads(line) for line in open(result.run_dir / "metrics.jsonl")]
    assert rows[0]["rewards/accuracy"] < 0.2  # policy == reference: no pair is preferred yet
    late = sum(r["rewards/accuracy"] for r in rows[-3:]) / 3
    assert late > 0.7
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.05
    assert rows[-1]["rewards/margin"] > 0


def test_dpo_zero3_two_processes_match_one(tmp_path, trained_run):
    start = trained_run.checkpoints[-1]
    single = train_in_process(dpo_overrides(tmp_path, "one", start, steps=4))
    over = dpo_overrides(
        tmp_path,
        "zero3",
        start,
        steps=4,
        extra=["rung.engine=deepspeed_zero3", "rung.gpus_per_node=2"],
    )
    proc = run(torchrun_cmd(2, over))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert losses(tmp_path / "zero3") == pytest.approx(losses(single.run_dir), abs=1e-4, rel=0)


def test_reference_beside_the_policy_matches_the_cache(tmp_path, trained_run):
    """precompute_reference=false (no cache, a reference forward per batch) gives the same losses."""
    start = trained_run.checkpoints[-1]
    cached = train_in_process(dpo_overrides(tmp_path, "cached", start, steps=3))
    online = train_in_process(
        dpo_overrides(
            tmp_path, "online", start, steps=3, extra=["recipe.precompute_reference=false"]
        )
    )
    assert not (online.run_dir / "reference_pass.json").exists()
    assert losses(online.run_dir) == pytest.approx(losses(cached.run_dir), abs=1e-5, rel=0)


def test_malformed_pair_is_named_by_file_and_line(tmp_path):
    from training.common.errors import DataError
    from training.data.preference import check_pairs_jsonl

    user = {"role": "user", "content": "q"}
    good = {
        "chosen": [user, {"role": "assistant", "content": "a"}],
        "rejected": [user, {"role": "assistant", "content": "b"}],
    }
    other_prompt = {
        **good,
        "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}],
    }
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(other_prompt) + "\n")
    with pytest.raises(DataError, match=rf"{path}:2: chosen and rejected must share"):
        check_pairs_jsonl(str(path))
