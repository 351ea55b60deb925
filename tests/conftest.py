"""Shared fixtures. Every test is hermetic: no hub, no network, runs under a temp directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                  WANDB_SILENT="true", TOKENIZERS_PARALLELISM="false")
os.environ.pop("WANDB_API_KEY", None)
sys.path.insert(0, str(Path(__file__).resolve().parent))

# A fast tiny run: no in-process evals, no step-0 checkpoint, no W&B, unless a test asks.
FAST = ["rung=tiny", "tracker.mode=disabled", "trainer.eval_on_save=false", "trainer.save_initial=false"]


def ladder_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `ladder` command as a user would."""
    exe = Path(sys.executable).parent / "ladder"
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def train_in_process(overrides: list[str]):
    from training.compose import compose
    from training.trainer import train
    return train(compose(overrides))


def losses(run_dir: Path) -> list[float]:
    from training.metrics import read_metrics
    return [r["loss"] for r in read_metrics(Path(run_dir) / "metrics.jsonl")]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One real tiny run shared by the checkpoint, eval and W&B tests: 150 steps with W&B
    offline, the untrained model saved as step 0, and every checkpoint scored as it is saved."""
    root = tmp_path_factory.mktemp("runs")
    result = train_in_process([
        "rung=tiny", f"trainer.run_root={root}", "trainer.run_name=shared", "trainer.max_steps=150",
        "trainer.save_every=75", "eval.max_examples=100", "tracker.mode=offline"])
    return result
