"""A checkpoint resolved once into one value: path, step, run directory, content hash, saved config.

    ref = resolve_checkpoint("runs/tiny-sft-reverse/checkpoints/step_000150")   # checked, read once
    evaluate_checkpoint(ref, cfg.eval)          # evals/runner.py, the registry, launch/commands/eval_cmd.py

`ladder eval CKPT` used to re-derive these in evals/runner.py, evals/store/registry.py and
launch/commands/eval_cmd.py, each reading ladder_config.yaml and ladder_meta.json again and parsing the
directory name; now each takes this value. The content hash is computed on first use and then
held (submitting an eval job for a 16 GB checkpoint never needs it; evaluating it does once).
"""

from __future__ import annotations

import errno
import json
import reprlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from training.common.errors import CheckpointError
from training.common.safe_files import open_nofollow
from training.model.lora import ADAPTER_CONFIG
from training.run.checkpoint import check_checkpoint, step_of

ADAPTER_CONFIG_MAX_BYTES = 1 << 20  # peft writes about 1 KB: a larger file is not its config


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

    @cached_property
    def adapter(self) -> dict | None:
        """{method, r, alpha} of an adapter checkpoint, None for full weights (read_adapter)."""
        return read_adapter(self.path)

    @property
    def run_name(self) -> str:
        name = self.meta.get("run_name") or self.select("trainer.run_name")
        return name or (self.run_dir.name if self.run_dir else self.path.name)

    def select(self, key: str):
        """A value of the saved config (None when absent, or when there is no saved config)."""
        return OmegaConf.select(self.config, key) if self.config is not None else None

    def __str__(self) -> str:
        return str(self.path)


def read_adapter(ckpt: str | Path) -> dict | None:
    """An adapter checkpoint's {method, r, alpha}, from its own adapter_config.json; None when it
    has none (full weights). That file, not the run config, is what peft and vLLM build the adapter
    from, and the content hash covers it: a config changed on resume, or a merged/ folder whose run
    config says LoRA, cannot mislabel it. The file is input: opened without following a link (so
    it is the one inside the checkpoint folder), size-capped, parsed as JSON only, each value
    type-checked; anything else is one CheckpointError naming the file and the key."""
    path = Path(ckpt) / ADAPTER_CONFIG
    try:
        with open_nofollow(path) as f:
            raw = f.read(ADAPTER_CONFIG_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        why = (
            "it is a symlink, and Ladder follows none in a checkpoint"
            if e.errno == errno.ELOOP
            else e
        )
        raise CheckpointError(f"{path} cannot be read: {why}") from None
    if len(raw) > ADAPTER_CONFIG_MAX_BYTES:
        raise CheckpointError(f"{path} is over {ADAPTER_CONFIG_MAX_BYTES} bytes: not peft's config")

    def refuse_constant(name: str):  # NaN, Infinity: not JSON
        raise ValueError(f"{name} is not a JSON value")

    try:
        cfg = json.loads(raw.decode("utf-8"), parse_constant=refuse_constant)
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{path} is not JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} holds a JSON {type(cfg).__name__}, not peft's object")
    if cfg.get("peft_type") != "LORA":
        raise CheckpointError(
            f"{path}: peft_type {reprlib.repr(cfg.get('peft_type'))} is not 'LORA', the only "
            "adapter Ladder trains"
        )
    for key in ("r", "lora_alpha"):
        value = cfg.get(key)
        # bool is an int in Python; a float alpha is not what the schema (int) lets a run write
        if type(value) is not int or value < 1:
            raise CheckpointError(
                f"{path}: {key} must be a positive integer, not {reprlib.repr(value)}"
            )
    return {"method": "lora", "r": cfg["r"], "alpha": cfg["lora_alpha"]}


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
