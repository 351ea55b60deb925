"""The one rule for names that become paths: run, sweep, data, mixture source, eval suite and task names.

    from training.config.names import name_problem, check_names
    name_problem("trainer.run_name", "../../etc")   # -> "trainer.run_name='../../etc' ..."
    check_names(cfg)                                # raises ConfigError listing every bad name

A run name is a folder under trainer.run_root, a sweep name becomes run names (`<sweep>-<i>`)
and SLURM script names, an eval suite name becomes `<checkpoint>/eval/<suite>.json`. So every
one of them must stay a single, ordinary path component: a short run of letters, digits and
`. _ - + @`, starting with a letter or digit (so never `.`, `..`, a hidden file or an option
such as `-rf`), with no `/`, no `..` inside, and short enough that the longest file name we
derive from it (`<name>-<YYYYmmdd-HHMMSS>-<pid>.sbatch`) stays under the 255 bytes of common
file systems. The same holds for data.name (`<run_root>/data_inspect/<data>-<key>.json`, and the
`--write DIR/<data>.jsonl` of `ladder data decontaminate`), each mixture source name
(`DIR/<source>.jsonl`, metric keys `data/<source>/loss`) and each eval task name (`<task>/<metric>`
keys of the registry, W&B and reports). A bad name is refused before anything is written; it is
never rewritten. check_names also refuses path-valued fields a file system cannot take
(training/paths.path_problems), so every command that composes a config is spared the OSError.
"""

from __future__ import annotations

import re

from omegaconf import DictConfig

from training.common.errors import ConfigError
from training.config.config_errors import invalid
from training.config.paths import path_problems

MAX_LEN = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@-]*")
RULE = (
    f"use 1 to {MAX_LEN} characters from letters, digits and . _ - + @, starting with a letter or digit, "
    "without '..'"
)


def name_problem(key: str, value) -> str | None:
    """Why `value` cannot be the name `key`, or None. The value is shown escaped (repr), so a
    newline or a control character in it cannot break the message's line."""
    text = str(value)
    if len(text) > MAX_LEN:
        return f"{key} is {len(text)} characters long: {RULE}"
    if not _NAME.fullmatch(text) or ".." in text:
        return f"{key}={text!r} cannot be a file name: {RULE}"
    return None


def check_name(key: str, value) -> None:
    problem = name_problem(key, value)
    if problem:
        raise ConfigError(f"invalid config: {problem}")


def names_of(cfg: DictConfig) -> dict[str, str]:
    """The names of a composed config that become paths; the run name as the trainer derives it."""
    t = cfg.trainer
    run_name = t.run_name or f"{cfg.rung.name}-{cfg.recipe.name}-{cfg.data.name}"
    names = {"trainer.run_name": run_name, "eval.name": cfg.eval.name, "data.name": cfg.data.name}
    if cfg.sweep.name is not None:
        names["sweep.name"] = cfg.sweep.name
    # a source's name is a key of data.sources; data.sources[i] is the i-th, in config order
    names.update({f"data.sources[{i}]": name for i, name in enumerate(cfg.data.sources or {})})
    names.update({f"eval.tasks[{i}]": task for i, task in enumerate(cfg.eval.tasks)})
    names.update(
        {f"eval.lm_eval.tasks[{i}]": task for i, task in enumerate(cfg.eval.lm_eval.tasks)}
    )
    return names


def check_names(cfg: DictConfig) -> None:
    problems = [p for key, value in names_of(cfg).items() if (p := name_problem(key, value))]
    problems += path_problems(cfg)
    if not cfg.trainer.run_name:  # say where a derived run name came from
        problems = [
            p + " (derived as <rung.name>-<recipe.name>-<data.name>; set trainer.run_name)"
            if p.startswith("trainer.run_name")
            else p
            for p in problems
        ]
    if problems:
        raise invalid(problems)
