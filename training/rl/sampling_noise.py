"""Sampling noise as a pure function of (answer key, position, token id), computed on the device.

    from training.rl.sampling_noise import gumbel_noise, key_tensor
    keys = key_tensor([sample_key(seed, step, prompt, j) for ...], scores.device)  # once per batch
    token = (scores / T + gumbel_noise(keys, position, scores.shape[-1], scores.dtype)).argmax(-1)

The argmax of tempered logits plus standard Gumbel noise is a draw from their softmax (the
Gumbel-max trick), so a sampler only has to make the noise. It is counter-based, not a running
RNG: the noise of token t at position p (the answer's p-th generated token) of the answer keyed k
is a hash of (k, p, t). So an answer does not depend on the batch it is in, its row, the rank or
host that samples it, or on anything drawn before it, and a resumed run redraws it exactly.

The hash is splitmix64 (Steele, Lea and Flood 2014; the finalizer is Stafford's "mix13"):
    a = mix64(k + G)              the key's stream
    s = mix64(a + (p + 1) * G)    the state of position p of that stream
    x = mix64(s + (t + 1) * G)    token t's 64 random bits: splitmix64's t-th output seeded with s
with G = 0x9E3779B97F4A7C15. The whole thing is int64 tensor arithmetic on the logits' device,
with no host generator and no copy per token: multiplication wraps modulo 2**64 (two's
complement) and the logical right shift is an arithmetic shift with the sign bits masked off.
tests/test_sampling_noise.py checks it against a Python-int reference, bit for bit.

The top 52 bits of x give u = (m + 1/2) / 2**52, strictly inside (0, 1), and the noise is
-log(-log(u)), worked in float64 and returned in the caller's dtype: float32's 24 bits would put
the largest of 128k Gumbels on a grid about 0.01 wide (the max sits near u = 1 - 8e-6), coarse
enough to bias which token wins; 52 bits leave the tails at -3.6 and +36.7.
"""

from __future__ import annotations

import torch

_U64 = (1 << 64) - 1


def _signed(x: int) -> int:
    """A 64-bit pattern as the int64 value torch stores for it."""
    x &= _U64
    return x - (1 << 64) if x >> 63 else x


GOLDEN_GAMMA = _signed(0x9E3779B97F4A7C15)
# splitmix64's finalizer: (right shift, multiplier) per round; the last round only shifts
_ROUNDS = ((30, _signed(0xBF58476D1CE4E5B9)), (27, _signed(0x94D049BB133111EB)), (31, None))


def mix64_(z: torch.Tensor, tmp: torch.Tensor | None = None) -> torch.Tensor:
    """splitmix64's finalizer on an int64 tensor, in place (tmp: a scratch tensor like z, so that
    a 16M-element call allocates nothing). A bijection of 64-bit patterns."""
    tmp = torch.empty_like(z) if tmp is None else tmp
    for shift, mult in _ROUNDS:
        torch.bitwise_right_shift(z, shift, out=tmp)
        tmp &= (1 << (64 - shift)) - 1  # logical, not arithmetic, shift: clear the sign copies
        z ^= tmp
        if mult is not None:
            z *= mult  # wraps modulo 2**64
    return z


def key_tensor(keys: list[int], device=None) -> torch.Tensor:
    """The answers' keys (sample_key's 63-bit seeds) as an int64 tensor, made once per batch."""
    return torch.tensor(keys, dtype=torch.int64, device=device)


def _offset(n: int | torch.Tensor) -> int | torch.Tensor:
    """(n + 1) * G modulo 2**64: a Python int wrapped by hand, a tensor by torch."""
    if isinstance(n, torch.Tensor):
        return (n.to(torch.int64) + 1) * GOLDEN_GAMMA
    return _signed((n + 1) * (GOLDEN_GAMMA & _U64))


def row_states(keys: torch.Tensor, position: int | torch.Tensor) -> torch.Tensor:
    """s per answer: the splitmix64 state of `position` in the stream of each key (int64, keys'
    shape). position: one int for every row (a decoding step), or a tensor broadcast with keys."""
    a = mix64_(keys.to(torch.int64) + GOLDEN_GAMMA)
    return mix64_(a + _offset(position))


def random_bits(
    keys: torch.Tensor, position: int | torch.Tensor, vocab: int, tmp: torch.Tensor | None = None
) -> torch.Tensor:
    """(rows, vocab) int64: the 64 hashed bits of every (key, position, token id); tmp: scratch
    of that shape, as for mix64_."""
    s = row_states(keys, position)
    tokens = _offset(torch.arange(vocab, dtype=torch.int64, device=keys.device))
    return mix64_(s.unsqueeze(-1) + tokens, tmp)


def gumbel_noise(
    keys: torch.Tensor, position: int | torch.Tensor, vocab: int, dtype=torch.float32
) -> torch.Tensor:
    """(rows, vocab) standard Gumbel noise on keys' device, in `dtype`: row i is answer keys[i]'s
    noise for its token at `position` (0 = its first generated token)."""
    m = torch.empty((*keys.shape, vocab), dtype=torch.int64, device=keys.device)
    z = random_bits(keys, position, vocab, tmp=m)
    torch.bitwise_right_shift(z, 12, out=m)
    m &= (1 << 52) - 1  # the top 52 bits: exact in float64, and m + 1/2 too
    u = z.view(torch.float64)  # z's bits are spent: reuse its memory for the uniforms
    u.copy_(m).add_(0.5).mul_(2.0**-52)
    return u.log_().neg_().log_().neg_().to(dtype)
