"""Seeds from named parts, the one rule every seeded draw in Ladder uses.

    from training.common.seeds import seed_of
    torch.Generator().manual_seed(seed_of(seed, "reverse", epoch))   # a mixture source's pass
    seed_of(seed, step, prompt_index, answer_index)                  # one GRPO answer's sampling

A hash of the parts, not a running RNG, so a draw depends on what it is (its seed, source, pass,
step, prompt), never on what was drawn before it: a source's passes do not move when another
source changes, and an answer is the same whatever batch or rank samples it.
"""

from __future__ import annotations

import hashlib


def seed_of(*parts) -> int:
    """A 63-bit seed (fits torch.Generator.manual_seed) from the parts' text, joined by '/'."""
    return (
        int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")
        >> 1
    )
