"""Seeds from named parts, the one rule every seeded draw in Ladder uses.

    from training.common.seeds import seed_of, data_order_seed
    torch.Generator().manual_seed(seed_of(seed, "reverse", epoch))   # a mixture source's pass
    seed_of(seed, step, prompt_index, answer_index)                  # one GRPO answer's sampling
    random.Random(hash64(seed, name, epoch))                         # an RLVR source's pass
    torch.Generator().manual_seed(data_order_seed(seed, epoch))      # one epoch of plain data

A hash of the parts, not a running RNG, so a draw depends on what it is (its seed, source, pass,
step, prompt), never on what was drawn before it: a source's passes do not move when another
source changes, and an answer is the same whatever batch or rank samples it.

data_order_seed is the older arithmetic rule for one epoch's order of plain (unmixed) data,
kept as it is because the golden losses (tests/golden/) pin the orders it draws.
"""

from __future__ import annotations

import hashlib


def hash64(*parts) -> int:
    """The parts' text, joined by '/', hashed to 64 bits (SHA-256's first 8 bytes, little-endian)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global RNGs, as a run (or a generator rank) starts: what model
    initialisation draws from. Imported lazily: this module stays free of torch."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_of(*parts) -> int:
    """A 63-bit seed (fits torch.Generator.manual_seed) from the parts: hash64 less its top bit."""
    return hash64(*parts) >> 1


def data_order_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s shuffle of plain data: SFT and DPO packing
    (training/data/packing.py) and GRPO's prompt order (training/rl/rollouts.py). The multiplier
    is a prime above any epoch count, so (seed, epoch) pairs never collide in practice."""
    return seed * 100_003 + epoch
