"""Padding-free packing: no attention across documents, and the loss equals the unpacked loss."""

from __future__ import annotations

import torch

from training.config.compose import compose
from training.data.packing import PackedStream, collate
from training.model.modeling import build_model, load_tokenizer
from training.recipes.registry import SFT


def tiny():
    cfg = compose(["model.attn_implementation=sdpa"])
    tok = load_tokenizer(cfg.model)
    return build_model(cfg.model, tok, seed=0), tok


def docs(tok, n=3):
    from training.data.chat_data import encode_chat

    rows = [
        [
            {"role": "user", "content": f"Reverse: {' '.join('abcdefg'[: k + 3])}"},
            {"role": "assistant", "content": " ".join(reversed("abcdefg"[: k + 3]))},
        ]
        for k in range(n)
    ]
    return [encode_chat(tok, r, 64) for r in rows]


def test_no_attention_crosses_documents():
    model, tok = tiny()
    model.eval()
    d = docs(tok)
    packed = collate(d)
    with torch.no_grad():
        # use_cache=False as in training: with a KV cache, transformers does not detect packing.
        base = model(
            input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
        ).logits
        # Change every token of the first document: the later documents must not notice.
        changed = packed["input_ids"].clone()
        n0 = len(d[0][0])
        changed[0, :n0] = (changed[0, :n0] + 7) % 300 + 3
        after = model(
            input_ids=changed, position_ids=packed["position_ids"], use_cache=False
        ).logits
    assert not torch.allclose(base[0, :n0], after[0, :n0])
    torch.testing.assert_close(base[0, n0:], after[0, n0:], rtol=0, atol=1e-5)


def test_packed_loss_equals_unpacked_loss():
    model, tok = tiny()
    d = docs(tok)
    packed, _ = SFT().loss_sum(model, collate(d))
    separate = sum(SFT().loss_sum(model, collate([x]))[0] for x in d)
    torch.testing.assert_close(packed, separate, rtol=1e-5, atol=1e-5)
    assert SFT.count(collate(d)) == sum(SFT.count(collate([x])) for x in d)


def test_position_ids_restart_at_each_document():
    _, tok = tiny()
    d = docs(tok)
    pos = collate(d)["position_ids"][0].tolist()
    starts = [i for i, p in enumerate(pos) if p == 0]
    assert starts == [0, len(d[0][0]), len(d[0][0]) + len(d[1][0])]


def test_stream_order_is_independent_of_rank_and_resumable():
    _, tok = tiny()
    d = docs(tok, 5) * 20
    a = PackedStream(d, 128, seed=3)
    b = PackedStream(d, 128, seed=3)
    assert all(len(a.micro_batch(i)["doc_lens"]) >= 1 for i in range(30))
    # b jumps straight to index 25 (a resume), and sees what a saw there
    assert torch.equal(b.micro_batch(25)["input_ids"], a.micro_batch(25)["input_ids"])
    assert all(sum(a.micro_batch(i)["doc_lens"]) <= 128 for i in range(30))
