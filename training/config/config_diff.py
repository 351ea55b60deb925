"""Resume never silently changes what is trained: this run's config against its checkpoint's.

    from training.config.config_diff import check_resume_config, continue_schedule
    changes = check_resume_config(cfg, ckpt, step)   # raises ConfigError on a change to the math
    changes.math      # [Change("optim.lr", 0.003, 0.01), ...]: applied, with trainer.allow_config_change=true
    changes.harmless  # logging, evaluation, bookkeeping, hardware layout: always allowed
    scheduler = continue_schedule(cfg, optimizer, step, make_scheduler)   # the new lr/schedule at `step`

A checkpoint holds the resolved config it was trained with (ladder_config.yaml). On resume every
key is compared with it. A key listed in HARMLESS may change freely; any other difference is a
change to the math (default-deny: a key added to the schema later counts as one until someone
lists it here) and is refused with the list of differences, unless trainer.allow_config_change
is true. Then the change is applied honestly from the next step: the optimizer takes the new
settings and the scheduler is rebuilt for the new lr, schedule and max_steps at the current step
(a loaded scheduler state would keep the old base rate), and the trainer records the changes in
run_meta.json (training/run/run_files.py) and `ladder launch` in the ledger. A model change is refused
even then: a resumed run's weights, and so its shape and vocabulary, are the checkpoint's.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from training.common.errors import CheckpointError, ConfigError
from training.config.validate import effective_lr

# Key prefixes (a whole key, or everything under a node) whose change leaves every update of the
# run as it was. Everything else changes what is trained (optimizer, schedule, steps, data, model,
# recipe, seed, the global and micro batch, precision) and needs trainer.allow_config_change.
HARMLESS = (
    # where results are logged, evaluated, recorded and kept: never an input to an update
    "eval",
    "tracker",
    "launcher",
    "budget",
    "sweep",
    "ledger",
    "registry",
    "data.decontamination",  # a check before launch, never an input to an update
    "trainer.run_root",
    "trainer.log_every",
    "trainer.resume",
    "trainer.step_timeout_s",
    "trainer.save_every",
    "trainer.keep_last",
    "trainer.save_initial",
    "trainer.eval_on_save",
    "trainer.eval_async",
    "trainer.eval_handoff",
    "trainer.checkpoint_url",
    "trainer.allow_config_change",
    "trainer.save_merged",  # LoRA: also writes merged weights beside the adapter; trains the same
    "trainer.trust_checkpoint",
    "trainer.stop_on_nonfinite",  # only decides whether a NaN loss stops the run
    # a label: trainer.resume=<another run's checkpoint> continues that run under a new name
    "trainer.run_name",
    # read by `ladder plan`, MFU and the defaults of the trainer.* keys above, never by the math
    "rung.gpu_type",
    "rung.gpu_memory_gb",
    "rung.cpu_memory_gb",
    "rung.assumed_mfu",
    "rung.assumed_tokens_per_s",
    "rung.peak_flops_per_device",
    "rung.save_initial",
    "rung.eval_on_save",
    "model.published_params",
    "model.from_scratch",  # read by validation only: the weights are the checkpoint's on resume
    # the hardware the same math runs on: resume across engines and world sizes is supported
    # (engines.py). grad_accum follows from the global batch, the micro-batch and the world size;
    # the first two are compared on their own keys.
    "rung.engine",
    "rung.nodes",
    "rung.gpus_per_node",
    "rung.device",
    "rung.offload",
    "rung.activation_checkpointing",
    "trainer.grad_accum",
    # how the same function is computed: kernels and loss chunking change only the rounding
    "trainer.loss_chunk_tokens",
    "trainer.compile",
)
# Math changes that even trainer.allow_config_change=true cannot apply: on resume the weights are
# loaded from the checkpoint, whatever model.* says. (How attention is computed can change.)
FIXED_BY_CHECKPOINT = ("model",)
APPLICABLE_MODEL_KEYS = ("model.attn_implementation",)
ABSENT = "(absent)"


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def is_harmless(key: str) -> bool:
    return _under(key, HARMLESS)


def is_fixed(key: str) -> bool:
    return _under(key, FIXED_BY_CHECKPOINT) and not _under(key, APPLICABLE_MODEL_KEYS)


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"

    def as_json(self) -> dict:
        return {"key": self.key, "old": self.old, "new": self.new}


@dataclass
class ConfigChanges:
    math: list[Change] = field(
        default_factory=list
    )  # applied only with trainer.allow_config_change=true
    harmless: list[Change] = field(default_factory=list)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value; lists are values, mappings are walked."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False, enum_to_str=True, throw_on_missing=False)
    out: dict[str, Any] = {}
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


@functools.cache
def schema_defaults() -> dict[str, Any]:
    """Every schema key's default, for keys a checkpoint's config predates."""
    from training.config.schema import GROUP_SCHEMAS, LadderConfig

    root = OmegaConf.structured(LadderConfig)
    out: dict[str, Any] = {}
    for name in LadderConfig.__dataclass_fields__:
        node = OmegaConf.structured(GROUP_SCHEMAS[name]) if name in GROUP_SCHEMAS else root[name]
        out.update(flatten(node, name + "."))
    return out


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every key whose value differs, in key order. A key the old config lacks counts only if its new
    value is not the schema default (a key added since keeps the behaviour the run was trained with)."""
    defaults = schema_defaults()
    changes = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, ABSENT), new.get(key, ABSENT)
        if a == b or (a == ABSENT and key in defaults and defaults[key] == b):
            continue
        changes.append(Change(key, a, b))
    return changes


def saved_config(ckpt: Path) -> dict[str, Any]:
    path = Path(ckpt) / "ladder_config.yaml"
    if not path.is_file():
        raise CheckpointError(
            f"{ckpt} holds no ladder_config.yaml, so whether this config trains the same "
            "thing cannot be checked; start a new run (a new trainer.run_name) or start this "
            "one over (trainer.resume=none)"
        )
    from training.config.compose import (
        load_saved,
    )  # refuses a live interpolation: the file is read as values

    return flatten(
        OmegaConf.to_container(
            load_saved(path), resolve=True, enum_to_str=True, throw_on_missing=False
        )
    )


def check_resume_config(
    cfg: DictConfig, ckpt: Path, step: int, run_name: str | None = None
) -> ConfigChanges:
    """Compare cfg with the config checkpoint `ckpt` (at `step`) was trained with. Raises
    ConfigError for a math change without trainer.allow_config_change=true, and for a model change
    in any case; returns the differences otherwise."""
    new = flatten(
        OmegaConf.to_container(cfg, resolve=True, enum_to_str=True, throw_on_missing=False)
    )
    old = saved_config(ckpt)
    found = ConfigChanges()
    for c in differences(old, new):
        (found.harmless if is_harmless(c.key) else found.math).append(c)
    run = f"run {run_name or cfg.trainer.run_name}"
    where = f"resuming from {ckpt} (step {step})"
    fixed = [c for c in found.math if is_fixed(c.key)]
    if fixed:
        raise ConfigError(
            f"{run}: {where} with another model:\n  - "
            + "\n  - ".join(map(str, fixed))
            + "\nA resumed run's weights are the checkpoint's, so this cannot be applied, not even with "
            "trainer.allow_config_change=true. Nothing was trained or written. Start a new run "
            "(a new trainer.run_name; model.name_or_path=<checkpoint> starts it from these weights) or start "
            "this one over (trainer.resume=none)."
        )
    if found.math and not cfg.trainer.get("allow_config_change", False):
        raise ConfigError(
            f"{run}: {where} with a config that changes what is trained:\n  - "
            + "\n  - ".join(map(str, found.math))
            + _lr_note(old, new)
            + f"\nNothing was trained or written. Start a new run (a new trainer.run_name), start this one over "
            f"(trainer.resume=none), or apply the change from step {step + 1} on, recorded in the run's "
            "run_meta.json and the ledger (trainer.allow_config_change=true)."
        )
    return found


def check_batch_continues(state: dict, micro_batches_per_step: int, ckpt: Path) -> None:
    """The data position is a micro-batch index (step x micro-batches per step): it only continues
    the same order if that count is the checkpoint's, whatever trainer.allow_config_change says."""
    saved = state.get("data", {}).get("micro_batches_per_step")
    if saved is not None and saved != micro_batches_per_step:
        raise CheckpointError(
            f"{ckpt} was trained with {saved} micro-batches per step, this run has {micro_batches_per_step}: "
            "the global batch or the micro-batch changed, so the data order would not continue. Keep them, "
            "or start a new run (trainer.resume=none)"
        )


def _lr_note(old: dict, new: dict) -> str:
    """optim.lr null means the rung's rate times the recipe's scale: say which rate that was."""

    def rate(flat):
        lr = flat.get("optim.lr")
        return lr if lr is not None else flat.get("rung.lr", 0.0) * flat.get("recipe.lr_scale", 1.0)

    a, b = rate(old), rate(new)
    return f"\n  (the learning rate used: {a:g} -> {b:g})" if a != b else ""


def continue_schedule(cfg: DictConfig, optimizer, step: int, make_scheduler: Callable):
    """The new config's optimizer settings and a scheduler for its lr, schedule and max_steps,
    continued at `step` (the step of the checkpoint just loaded): the next step trains at what the
    new schedule gives there. The optimizer's state (Adam's moments and step counts) is kept; its
    hyperparameters, which loading the checkpoint set to the old run's, are replaced."""
    o, lr = cfg.optim, effective_lr(cfg)
    for group in optimizer.param_groups:
        group.update(
            lr=lr, initial_lr=lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay
        )
    scheduler = make_scheduler(cfg, optimizer)  # base rate lr, at step 0
    lrs = [
        base * fn(step) for fn, base in zip(scheduler.lr_lambdas, scheduler.base_lrs)
    ]  # LambdaLR's rule
    state = scheduler.state_dict()
    state.update(last_epoch=step, _step_count=step + 1, _last_lr=lrs)
    scheduler.load_state_dict(state)
    for group, value in zip(optimizer.param_groups, lrs):
        group["lr"] = value
    return scheduler
