"""Evaluate checkpoints in the background while training goes on: one subprocess per checkpoint.

    evaluator = AsyncEvaluator(cfg.eval, log_dir=run_dir / "eval_logs")
    evaluator.submit(ckpt_dir, step)        # returns at once; the job runs `python -m evals.runner`
    for done in evaluator.poll():           # between steps: finished evaluations, never blocks
        tracker.log_eval(done.step, done.scores)
    for done in evaluator.drain():          # at the end of the run: wait for the rest
        ...
    done = evaluator.hand_off(run_dir)      # or stop now: the rest go to pending_evals.json

Each job runs `python -m evals.runner CKPT --eval-config <suite yaml> --out <json>` at a low
CPU priority (nice 10), so it goes through the eval cache and the registry exactly like
`ladder eval`, and a crash in an eval never takes the training process down. Jobs run
`max_parallel` at a time (default 1) in submission order; the rest wait in a queue. Results
come back in step order even when a later job finishes first, so the run's log reads in order. A
checkpoint removed by keep_last before its job starts comes back as a failed EvalDone
naming the reason, never as an exception in the training loop.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from training.common.safe_files import write_atomic

REPO_ROOT = Path(__file__).resolve().parent.parent
PENDING_FILE = "pending_evals.json"  # checkpoints a finished run left for eval jobs of their own
log = logging.getLogger("ladder.eval")


def read_pending(run_dir: str | Path) -> list[dict]:
    """[{"step": N, "checkpoint": path}, ...] that a run handed off; [] when there are none."""
    try:
        return json.loads((Path(run_dir) / PENDING_FILE).read_text())["checkpoints"]
    except FileNotFoundError:
        return []


@dataclass
class EvalDone:
    step: int
    checkpoint: Path
    ok: bool
    scores: dict = field(default_factory=dict)  # {"reverse/exact_match": 100.0, ...}
    result: dict | None = None  # evals.runner's result without per-example rows
    error: str | None = None  # the last lines of the job's log when it failed
    seconds: float = 0.0
    log_path: Path | None = None


@dataclass
class _Job:
    ckpt: Path
    step: int
    out: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0


class AsyncEvaluator:
    def __init__(
        self,
        eval_cfg: DictConfig,
        registry_url: str | None = None,
        log_dir: str | Path | None = None,
        max_parallel: int = 1,
        nice: int = 10,
        env: dict | None = None,
    ):
        self.registry_url = registry_url
        self.log_dir = Path(log_dir) if log_dir else None
        self.max_parallel = max(1, max_parallel)
        self.nice = nice
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
            "TOKENIZERS_PARALLELISM": "false",
            **(env or {}),
        }
        self._tmp = tempfile.TemporaryDirectory(prefix="ladder-async-eval-")
        self.suite_file = Path(self._tmp.name) / "suite.yaml"
        # As composed (resolved, a literal `${` kept escaped): resolve=True would make it live in the job.
        self.suite_file.write_text(OmegaConf.to_yaml(eval_cfg))
        self._queue: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._held: list[EvalDone] = []  # finished, waiting for an earlier step's job (step order)

    @property
    def pending_steps(self) -> tuple[int, ...]:
        """Steps whose checkpoints are still to be evaluated: keep_last must not delete them."""
        return tuple(j.step for j in (*self._queue, *self._running))

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return len(self._queue) + len(self._running)

    def submit(self, ckpt_dir: str | Path, step: int) -> None:
        ckpt = Path(ckpt_dir).resolve()
        log_dir = self.log_dir or ckpt.parent.parent / "eval_logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._queue.append(
            _Job(
                ckpt,
                step,
                # named for the checkpoint (step_N, or avg_lastK_step_N of trainer.average_last)
                Path(self._tmp.name) / f"{ckpt.name}-{len(self._queue)}.json",
                log_dir / f"eval_{ckpt.name}.log",
            )
        )
        self._start_queued()

    def poll(self) -> list[EvalDone]:
        """Evaluations that finished since the last call; starts queued jobs. Never blocks."""
        for job in list(self._running):
            if job.proc.poll() is not None:
                self._running.remove(job)
                self._held.append(self._collect(job))
        self._start_queued()
        first_pending = min(self.pending_steps, default=None)
        done = sorted(
            (d for d in self._held if first_pending is None or d.step < first_pending),
            key=lambda d: d.step,
        )
        self._held = [d for d in self._held if all(d is not r for r in done)]
        return done

    def drain(self, timeout: float | None = None) -> list[EvalDone]:
        """Wait for every submitted evaluation; after `timeout` seconds the rest are killed and
        come back failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done = []
        while self.pending:
            done += self.poll()
            if deadline is not None and time.monotonic() > deadline:
                done += self.close(reason=f"still running after drain(timeout={timeout})")
                break
            time.sleep(0.2)
        return done

    def close(self, reason: str = "the evaluator was closed") -> list[EvalDone]:
        """Kill running jobs and drop queued ones (a failed run must not leave evals behind)."""
        done, self._held = sorted(self._held, key=lambda d: d.step), []
        for job in self._running:
            job.proc.kill()
            job.proc.wait()
            done.append(EvalDone(job.step, job.ckpt, False, error=reason, log_path=job.log_path))
        done += [EvalDone(j.step, j.ckpt, False, error=reason) for j in self._queue]
        self._running.clear()
        self._queue.clear()
        return done

    def hand_off(self, run_dir: str | Path) -> list[EvalDone]:
        """Stop without waiting (the run is over and its devices should go back): returns the
        evaluations that have finished, kills the rest and lists their checkpoints in
        <run_dir>/pending_evals.json for `ladder eval --pending RUN_DIR`. A killed job's finished
        tasks are in the eval cache, so the eval job does not redo them."""
        done = self.poll() + self.close(reason="handed off to an eval job")
        left = [{"step": d.step, "checkpoint": str(d.checkpoint)} for d in done if not d.ok]
        path = Path(run_dir) / PENDING_FILE
        if left:
            write_atomic(
                path, json.dumps({"checkpoints": left, "written_at": time.time()}, indent=1) + "\n"
            )
            log.info(
                "evaluation of step(s) %s handed off: %s lists them for `ladder eval --pending %s`",
                ", ".join(str(x["step"]) for x in left),
                path,
                run_dir,
            )
        return [d for d in done if d.ok]

    def __enter__(self) -> AsyncEvaluator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self._tmp.cleanup()

    # ---- internals ---------------------------------------------------------------------
    def _start_queued(self) -> None:
        while self._queue and len(self._running) < self.max_parallel:
            job = self._queue.popleft()
            cmd = [
                sys.executable,
                "-m",
                "evals.runner",
                str(job.ckpt),
                "--eval-config",
                str(self.suite_file),
                "--out",
                str(job.out),
                "--nice",
                str(self.nice),
            ]
            if self.registry_url:
                cmd += ["--registry", self.registry_url]
            with open(job.log_path, "w") as log:
                job.proc = subprocess.Popen(
                    cmd,
                    cwd=REPO_ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            job.started = time.monotonic()
            self._running.append(job)

    def _collect(self, job: _Job) -> EvalDone:
        seconds = round(time.monotonic() - job.started, 2)
        if job.proc.returncode == 0 and job.out.exists():
            result = json.loads(job.out.read_text())
            return EvalDone(
                job.step, job.ckpt, True, result["scores"], result, None, seconds, job.log_path
            )
        try:
            tail = "\n".join(job.log_path.read_text().strip().splitlines()[-5:])
        except OSError:
            tail = ""
        return EvalDone(
            job.step,
            job.ckpt,
            False,
            error=f"exit status {job.proc.returncode}: {tail}",
            seconds=seconds,
            log_path=job.log_path,
        )
