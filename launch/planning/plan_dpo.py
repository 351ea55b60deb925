"""The DPO reference's part of a plan: its forward passes and, when it runs beside the policy, its memory.

    ladder plan rung=70b recipe=dpo                                   # reference pass once, before training
    ladder plan rung=70b recipe=dpo recipe.precompute_reference=false # reference forward in every step

DPO and its length-normalised form compare the policy with a frozen reference (SimPO has none;
training/recipes/registry.py, DPO.prepare). Two ways to run it (training/recipes/reference.py):

  precomputed (recipe.precompute_reference=true, the default): one forward pass over every chosen
      and rejected token of the data set, once before the first step, whatever the number of
      epochs. Its tokens are those `ladder data inspect` measured (each side of a pair a document);
      unmeasured, the plan takes the run's own tokens, as if it trained one epoch. A cache hit
      (the same reference, tokenizer and data) skips the pass: the plan counts it, an upper bound.
      No reference is held during training (at step 0 the policy itself scores the pairs).
  live (precompute_reference=false): the reference runs forward on every step's tokens, a third of
      a training step's FLOPs (as the trainer counts it in MFU), and its weights sit beside the
      policy's for the whole run: launch/planning/memory.py's `reference` (reference_bytes: bf16,
      sharded like the policy under fsdp2 and deepspeed_zero3, whole otherwise).

The reference's forward passes are timed at the rung's MFU, like training.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from launch.planning.doc_lengths import lengths_path
from launch.planning.memory import reference_bytes
from training.model.flops import forward_flops
from training.recipes.losses import loss_spec


@dataclass
class ReferencePlan:
    precomputed: bool
    tokens: int  # tokens the reference scores over the run
    flops: float
    tokens_source: str

    def to_json(self) -> dict:
        return asdict(self)


def needs_reference(cfg) -> bool:
    # the preference family's losses but SimPO, as DPO.needs_reference decides
    return loss_spec(cfg.recipe.loss).family == "preference" and cfg.recipe.loss != "simpo"


def dataset_tokens(cfg) -> tuple[int | None, str]:
    """Chosen plus rejected tokens of the data set, as `ladder data inspect` measured them."""
    path = lengths_path(cfg)
    try:
        saved = json.loads(path.read_text())
        return int(
            saved["tokens"]
        ), f"the data set's tokens, measured by `ladder data inspect` ({path})"
    except (OSError, ValueError, KeyError):
        return None, (
            "the run's tokens, as if it trained one epoch (`ladder data inspect` measures the data set)"
        )


def reference_plan(cfg, tokens: int, n_matmul: int, layers: int, hidden: int, doc: float):
    """The reference's work for a run of `tokens` training tokens, documents planned at `doc`
    tokens (the attention length); None when the recipe has no reference."""
    if not needs_reference(cfg):
        return None
    if cfg.recipe.precompute_reference:
        measured, source = dataset_tokens(cfg)
        scored = measured if measured is not None else tokens
    else:
        scored, source = tokens, "every step's tokens (recipe.precompute_reference=false)"
    flops = forward_flops(n_matmul, layers, hidden, [doc]) * scored / doc
    return ReferencePlan(bool(cfg.recipe.precompute_reference), int(scored), flops, source)


def reference_memory(cfg, shape, gpus: int, engine: str) -> float:
    """Bytes per GPU of a reference held beside the policy: only the live one."""
    if not needs_reference(cfg) or cfg.recipe.precompute_reference:
        return 0.0
    return reference_bytes(engine, shape.params, gpus, bool(cfg.rung.bf16))


def render_row(table, p: ReferencePlan) -> None:
    when = "once, before the first step" if p.precomputed else "in every step, beside the policy"
    table.add_row(
        "reference FLOPs",
        f"{p.flops:.3e}",
        f"DPO reference forward {when}: 2 x matmul params x {p.tokens:.3e} tokens + attention; "
        f"{p.tokens_source}",
    )
