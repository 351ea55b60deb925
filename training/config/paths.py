"""What a file system can take: the path-valued config fields and the output options of the
commands, checked before anything is written (compose through training/names.check_names, and
training/validate.validate).

    from training.config.paths import path_problems, output_problem
    path_problems(cfg)                           # ["trainer.run_root='...' holds the control character '\\x00'; ..."]
    output_problem("--json", "runs")             # "--json runs: is a folder; give a file name"

Kept apart from validate.py, which imports the recipes' modules: names.py needs these rules and
must stay importable from the lowest modules (mixture_config, rlvr_data) without a cycle.
"""

from __future__ import annotations

import os
import unicodedata

from omegaconf import DictConfig, OmegaConf

# Every config field that holds a path (or a URL or hub name that may be one: datasets and
# transformers try a local folder first). A value a file system cannot take is a ConfigError
# naming the key here, not an OSError ("File name too long") or a ValueError ("embedded null
# byte") from whichever command first touches it.
PATH_KEYS = (
    "trainer.run_root",
    "trainer.resume",
    "trainer.checkpoint_url",
    "model.name_or_path",
    "model.tokenizer",
    "recipe.reference",
    "data.train_files",
    "data.hub_name",
    "eval.heldout_file",
    "eval.instructions_file",
    "eval.lm_eval.include_path",
    "launcher.python",
)
# (ledger.url and registry.url, which may carry a password, are checked by training/common/store_url.py.)
NAME_MAX, PATH_MAX = 255, 4096  # bytes: a path component, a whole path (Linux)
# Runs, checkpoints and caches are folders below trainer.run_root: leave room for the longest
# (<run name, 128>/checkpoints/step_NNNNNN/<file>, with margin).
RUN_ROOT_ROOM = 512


def path_problem(key: str, value, room: int = 0) -> str | None:
    """Why `value` cannot be the path `key` (NUL or another control character, a component over
    NAME_MAX bytes, more than PATH_MAX - room bytes once made absolute), or None. Shown escaped
    and cut short: the message must stay one readable line."""
    text = str(value)
    shown = repr(text if len(text) <= 60 else text[:57] + "...")
    if "://" in text:  # a URL may carry credentials: name its scheme only
        shown = f"<a {text.partition('://')[0][:20]!r} URL, not shown>"
    bad = next((c for c in text if unicodedata.category(c) == "Cc"), None)
    if bad is not None:  # NUL ends a C string; newline, ESC and the like break scripts and logs
        return f"{key}={shown} holds the control character {bad!r}; a path cannot"
    raw = text.encode("utf-8", "surrogatepass")
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return (
            f"{key}={shown} has a part of {len(longest)} bytes; a file or folder name is at most "
            f"{NAME_MAX} bytes"
        )
    whole = raw if "://" in text else os.path.abspath(text).encode("utf-8", "surrogatepass")
    if len(whole) > PATH_MAX - room:
        return (
            f"{key}={shown} is {len(whole)} bytes long as an absolute path; at most {PATH_MAX - room}"
            + (f" (PATH_MAX {PATH_MAX} less {room} for what goes below it)" if room else "")
        )
    return None


def path_problems(cfg: DictConfig) -> list[str]:
    """Every path-valued field of PATH_KEYS and every mixture source's files that a file system
    cannot take (compose refuses these through training/names.check_names; validate too)."""
    values: list[tuple[str, object, int]] = []
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
            values += [(f"{key}[{i}]", v, 0) for i, v in enumerate(value)]
        elif value is not None:
            values.append((key, value, RUN_ROOT_ROOM if key == "trainer.run_root" else 0))
    for name, source in (OmegaConf.select(cfg, "data.sources") or {}).items():
        values += [
            (f"data.sources.{name}.train_files[{i}]", v, 0)
            for i, v in enumerate(source.train_files)
        ]
    return [p for key, value, room in values if (p := path_problem(key, value, room))]


def output_problem(flag: str, value: str, directory: bool = False) -> str | None:
    """Why a command's output option (--json FILE, --html FILE, --write DIR) cannot be written, or
    None: checked before the command does its work, so a typo costs no evaluation."""
    problem = path_problem(flag, value)
    if problem:
        return problem
    if directory and os.path.exists(value) and not os.path.isdir(value):
        return f"{flag} {value}: is a file; give a folder (it is created if missing)"
    if not directory and os.path.isdir(value):
        return f"{flag} {value}: is a folder; give a file name"
    parent = os.path.dirname(os.path.abspath(value))
    if os.path.exists(parent) and not os.path.isdir(parent):
        return f"{flag} {value}: {parent} is a file, not a folder"
    return None
