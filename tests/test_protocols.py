"""Every recipe and batch source has what the loop asks of it (training/recipes/protocol.py).

.venv/bin/python -m pytest -q tests/test_protocols.py
"""

from __future__ import annotations

import pytest

from training.config.compose import compose
from training.data.mixture import MixtureStream
from training.data.packing import PackedStream
from training.recipes.protocol import BatchSource, Recipe
from training.recipes.registry import make_recipe
from training.rl.rollouts import RolloutStream


@pytest.mark.parametrize("recipe", ["sft", "dpo", "grpo"])
def test_every_recipe_is_a_recipe_with_one_name_for_its_reference(recipe):
    r = make_recipe(compose(["rung=tiny", f"recipe={recipe}"]))
    assert isinstance(r, Recipe)
    assert r.reference_model is None  # loaded by prepare(), only when the recipe needs one
    assert r.reference_in_loss == (recipe == "dpo")
    assert r.headline and all(h.key and h.label for h in r.headline)  # the progress line's metrics


def test_every_batch_source_is_a_batch_source():
    stream = PackedStream([([1, 2], [1, 2])], micro_batch_tokens=8, seed=0)
    assert isinstance(stream, BatchSource) and stream.step_metrics(1) == {}
    assert stream.source_names == ()
    # the others take a config and data to build: their classes declare the members
    members = ("micro_batch", "epoch_of", "step_metrics", "source_names")
    for cls in (MixtureStream, RolloutStream):
        assert all(hasattr(cls, m) for m in members), cls
