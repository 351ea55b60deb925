"""Weights & Biases logging with the real client: offline by default, online or disabled by config.

    tracker = Tracker(cfg, run_dir)
    tracker.log_step(step, metrics)
    tracker.log_checkpoint(ckpt_dir, step, url)   # an artifact *reference* (to url when set), never an upload
    tracker.log_eval(step, {"reverse/exact_match": 61.2})
    tracker.link_eval(ckpt_dir, step, result)     # an `eval` artifact naming the checkpoint artifact
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

from training.common.safe_files import read_text, write_atomic


class Tracker:
    def __init__(self, cfg: DictConfig, run_dir: Path, job_type: str = "train"):
        from training.model.lora import adapter_record

        self.run = None
        self.adapter = adapter_record(cfg)  # None: full fine-tuning
        mode = cfg.tracker.mode.value
        if mode == "disabled":
            return
        import wandb  # imported here: it is slow to import and unneeded when tracking is off

        if mode == "online" and not os.environ.get("WANDB_API_KEY") and not _has_netrc_key():
            from training.common.errors import ConfigError

            raise ConfigError(
                "tracker.mode=online needs WANDB_API_KEY in the environment "
                "(or `wandb login`); keys never go in configs"
            )
        run_dir = Path(run_dir)
        id_file = run_dir / "wandb_id"
        try:  # O_NOFOLLOW: a link planted there is neither read nor written through
            run_id = read_text(id_file).strip() or new_run_id()
        except OSError:
            run_id = new_run_id()
        write_atomic(id_file, run_id + "\n")
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
            # adapter: LoRA's method, r, alpha and targets, or null: the model.lora node alone
            # holds its defaults (r, alpha) even when disabled, so it cannot tell the two apart
            config={
                **OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
                "adapter": self.adapter,
            },
            settings=wandb.Settings(
                console="off", x_disable_stats=True, silent=True, disable_git=False
            ),
        )
        self.run.define_metric("eval/checkpoint_step")
        self.run.define_metric("eval/*", step_metric="eval/checkpoint_step")

    @classmethod
    def disabled(cls) -> Tracker:
        """A tracker that logs nothing: ranks other than 0 hold one."""
        t = cls.__new__(cls)
        t.run, t.adapter = None, None
        return t

    @property
    def url(self) -> str | None:
        return (
            self.run.url if self.run is not None else None
        )  # None offline (wandb 0.31 has no get_url)

    @property
    def run_path(self) -> str | None:
        return self.run.dir if self.run is not None else None

    def log_step(self, step: int, metrics: dict) -> None:
        if self.run is not None:
            self.run.log(
                {f"train/{k}": v for k, v in metrics.items() if v is not None and k != "step"},
                step=step,
            )

    def log_checkpoint(self, ckpt_dir: Path, step: int, url: str | None = None) -> None:
        """url: the durable copy at trainer.checkpoint_url (s3://...), which the artifact then
        references instead of the local directory."""
        if self.run is None:
            return
        import wandb

        metadata = {
            "step": step,
            "path": str(Path(ckpt_dir).resolve()),
            **({"url": url} if url else {}),
            # an adapter checkpoint holds no base weights: whoever loads it needs the base too
            "adapter": self.adapter,
        }
        art = wandb.Artifact(f"{self.run.name}-checkpoint", type="model", metadata=metadata)
        # A reference records where the weights are; checksum=False avoids reading them.
        art.add_reference(
            url or Path(ckpt_dir).resolve().as_uri(), name=Path(ckpt_dir).name, checksum=False
        )
        self.run.log_artifact(art, aliases=[f"step_{step}", "latest"])

    def log_eval(self, step: int, scores: dict, prefix: str = "eval") -> None:
        """prefix eval_average: trainer.average_last's scores, beside the curve, not on it."""
        if self.run is not None:
            self.run.log(
                {
                    f"{prefix}/checkpoint_step": step,
                    **{f"{prefix}/{k}": v for k, v in scores.items()},
                }
            )

    def link_eval(self, ckpt_dir: Path, step: int, result: dict) -> None:
        """Tie an eval to its checkpoint's artifact: an `eval` artifact whose metadata names the
        checkpoint artifact (<run>-checkpoint:step_N), its content hash, the suite, the scores and
        the settings, and which references the result file (no upload). Online, the run also
        uses the checkpoint artifact, so W&B's lineage graph draws the edge; offline W&B has no
        use_artifact, and the metadata carries the link."""
        if self.run is None:
            return
        import wandb

        ckpt_art = f"{self.run.name}-checkpoint:step_{step}"
        tasks = result.get("tasks", {})
        art = wandb.Artifact(
            f"{self.run.name}-eval-{result['suite']}",
            type="eval",
            metadata={
                "checkpoint_artifact": ckpt_art,
                "checkpoint_step": step,
                "checkpoint": str(Path(ckpt_dir).resolve()),
                "content_hash": result.get("content_hash"),
                "suite": result["suite"],
                "scores": result["scores"],
                "eval_code_version": result.get("eval_code_version"),
                "tasks": {
                    k: {
                        f: t.get(f)
                        for f in ("task_version", "n", "generation", "prompt_format", "cache_key")
                    }
                    for k, t in tasks.items()
                },
            },
        )
        if result.get("path"):
            art.add_reference(
                Path(result["path"]).resolve().as_uri(), name="result.json", checksum=False
            )
        if not self.run.settings._offline:
            try:
                self.run.use_artifact(ckpt_art)
            except Exception:  # the checkpoint was logged by a run that W&B has not synced yet
                pass
        self.run.log_artifact(art, aliases=[f"step_{step}", "latest"])

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
