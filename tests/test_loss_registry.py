"""The one table of losses (training/recipes/losses.py, issue #25): every loss composes and validates with its
recipe, make_recipe builds its family's recipe on its data format, and other names are refused.

    .venv/bin/python -m pytest -q tests/test_loss_registry.py
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from training.common.errors import ConfigError
from training.config.compose import CONFIG_DIR, compose
from training.config.validate import validate
from training.recipes.losses import FAMILIES, LOSSES, is_rl, loss_spec, losses_of
from training.recipes.registry import DPO, SFT, make_recipe
from training.rl.grpo import GRPO

RECIPE_CLASS = {"sft": SFT, "preference": DPO, "rl": GRPO}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_composes_validates_and_builds_its_familys_recipe(name):
    spec = loss_spec(name)
    cfg = compose([f"recipe={spec.recipe}", f"recipe.loss={name}", "model.from_scratch=true"])
    layout = validate(cfg, world_size=1)
    # the recipe group's default data is in the loss's format, and an RL batch is counted in answers
    assert cfg.data.format == spec.data_format
    assert (layout.answers_per_step is not None) == is_rl(name) == (spec.family == "rl")
    recipe = make_recipe(cfg)
    assert type(recipe) is RECIPE_CLASS[spec.family]
    assert recipe.data_format == spec.data_format


def test_families_partition_the_table_and_each_has_its_recipe_group():
    assert sorted(n for f in FAMILIES for n in losses_of(f)) == sorted(LOSSES)
    for family, group in FAMILIES.items():
        assert (CONFIG_DIR / "recipe" / f"{group}.yaml").is_file()
        assert compose([f"recipe={group}"]).recipe.loss in losses_of(
            family
        )  # its default is one of its own


def test_an_unknown_loss_is_refused_naming_the_choices():
    choices = str(sorted(LOSSES))
    with pytest.raises(ConfigError, match="recipe.loss='nope': supported losses are") as e:
        validate(compose(["recipe.loss=nope"]), world_size=1)
    assert choices in str(e.value)
    with pytest.raises(ConfigError) as e:
        make_recipe(compose(["recipe.loss=nope"]))
    assert choices in str(e.value)
    assert not is_rl("nope")


def test_the_table_imports_nothing_heavy():
    # launch/ and the CLI read it before any torch import; keep it that way
    code = (
        "import sys, training.recipes.losses; "
        "heavy = {'torch', 'omegaconf', 'hydra', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=CONFIG_DIR.parent)
