"""Each recipe's headline metrics: the few step metrics its progress bar and log line show.

    class SFT:  headline = (LOSS,)
    line(recipe.headline, metrics)     # "loss 1.2346" (training/run/progress.py prints it)

A recipe names keys of the step's metrics dict (metrics.jsonl has them all) with a short label and
a format; the loop and its callbacks print what the recipe declares and know no recipe's keys.
A key a step lacks (GRPO's kl with kl_beta=0) is left out of the line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Headline(NamedTuple):
    key: str  # a step metric's key, or a name for what `value` derives from others
    label: str
    fmt: str  # a format spec: ".4f", ".0%"
    value: Callable[[dict], float | None] | None = None  # None: metrics[key]

    def read(self, m: dict) -> float | None:
        return self.value(m) if self.value is not None else m.get(self.key)


def generation_share(m: dict) -> float | None:
    """RL's share of the step's wall-clock spent generating rollouts (rollouts.py's gen_time_s over
    the loop's step_time_s; no metric is the share itself). The progress line and the heartbeat
    (`ladder status`) both read it here. None for a recipe that does not generate."""
    gen, step = m.get("gen_time_s"), m.get("step_time_s")
    if gen is None or not step:
        return None
    return gen / step


LOSS = Headline("loss", "loss", ".4f")


def line(headline: tuple[Headline, ...], m: dict, sep: str = " ") -> str:
    """`label value` for each headline metric the step has, sep apart."""
    parts = []
    for h in headline:
        v = h.read(m)
        if v is not None:
            parts.append(f"{h.label} {v:{h.fmt}}")
    return sep.join(parts)
