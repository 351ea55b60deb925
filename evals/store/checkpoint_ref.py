"""A checkpoint resolved once into one value: path, step, run directory, content hash, saved config.

    ref = resolve_checkpoint("runs/tiny-sft-reverse/checkpoints/step_000150")   # checked, read once
    evaluate_checkpoint(ref, cfg.eval)          # evals/runner.py, the registry, launch/commands/eval_cmd.py

`ladder eval CKPT` used to re-derive these in evals/runner.py, evals/store/registry.py and
launch/commands/eval_cmd.py, each reading ladder_config.yaml and ladder_meta.json again and parsing the
directory name; now each takes this value. The content hash is computed on first use and then
held (submitting an eval job for a 16 GB checkpoint never needs it; evaluating it does once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from training.common.errors import CheckpointError
from training.run.checkpoint import check_checkpoint, step_of


def run_dir_of(ckpt: Path) -> Path | None:
    """runs/<name> for runs/<name>/checkpoints/step_N; None for a checkpoint outside a run."""
    ckpt = Path(ckpt).resolve()
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


@dataclass(frozen=True)
class CheckpointRef:
    path: Path  # absolute
    step: int | None  # ladder_meta.json's step, else the directory name's
    run_dir: Path | None  # None for a checkpoint outside a run directory
    config: DictConfig | None = (
        None  # ladder_config.yaml on the schema (untyped if the schema moved on)
    )
    meta: dict = field(default_factory=dict)  # ladder_meta.json
    known_hash: str | None = None  # a hash the caller already has (registry rows, tests)

    @cached_property
    def content_hash(self) -> str:
        if self.known_hash is not None:
            return self.known_hash
        from training.common.checkpoint_hash import checkpoint_hash

        return checkpoint_hash(self.path)

    @property
    def run_name(self) -> str:
        name = self.meta.get("run_name") or self.select("trainer.run_name")
        return name or (self.run_dir.name if self.run_dir else self.path.name)

    def select(self, key: str):
        """A value of the saved config (None when absent, or when there is no saved config)."""
        return OmegaConf.select(self.config, key) if self.config is not None else None

    def __str__(self) -> str:
        return str(self.path)


def read_ref(ckpt: str | Path, content_hash: str | None = None) -> CheckpointRef:
    """The value, from the checkpoint's own files, without checking them (see resolve_checkpoint)."""
    path = Path(ckpt).resolve()
    meta_file, cfg_file = path / "ladder_meta.json", path / "ladder_config.yaml"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    config = None
    if cfg_file.exists():
        from training.config.compose import load_saved
        from training.config.schema import LadderConfig

        saved = load_saved(cfg_file)  # a shared checkpoint is input: never resolve what it says
        try:
            config = OmegaConf.merge(OmegaConf.structured(LadderConfig), saved)
        except Exception:  # a config from an older schema: keep what it says, untyped
            config = saved
    step = meta.get("step")
    if step is None:
        try:
            step = step_of(path)
        except CheckpointError:  # a checkpoint directory named otherwise: no step known
            step = None
    return CheckpointRef(path, step, run_dir_of(path), config, meta, content_hash)


def resolve_checkpoint(ckpt: str | Path | CheckpointRef) -> CheckpointRef:
    """Check the checkpoint against its COMPLETE manifest (every file's size: a missing or
    truncated file stops it here) and read it once; a CheckpointRef is passed through."""
    if isinstance(ckpt, CheckpointRef):
        return ckpt
    return read_ref(check_checkpoint(ckpt))
