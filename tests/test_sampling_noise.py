"""The counter-based sampling noise (training/rl/sampling_noise.py): the hash is splitmix64 bit for
bit, a row's noise depends on (key, position, token) only, Gumbel-max with it draws the softmax
(chi-square tests, with a check that they reject a wrong distribution), and it is made on the
device without a host generator. Then the sampler that adds it (SeededSampler): an answer is the
same in any batch, order or padding width and after a resume, and with temperature and top-p it
draws the tempered, top-p-filtered softmax.

    .venv/bin/pytest -q -s tests/test_sampling_noise.py      # ~5 s on a CPU; -s prints the statistics

The chi-square tests use fixed keys, so they are deterministic: a p-value is the same on every run
and the thresholds (accept above 1e-3, and a wrong distribution must fall below 1e-6) never flake.
"""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from training.common.seeds import seed_of
from training.rl.generator import SeededSampler
from training.rl.sampling_noise import gumbel_noise, key_tensor, random_bits

M64 = (1 << 64) - 1
G = 0x9E3779B97F4A7C15


def mix64_ref(z: int) -> int:
    """splitmix64's finalizer on Python ints (unbounded, masked to 64 bits by hand)."""
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def bits_ref(key: int, position: int, token: int) -> int:
    a = mix64_ref(key + G)
    s = mix64_ref(a + (position + 1) * G)
    return mix64_ref(s + (token + 1) * G)


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, float]:
    """Pearson's statistic and its p-value (df = cells - 1) for counts against probs."""
    counts, probs = counts.double(), probs.double()
    expected = probs * counts.sum()
    stat = float(((counts - expected) ** 2 / expected).sum())
    df = len(counts) - 1
    return stat, float(torch.special.gammaincc(torch.tensor(df / 2), torch.tensor(stat / 2)))


LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
T = 0.7
N = 40_000


def draws(keys: torch.Tensor, position, logits: torch.Tensor) -> torch.Tensor:
    """Gumbel-max draws, one per row."""
    noise = gumbel_noise(keys, position, logits.shape[-1])
    return (logits + noise).argmax(-1)


def test_the_hash_is_splitmix64_bit_for_bit():
    """int64 tensor arithmetic (wrapping multiplication, masked shifts) against Python ints, with
    keys at the edges of the 63-bit range sample_key draws from."""
    keys = [0, 1, 12345, 2**62 + 7, 2**63 - 1]
    for position in (0, 3, 10**6):
        got = random_bits(key_tensor(keys), position, 5)
        want = [[bits_ref(k, position, t) for t in range(5)] for k in keys]
        assert [[b & M64 for b in row] for row in got.tolist()] == want


def test_a_row_depends_on_its_key_position_and_token_only():
    keys = [seed_of(0, 1, p, j) for p in range(3) for j in range(4)]
    batch = gumbel_noise(key_tensor(keys), 5, 50)
    shuffled = [keys[i] for i in (7, 2, 11, 0)]
    assert torch.equal(gumbel_noise(key_tensor(shuffled), 5, 50), batch[[7, 2, 11, 0]])
    assert torch.equal(gumbel_noise(key_tensor(keys[3:4]), 5, 50), batch[3:4])
    # a token's noise is the same whatever the vocabulary's size
    assert torch.equal(gumbel_noise(key_tensor(keys), 5, 20), batch[:, :20])
    # a tensor of positions is the same as one call per position
    positions = torch.arange(len(keys))
    per_row = torch.cat([gumbel_noise(key_tensor([k]), p, 50) for k, p in zip(keys, range(12))])
    assert torch.equal(gumbel_noise(key_tensor(keys), positions, 50), per_row)
    assert not torch.equal(gumbel_noise(key_tensor(keys), 6, 50), batch), "positions differ"


def test_gumbel_max_draws_the_tempered_softmax():
    """Along the keys (consecutive integers, the most regular input) and along the positions of
    one answer, the frequencies match softmax(logits / T); the masked token is never drawn."""
    logits = (LOGITS / T).clone()
    logits[5] = float("-inf")  # a token top-p would drop
    want = logits.softmax(-1)
    kept = torch.isfinite(logits)
    by_key = draws(torch.arange(N), 0, logits)
    by_position = draws(key_tensor([seed_of(0, 1, 2, 3)] * N), torch.arange(N), logits)
    for name, tokens in (("keys", by_key), ("positions", by_position)):
        counts = torch.bincount(tokens, minlength=len(logits))
        assert int(counts[~kept].sum()) == 0
        stat, p = chi_square(counts[kept], want[kept])
        print(f"chi-square along {name}: {stat:.2f} on {int(kept.sum()) - 1} df, p = {p:.3f}")
        assert p > 1e-3
        # the test has power: a temperature 7% off (0.75 for 0.7) is rejected
        wrong = (LOGITS / 0.75).masked_fill(~kept, float("-inf")).softmax(-1)
        stat, p = chi_square(counts[kept], wrong[kept])
        print(f"  against softmax(logits / 0.75): {stat:.0f}, p = {p:.1e}")
        assert p < 1e-6


def test_consecutive_tokens_are_independent():
    """The token at position p and the one at p + 1 of the same answer: their contingency table
    is the product of the marginals (chi-square on (k-1)^2 df)."""
    logits = LOGITS[:4] / T
    keys = key_tensor([seed_of("pairs", i) for i in range(N)])
    first, second = draws(keys, 10, logits), draws(keys, 11, logits)
    table = torch.bincount(first * 4 + second, minlength=16).double().view(4, 4)
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    p = float(torch.special.gammaincc(torch.tensor(9 / 2), torch.tensor(stat / 2)))
    print(f"independence of positions 10 and 11: {stat:.2f} on 9 df, p = {p:.3f}")
    assert p > 1e-3


class OpLog(TorchDispatchMode):
    """Every aten op run inside it, with the devices of its tensor arguments and results."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, set[str]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [
            t for t in pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)
        ]
        self.ops.append((str(func), {t.device.type for t in tensors}))
        return out


def test_made_on_the_device_without_a_host_generator(monkeypatch):
    """Pure tensor ops on the keys' device: no torch.Generator, no random op, and on the meta
    device (tensors without data) every op's tensors are meta, so nothing is made on the host and
    copied over, and nothing is read back; the result comes in the asked dtype."""

    class NoGenerator(torch.Generator):  # a class, not a function: torch checks isinstance
        def __new__(cls, *a, **k):
            raise AssertionError("sampling noise must not use a host generator")

    monkeypatch.setattr(torch, "Generator", NoGenerator)
    keys = key_tensor([1, 2, 3])
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        g = gumbel_noise(keys, 4, 100, dtype)
        assert g.dtype == dtype and g.device == keys.device and g.shape == (3, 100)
        assert torch.isfinite(g).all()
    keys = keys.to("meta")
    with OpLog() as log:
        g = gumbel_noise(keys, 4, 128_256, torch.float32)
    assert g.device.type == "meta" and g.shape == (3, 128_256) and g.dtype == torch.float32
    assert log.ops and all(devices == {"meta"} for _, devices in log.ops), log.ops
    random = ("rand", "uniform", "normal", "exponential", "bernoulli", "random", "multinomial")
    assert not [op for op, _ in log.ops if any(r in op for r in random)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_gpu_draws_the_same_bits_as_the_cpu():
    keys = key_tensor([seed_of(0, 1, 2, j) for j in range(8)])
    assert torch.equal(random_bits(keys.cuda(), 7, 1000).cpu(), random_bits(keys, 7, 1000))
    g = gumbel_noise(keys.cuda(), 7, 1000)
    assert g.is_cuda and torch.allclose(g.cpu(), gumbel_noise(keys, 7, 1000), rtol=0, atol=1e-6)


# ---- the sampler that uses it (training/rl/generator.py) ----------------------------------------
PROMPTS = torch.randn(5, 4, 12, generator=torch.Generator().manual_seed(0))  # (prompt, last, vocab)


def decode(rows: list[tuple[int, int]], width: int, steps: int, start: int = 0, prefix=None):
    """Greedy decoding of SeededSampler's output for (prompt, key) rows, with a stand-in model
    whose logits depend on the prompt and on the last token (prefix: tokens already generated,
    for a resume at position `start`). Returns each row's generated tokens."""
    sampler = SeededSampler([k for _, k in rows], 0.8, 0.9, prompt_len=width)
    out = [list(p) for p in prefix] if prefix else [[] for _ in rows]
    for pos in range(start, start + steps):
        ids = torch.zeros(len(rows), width + pos, dtype=torch.long)  # only its width matters
        last = [o[-1] % 4 if o else 0 for o in out]
        scores = torch.stack([PROMPTS[p, lt] for (p, _), lt in zip(rows, last)])
        for o, t in zip(out, sampler(ids, scores).argmax(-1).tolist()):
            o.append(t)
    return out


def test_the_sampler_draws_an_answer_whatever_its_batch():
    """Same (prompt, key) in another batch, order and padding width: the same tokens."""
    rows = [(p, seed_of(0, 3, p, j)) for p in range(3) for j in range(2)]
    alone = decode(rows, width=6, steps=8)
    order = [4, 1, 5, 0]
    other = [(4, seed_of(0, 3, 4, 0)), *[rows[i] for i in order], (3, seed_of(0, 3, 3, 1))]
    mixed = decode(other, width=11, steps=8)
    assert mixed[1:5] == [alone[i] for i in order]
    assert len({tuple(a) for a in alone}) > 1


def test_a_fresh_sampler_resumes_the_same_answers():
    """Stopped after 3 tokens and picked up by a new sampler (a resumed run): the same answers."""
    rows = [(p, seed_of(1, 9, p, 0)) for p in range(4)]
    whole = decode(rows, width=7, steps=8)
    resumed = decode(rows, width=7, steps=5, start=3, prefix=[a[:3] for a in whole])
    assert resumed == whole


def top_p_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The distribution the sampler documents, computed on its own here: softmax(logits / T),
    the smallest most-probable set whose mass reaches top_p kept, renormalised."""
    probs = (logits / temperature).softmax(-1)
    keep, mass = torch.zeros_like(probs, dtype=torch.bool), 0.0
    for i in probs.argsort(descending=True).tolist():
        if mass >= top_p:
            break
        keep[i], mass = True, mass + float(probs[i])
    return torch.where(keep, probs, 0.0) / probs[keep].sum()


def test_the_sampler_draws_the_tempered_top_p_softmax():
    want = top_p_probs(LOGITS, T, 0.9)
    kept = want > 0
    assert 2 < int(kept.sum()) < len(LOGITS), "top-p drops some tokens but not all"
    sampler = SeededSampler([seed_of("top-p", i) for i in range(N)], T, 0.9, prompt_len=5)
    tokens = sampler(torch.zeros(N, 5, dtype=torch.long), LOGITS.expand(N, -1)).argmax(-1)
    counts = torch.bincount(tokens, minlength=len(LOGITS))
    assert int(counts[~kept].sum()) == 0
    stat, p = chi_square(counts[kept], want[kept])
    print(f"sampler, T={T}, top_p=0.9: {stat:.2f} on {int(kept.sum()) - 1} df, p = {p:.3f}")
    assert p > 1e-3
    wrong = top_p_probs(LOGITS, 0.75, 0.9)
    stat, p = chi_square(counts[kept], wrong[kept])
    print(f"  against T=0.75, top_p=0.9: {stat:.0f}, p = {p:.1e}")
    assert p < 1e-6
