"""The fast paths compute the same function: attention implementations on a packed batch, the
chunked loss against full logits (and what it saves), torch.compile per layer against eager."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from training.common.errors import ConfigError
from training.config.compose import compose
from training.config.validate import validate
from training.model.attention import attention_problem, choose_attention
from training.model.lm_loss import token_logps
from training.model.modeling import compile_layers
from training.recipes.registry import DPO, SFT


def packed_batch(vocab: int, lens=(37, 80, 11, 64), seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, sum(lens)), generator=g)
    labels = ids.clone()
    labels[:, ::5] = -100  # some tokens untrained, as prompts are
    pos = torch.cat([torch.arange(n) for n in lens])[None]
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "doc_lens": list(lens)}


def llama(
    attn: str, vocab: int = 512, hidden: int = 64, layers: int = 2, seed: int = 0
) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg)


def loss_and_grads(model, batch, chunk_tokens: int):
    model.zero_grad(set_to_none=True)
    loss, _ = SFT(chunk_tokens).loss_sum(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


# ---- attention -----------------------------------------------------------------------------
def test_attention_choices_and_refusals():
    assert choose_attention("auto", "cpu") == "sdpa"
    assert choose_attention("flex_attention", "cpu") == "flex_attention"
    assert "needs rung.device=cuda" in attention_problem("flash_attention_2", "cpu")
    assert "use one of" in attention_problem("flash", "cuda")
    with pytest.raises(ConfigError, match="flash_attention_2 needs rung.device=cuda"):
        validate(compose(["model.attn_implementation=flash_attention_2"]))


@pytest.mark.parametrize("attn", ["eager", pytest.param("flex_attention", marks=pytest.mark.slow)])
def test_every_cpu_attention_gives_sdpas_loss_on_a_packed_batch(attn):
    batch = packed_batch(512)
    ref, ref_grads = loss_and_grads(llama("sdpa"), batch, 0)
    if (
        attn == "flex_attention"
    ):  # FlexAttention has no backward on a CPU: its loss only (gradients: bench/gpu.py)
        with torch.no_grad():
            got, _ = SFT(0).loss_sum(llama(attn), batch)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        return
    got, grads = loss_and_grads(llama(attn), batch, 0)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for n, g in grads.items():
        torch.testing.assert_close(g, ref_grads[n], rtol=1e-4, atol=1e-5, msg=n)


# ---- the chunked loss ------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [7, 64, 4096])
def test_chunked_loss_and_gradient_equal_full_logits(chunk):
    batch = packed_batch(512)
    full, full_grads = loss_and_grads(llama("sdpa"), batch, 0)
    got, grads = loss_and_grads(llama("sdpa"), batch, chunk)
    torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-5)
    # Per parameter, norm-wise: the chunks sum the gradient in another order, so single elements
    # near zero differ by float32 rounding that no elementwise rtol bounds (measured: up to 4.8e-6
    # absolute on the embedding with MKL_CBWR=COMPATIBLE, over atol=1e-6). Norm-wise the measured
    # worst is 6.4e-7 of the norm (pinned or not, chunk 7, 64 or 4096); a wrong chunk is O(1).
    for n, g in grads.items():
        rel = ((g - full_grads[n]).norm() / full_grads[n].norm()).item()
        assert rel < 1e-5, f"{n}: chunked gradient is {rel:.2e} of the norm away from full logits'"
    # the per-token log-probs DPO and GRPO sum are the same values too
    model = llama("sdpa")
    with torch.no_grad():
        a, mask = token_logps(model, batch, chunk)
        b, _ = token_logps(model, batch, 0)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not a[~mask].any()  # untrained tokens contribute exactly 0
    sums, counts = DPO.sequence_logps(model, batch, chunk)
    assert counts.tolist() == [
        float(x)
        for x in [
            sum(1 for i in range(s, s + n) if i % 5)
            for s, n in zip([0, 37, 117, 128], batch["doc_lens"])
        ]
    ]


def saved_bytes(model, loss_fn) -> int:
    """Bytes autograd keeps from forward to backward (each storage once, parameters left out):
    where full fp32 logits would live."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    loss.backward()
    return sum(storages.values())


def test_chunked_loss_keeps_no_full_vocabulary_logits_with_a_128k_vocabulary():
    vocab, lens = 128_256, (300, 212)  # Llama 3's vocabulary; 512 tokens
    model = llama("sdpa", vocab=vocab, hidden=32, layers=1)
    batch = packed_batch(vocab, lens)
    logits_fp32 = sum(lens) * vocab * 4
    full = saved_bytes(model, lambda: SFT(0).loss_sum(model, batch)[0])
    summed = saved_bytes(
        model, lambda: SFT(128).loss_sum(model, batch)[0]
    )  # gradients made in forward
    # any loss of the per-token log-probs (DPO, GRPO): chunks recomputed in backward
    recomputed = saved_bytes(
        model, lambda: DPO.sequence_logps(model, batch, 128)[0].sigmoid().sum()
    )
    assert full > logits_fp32  # the plain path keeps at least the fp32 log-softmax
    # the summed path keeps one weight-sized fp32 gradient (vocab x hidden), no logits
    assert summed < vocab * 32 * 4 + logits_fp32 / 20, (full, summed)
    assert recomputed < logits_fp32 / 20, (full, recomputed)
    print(
        f"saved for backward: full logits {full / 2**20:.1f} MiB, summed {summed / 2**20:.1f} MiB, "
        f"recomputed {recomputed / 2**20:.1f} MiB"
    )


def test_loss_chunk_tokens_is_validated():
    with pytest.raises(ConfigError, match="trainer.loss_chunk_tokens=-1"):
        validate(compose(["trainer.loss_chunk_tokens=-1"]))


# ---- torch.compile -----------------------------------------------------------------------------
@pytest.mark.slow
def test_compiled_layers_give_eagers_loss_and_gradient():
    batch = packed_batch(512)
    ref, ref_grads = loss_and_grads(llama("sdpa"), batch, 64)
    model = llama("sdpa")
    compile_layers(model)
    got, grads = loss_and_grads(model, batch, 64)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for n, g in grads.items():
        torch.testing.assert_close(
            g, ref_grads[n], rtol=1e-4, atol=1e-5, msg=n.replace("._orig_mod", "")
        )


def test_chunked_loss_under_bf16_autocast_matches_the_plain_path():
    batch = packed_batch(512)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full, full_grads = loss_and_grads(llama("sdpa"), batch, 0)
        got, grads = loss_and_grads(llama("sdpa"), batch, 64)
    torch.testing.assert_close(got, full, rtol=1e-3, atol=1e-3)
    for n, g in grads.items():
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, full_grads[n], rtol=2e-2, atol=2e-3, msg=n)
