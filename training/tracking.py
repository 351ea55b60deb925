"""Weights & Biases logging with the real client: offline by default, online or disabled by config.

    tracker = Tracker(cfg, run_dir)
    tracker.log_step(step, metrics)
    tracker.log_checkpoint(ckpt_dir, step)        # an artifact *reference*, never an upload
    tracker.log_eval(step, {"reverse/exact_match": 61.2})
    tracker.finish()

Offline runs land in <run_dir>/wandb/offline-run-*/ and upload later with `wandb sync`.
The W&B run id is kept in <run_dir>/wandb_id, so a resumed run continues the same W&B run.
Eval scores are plotted against `eval/checkpoint_step` (the step of the checkpoint they
came from), so an eval that finishes later still lands at the right step.
"""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


class Tracker:
    def __init__(self, cfg: DictConfig, run_dir: Path, job_type: str = "train"):
        self.run = None
        mode = cfg.tracker.mode.value
        if mode == "disabled":
            return
        import wandb  # imported here: it is slow to import and unneeded when tracking is off

        if mode == "online" and not os.environ.get("WANDB_API_KEY") and not _has_netrc_key():
            from training.errors import ConfigError
            raise ConfigError("tracker.mode=online needs WANDB_API_KEY in the environment "
                              "(or `wandb login`); keys never go in configs")
        run_dir = Path(run_dir)
        id_file = run_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.exists() else new_run_id()
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(
            project=cfg.tracker.project,
            entity=cfg.tracker.entity,
            name=cfg.trainer.run_name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode=mode,
            job_type=job_type,
            tags=list(cfg.tracker.tags),
            config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True, disable_git=False),
        )
        self.run.define_metric("eval/checkpoint_step")
        self.run.define_metric("eval/*", step_metric="eval/checkpoint_step")

    @property
    def url(self) -> str | None:
        return self.run.get_url() if self.run is not None else None

    @property
    def run_path(self) -> str | None:
        return self.run.dir if self.run is not None else None

    def log_step(self, step: int, metrics: dict) -> None:
        if self.run is not None:
            self.run.log({f"train/{k}": v for k, v in metrics.items() if v is not None and k != "step"}, step=step)

    def log_checkpoint(self, ckpt_dir: Path, step: int) -> None:
        if self.run is None:
            return
        import wandb

        art = wandb.Artifact(f"{self.run.name}-checkpoint", type="model",
                             metadata={"step": step, "path": str(Path(ckpt_dir).resolve())})
        # A reference records where the weights are; checksum=False avoids reading them.
        art.add_reference(Path(ckpt_dir).resolve().as_uri(), name=Path(ckpt_dir).name, checksum=False)
        self.run.log_artifact(art, aliases=[f"step_{step}", "latest"])

    def log_eval(self, step: int, scores: dict) -> None:
        if self.run is not None:
            self.run.log({"eval/checkpoint_step": step, **{f"eval/{k}": v for k, v in scores.items()}})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def _has_netrc_key() -> bool:
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def new_run_id() -> str:
    """A W&B-style run id: 8 lowercase letters and digits."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))
