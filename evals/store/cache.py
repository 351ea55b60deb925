"""The eval cache: one file per (checkpoint content, task, task version, settings, eval code).

    from evals.store.cache import task_specs, EvalCache
    specs = task_specs(cfg.eval)                       # what each task would run, without a model
    cache = EvalCache(Path("runs/eval_cache"))
    hit = cache.get(spec.key(content_hash))            # the stored task result, or None

A task's key hashes the checkpoint's content hash (training/common/checkpoint_hash.py), the task name and
version, the settings that change its scores (examples, generation budget, the data file's
content, lm-eval's version, few-shot count and chat template) and EVAL_CODE_VERSION. The
batch size, the device and the generator (hf or vllm, eval.generator) are left out: they change
how greedy answers are computed, not what is asked, and each result records its own device and
generator. A hit is answered
from the file, without loading the model. The files live beside the registry
(<run root>/eval_cache/<key[:2]>/<key>.json, a ContentCache: training/common/content_cache.py), not
inside checkpoints, so they survive keep_last pruning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from evals.tasks.builtin import BUILTIN_TASKS
from training.common.content_cache import ContentCache, file_hash, key_of
from training.common.errors import ConfigError

# Bump when a change to evals/ changes scores for the same checkpoint and settings.
EVAL_CODE_VERSION = 2


def _file_digest(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return file_hash(path)[:16]
    except OSError as e:
        raise ConfigError(f"eval data file {path}: {e.strerror}") from None


@dataclass
class TaskSpec:
    """One task of a suite, as it would run: enough to key its result without a model."""

    name: str
    kind: str  # builtin | lm_eval
    version: str
    settings: dict = field(default_factory=dict)

    @property
    def settings_key(self) -> str:
        """The same for every checkpoint: results with equal settings keys are comparable."""
        return key_of(
            {
                "task": self.name,
                "version": self.version,
                "settings": self.settings,
                "eval_code_version": EVAL_CODE_VERSION,
            }
        )

    def key(self, content_hash: str) -> str:
        return key_of({"checkpoint": content_hash, "settings": self.settings_key})


def task_specs(eval_cfg: DictConfig) -> list[TaskSpec]:
    """The suite's tasks with their versions and settings; a bad task name is a ConfigError."""
    specs = []
    for task in eval_cfg.tasks:
        if task not in BUILTIN_TASKS:
            raise ConfigError(
                f"eval.tasks: unknown task {task!r}; built-in tasks are {sorted(BUILTIN_TASKS)} "
                "(lm-evaluation-harness tasks go under eval.lm_eval.tasks)"
            )
        file_key = BUILTIN_TASKS[task].file_key
        data_file = eval_cfg[file_key]
        if not data_file:
            raise ConfigError(f"eval.tasks has {task!r} but eval.{file_key} is not set")
        specs.append(
            TaskSpec(
                task,
                "builtin",
                BUILTIN_TASKS[task].version,
                {
                    "data": _file_digest(data_file),
                    "max_examples": eval_cfg.max_examples,
                    "max_new_tokens": eval_cfg.max_new_tokens,
                },
            )
        )
    lm = eval_cfg.lm_eval
    if lm.tasks:
        from evals.tasks.lm_harness import check_lm_eval_tasks, include_dir_digest, lm_eval_version

        check_lm_eval_tasks(list(lm.tasks), lm.include_path)
        local = include_dir_digest(lm.include_path)
        for task in lm.tasks:
            specs.append(
                TaskSpec(
                    task,
                    "lm_eval",
                    f"lm_eval-{lm_eval_version()}",
                    {
                        "local_tasks": local,
                        "num_fewshot": lm.num_fewshot,
                        "limit": lm_limit(eval_cfg),
                        "apply_chat_template": lm.apply_chat_template,
                    },
                )
            )
    if not specs:
        raise ConfigError(
            f"eval suite {eval_cfg.name!r} has no tasks (eval.tasks and eval.lm_eval.tasks are empty)"
        )
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"eval suite {eval_cfg.name!r} names a task twice: {names}")
    return specs


def lm_limit(eval_cfg: DictConfig) -> int | None:
    return eval_cfg.lm_eval.limit if eval_cfg.lm_eval.limit is not None else eval_cfg.max_examples


class EvalCache:
    """Task results as JSON, one file per key. A planted link is replaced by put, refused by get."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.cache = ContentCache(self.root, fan_out=True)

    def path(self, key: str) -> Path:
        return self.cache.path(key, ".json")

    def get(self, key: str) -> dict | None:
        return self.cache.read_json(key)

    def put(self, key: str, result: dict) -> Path:
        # a temporary name of its own, renamed: two evaluators of one checkpoint never tear a file
        return self.cache.write_json(key, result)
