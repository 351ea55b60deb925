"""The losses recipe.loss may name, each declared once (issue #25): its family and its data format.

    from training.recipes.losses import LOSSES, loss_spec, losses_of
    loss_spec("dapo").family          # "rl"
    losses_of("preference")           # ("dpo_sigmoid", "dpo_norm", "simpo")

Validation (training/config/validate.py), make_recipe (training/recipes/registry.py), the plan
(launch/planning/plan_rl.py) and the data commands read this table, so a loss is added here alone,
plus its math where its family's lives: an SFT-family loss trains as SFT; a preference loss with
new math adds its branch to recipes.DPO.loss_sum (whose last branch, SimPO's, takes any other
name); an RL loss its unit and branches in training/rl/grpo.py and its advantage in
training/rl/rollouts.py (group_advantages).
Kept free of torch and of the config schema: launch/ and the CLI's error paths import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.common.errors import ConfigError

# family -> its config group (configs/recipe/<group>.yaml), whose defaults pick the family's data
# (configs/data/<group>/<rung>.yaml) and its recipe.* keys
FAMILIES = {"sft": "sft", "preference": "dpo", "rl": "grpo"}


@dataclass(frozen=True)
class LossSpec:
    name: str  # recipe.loss
    family: str  # sft | preference | rl: the Recipe class of training/recipes/registry.py that trains it
    data_format: (
        str  # the data.format it reads: messages | preference (chosen/rejected) | rlvr (prompts)
    )

    @property
    def recipe(self) -> str:
        """The config group that sets this loss up: recipe=<this> recipe.loss=<name>."""
        return FAMILIES[self.family]


LOSSES: dict[str, LossSpec] = {
    s.name: s
    for s in (
        LossSpec("sft", "sft", "messages"),
        LossSpec("dpo_sigmoid", "preference", "preference"),  # Rafailov et al.
        LossSpec("dpo_norm", "preference", "preference"),  # length-normalised (Tulu 3)
        LossSpec("simpo", "preference", "preference"),  # reference-free (Meng et al.)
        LossSpec("grpo", "rl", "rlvr"),  # training/rl/grpo.py
        LossSpec("dr_grpo", "rl", "rlvr"),
        LossSpec("dapo", "rl", "rlvr"),
    )
}


def unknown_loss(name: str) -> str:
    """The problem validation reports for a loss outside the table, naming the table's choices."""
    return f"recipe.loss={name!r}: supported losses are {sorted(LOSSES)}"


def loss_spec(name: str) -> LossSpec:
    if name not in LOSSES:
        raise ConfigError(unknown_loss(name))
    return LOSSES[name]


def losses_of(family: str) -> tuple[str, ...]:
    return tuple(n for n, s in LOSSES.items() if s.family == family)


def is_rl(name: str) -> bool:
    """An RL loss: batches counted in answers, trained on rollouts. False for an unknown name, which
    validation reports on its own (batch_layout runs before that check)."""
    return name in LOSSES and LOSSES[name].family == "rl"
