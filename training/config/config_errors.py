"""Hydra's and OmegaConf's errors, said in one line in terms of what the user typed.

    from training.config.config_errors import describe
    raise ConfigError(f"invalid config: {describe(exc, overrides)}")

Each reply names the key (or the override) and what it accepts:
  an unknown key      the closest keys of the schema, by spelling (`trainer.max_stpes` ->
                      `trainer.max_steps`), by the same name under another node (`trainer.lr` ->
                      `optim.lr`) and by the names other trainers use (`optim.learning_rate` ->
                      `optim.lr`). Hydra's `+key=value` advice fails too for a typed node, so it
                      is not given; free-form nodes (launcher.env) do take `+key=value`.
  a wrong type        the type the schema declares (`optim.lr=abc`: a number or null;
                      `data.train_files=/x.jsonl`: a list, `data.train_files=[/x.jsonl]`).
  an unknown option   the group's options (`recipe=ppo`: one of dpo, grpo, sft).
  a value to quote    unicode, `$(`, spaces and the like stop Hydra's override grammar with a
                      lexer error that does not say which override or what to do. We find the
                      override and show how to quote it for both the shell and Hydra.
Anything else keeps Hydra's text, joined into one line without its internals.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import typing

from training.common.errors import ConfigError
from training.config.schema import LadderConfig

GRAMMAR_HINTS = (
    "LexerNoViableAltException",
    "mismatched input",
    "token recognition error",
    "extraneous input",
    "no viable alternative",
)

# Names other trainers (transformers' TrainingArguments, TRL, axolotl, torchtune) give to keys
# that ladder names otherwise; spelling alone would not lead from one to the other.
ALIASES = {
    "learning_rate": "lr",
    "lr_scheduler": "schedule",
    "lr_scheduler_type": "schedule",
    "scheduler": "schedule",
    "lr_schedule": "schedule",
    "warmup": "warmup_ratio",
    "warmup_steps": "warmup_ratio",
    "max_grad_norm": "max_grad_norm",
    "grad_clip": "max_grad_norm",
    "clip_grad_norm": "max_grad_norm",
    "wd": "weight_decay",
    "adam_beta1": "beta1",
    "adam_beta2": "beta2",
    "adam_epsilon": "eps",
    "epsilon": "eps",
    "steps": "max_steps",
    "num_steps": "max_steps",
    "total_steps": "max_steps",
    "epochs": "max_steps",
    "num_epochs": "max_steps",
    "num_train_epochs": "max_steps",
    "gradient_accumulation_steps": "grad_accum",
    "grad_accumulation_steps": "grad_accum",
    "max_seq_length": "max_seq_len",
    "seq_len": "max_seq_len",
    "sequence_len": "max_seq_len",
    "max_length": "max_seq_len",
    "model_name_or_path": "name_or_path",
    "model_name": "name_or_path",
    "pretrained_model_name_or_path": "name_or_path",
    "base_model": "name_or_path",
    "path": "name_or_path",
    "output_dir": "run_root",
    "save_steps": "save_every",
    "logging_steps": "log_every",
    "save_total_limit": "keep_last",
    "kl_coef": "kl_beta",
    "num_sample_generations": "num_generations",
    "dataset": "train_files",
    "data_files": "train_files",
    "train_file": "train_files",
}

_DROP = ("reference_type=", "object_type=", "Config search path", "provider=", "See https://")


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def schema_keys(cls=LadderConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the typed schema (free-form dicts end the walk)."""
    keys = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        keys.append(key)
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            keys += schema_keys(t, key + ".")
    return keys


def schema_type(key: str):
    """The type the schema declares for a dotted key (through dict nodes: data.sources.x.weight),
    or None where the schema does not say."""
    t: typing.Any = LadderConfig
    parts = key.split(".")
    while parts:
        if dataclasses.is_dataclass(t):
            hints = _hints(t)
            if parts[0] not in hints:
                return None
            t = hints[parts.pop(0)]
        elif typing.get_origin(t) is dict:
            parts.pop(0)
            t = typing.get_args(t)[1]
        else:
            return None
    return t


def accepts(key: str) -> str:
    """What a key accepts, in words: 'a number or null', 'one of single, ddp, ...'."""
    t = schema_type(key)
    nullable = False
    if typing.get_origin(t) is typing.Union:
        args = [a for a in typing.get_args(t) if a is not type(None)]
        nullable, t = len(args) < len(typing.get_args(t)), args[0]
    if isinstance(t, type) and issubclass(t, enum.Enum):
        text = "one of " + ", ".join(m.value for m in t)
    elif t is bool:
        text = "true or false"
    elif t is int:
        text = "a whole number"
    elif t is float:
        text = "a number"
    elif t is str:
        text = "text"
    elif typing.get_origin(t) is list:
        text = f"a list, e.g. {key}=[a,b]"
    elif typing.get_origin(t) is dict:
        text = f"a map, e.g. {key}={{name:value}}"
    elif dataclasses.is_dataclass(t):
        leaves = [k for k in schema_keys(t, key + ".")]
        shown = ", ".join(leaves[:4]) + (", ..." if len(leaves) > 4 else "")
        return (
            f"{key} is a node of settings, not a config group or a value: set its keys one by one "
            f"({shown}; `ladder config` prints them)"
        )
    else:
        text = "a value of another type"
    return text + (" or null" if nullable else "")


def _chain(e: BaseException) -> list[BaseException]:
    out, cause = [e], e.__cause__ or e.__context__
    while cause is not None and len(out) < 8:
        out.append(cause)
        cause = cause.__cause__ or cause.__context__
    return out


def unknown_key(e: BaseException) -> str | None:
    """The full key of an unknown-key error on a typed node, or None."""
    for err in _chain(e):
        full_key = getattr(err, "full_key", None)
        text = str(err)
        if full_key and " not in '" in text:  # "Key 'x' not in 'TrainerConfig'": a dataclass node
            return str(full_key)
    return None


def close_keys(key: str) -> list[str]:
    """The schema keys a mistyped key most likely meant, best first (at most two)."""
    keys = schema_keys()
    parent, _, leaf = key.rpartition(".")
    # A node is suggested only for a top-level key (`recpie=sft` -> recipe), never its own parent.
    candidates = [k for k in keys if "." in k or "." not in key]
    by_leaf: dict[str, list[str]] = {}
    for k in candidates:
        by_leaf.setdefault(k.rpartition(".")[2], []).append(k)

    def same_parent_first(found: list[str]) -> list[str]:
        return sorted(found, key=lambda k: k.rpartition(".")[0] != parent)

    alias = ALIASES.get(leaf.lower())
    if alias and alias in by_leaf:
        return same_parent_first(by_leaf[alias])[:2]
    siblings = [k for k in candidates if k.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(key, siblings, n=2, cutoff=0.8)
    if close:
        return close
    if leaf in by_leaf:  # the right name under another node: trainer.lr -> optim.lr
        return same_parent_first(by_leaf[leaf])[:2]
    return difflib.get_close_matches(key, candidates, n=2, cutoff=0.7)


def suggest(key: str) -> str:
    if key in ("budget.gpu_hours", "budget.period"):  # keys of older configs, moved into the ledger
        return (
            f"{key} is no longer a config key: a team's allocation lives in the ledger, set by whoever owns "
            "it with `ladder budget set --team T --period P --gpu-hours H`; a job names only budget.team"
        )
    close = close_keys(key)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"{key} is not a config key{hint} (`ladder config` prints every key and its value)"


def _override_key(ov: str) -> str:
    return ov.strip().lstrip("+~").partition("=")[0].strip()


def _given(key: str, overrides: list[str]) -> str | None:
    """The override that set key (or a key under it), as typed."""
    for ov in reversed(overrides):
        k = _override_key(ov)
        if k == key or k.startswith(key + "."):
            return ov
    return None


def wrong_type(key: str, overrides: list[str]) -> str:
    """`optim.lr=abc: optim.lr takes a number or null`, with the list syntax for a list key."""
    given = _given(key, overrides)
    what = accepts(key)
    if what.startswith(key + " is a node"):
        return f"{given}: {what}" if given else what
    where = given if given else f"{key} (set in a config file)"
    text = f"{where}: {key} takes {what}"
    value = given.partition("=")[2] if given else None
    if value and typing.get_origin(schema_type(key)) is list and not value.startswith("["):
        text += f"; for one item write {key}=[{value}]"
    return text


def missing_option(err: BaseException, overrides: list[str]) -> str:
    """`recipe=ppo`: the group's options, and the closest by spelling."""
    group, _, option = str(getattr(err, "missing_cfg_file", "")).rpartition("/")
    options = [str(o) for o in getattr(err, "options", None) or []]
    given = next(
        (ov for ov in overrides if _override_key(ov).split("@")[0] == group),
        None,
    )
    by_case = {o.lower(): o for o in options}
    close = [by_case[o] for o in difflib.get_close_matches(option.lower(), list(by_case), n=1)]
    hint = f"; did you mean {group}={close[0]}?" if close else ""
    where = given or f"a config file picks {group}={option}, which"
    return (
        f"{where}: there is no configs/{group}/{option}.yaml; {group} is one of "
        f"{', '.join(options) or '(none)'}{hint}"
    )


def bad_override(overrides: list[str]) -> str | None:
    """The first override Hydra's grammar cannot read."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for ov in overrides:
        try:
            parser.parse_overrides([ov])
        except HydraException:
            return ov
    return None


def quoting_help(override: str) -> str:
    import shlex

    key, _, value = override.partition("=")
    hydra = key + '="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return (
        f"Hydra's override grammar cannot read the value of {override!r} unquoted (unicode, spaces, $(, "
        f"quotes and brackets need quotes): write {hydra}; in a shell, {shlex.quote(hydra)} keeps the quotes "
        "for Hydra and keeps the shell from expanding the value"
    )


def describe(e: BaseException, overrides: list[str] | None = None, recompose=None) -> str:
    """One clear line for a composition error. recompose(overrides) -> config: compose passes itself,
    so an unknown mixture source can be listed against the sources there are (this module does not
    import compose, which imports it)."""
    from omegaconf.errors import InterpolationKeyError, OmegaConfBaseException

    overrides = list(overrides or [])
    chain = _chain(e)
    for err in chain:  # data.sources.<x>: a mixture has no source x (a map, so not a schema key)
        full_key = str(getattr(err, "full_key", None) or "")
        if full_key.startswith("data.sources.") and "not in struct" in str(err):
            from training.data.mixture_config import unknown_source

            return unknown_source(full_key, overrides, recompose) or _hydra_text(e)
        added = [o[1:].split("=")[0] for o in overrides if o.startswith("+data.sources.")]
        if added and "DataSourceConfig" in str(err):  # +data.sources.x...: a new source
            from training.data.mixture_config import unknown_source

            return unknown_source(added[0], overrides, recompose) or _hydra_text(e)
    key = unknown_key(e)
    if key:
        return suggest(key)
    for err in chain:
        if getattr(err, "missing_cfg_file", None):
            return missing_option(err, overrides)
    text = "\n".join(str(x) for x in chain)
    if "Ambiguous value for argument" in text:
        given = next((ov for ov in overrides if ov in text), "a comma list")
        return (
            f"{given}: a comma list is a sweep, which only `ladder launch -m` runs; write "
            "key=[a,b] for a list, or key='\"a,b\"' for text with a comma"
        )
    found = next((x for x in chain if isinstance(x, InterpolationKeyError)), None)
    if found is not None:  # `cost${USD}` meant as text
        key = str(getattr(found, "full_key", None) or "")
        where = _given(key, overrides) or key or "the config"
        return (
            f"{str(found).splitlines()[0]} in {where} (`${{...}}` names another key of the config; "
            "write \\${ for a literal ${)"
        )
    for err in chain:
        ov = getattr(err, "override", None)
        if isinstance(ov, str) and "=" not in ov:
            return (
                f"{ov!r} is not an override: write key=value (trainer.max_steps=200) or "
                "group=option (rung=8b)"
            )
    if any(h in text for h in GRAMMAR_HINTS):
        bad = bad_override(overrides)
        if bad is not None:
            return quoting_help(bad)
    for err in chain:  # a value the schema's type refuses: say the type, for the key typed
        full_key = getattr(err, "full_key", None)
        if isinstance(err, OmegaConfBaseException) and full_key and schema_type(str(full_key)):
            return wrong_type(str(full_key), overrides)
    return _hydra_text(e)


def invalid(problems: list[str], what: str = "invalid config") -> ConfigError:
    """One problem on one line; several, one line each under the heading."""
    if len(problems) == 1:
        return ConfigError(f"{what}: {problems[0]}")
    return ConfigError(f"{what}:\n  - " + "\n  - ".join(problems))


def _hydra_text(e: BaseException) -> str:
    """Hydra's message with the OmegaConf cause that names the key, on one line, without the
    internals (object types, the config search path)."""
    parts: list[str] = []
    for cause in _chain(e)[:4]:
        for line in str(cause).splitlines():
            line = line.strip()
            if not line or line == "None" or "$VALUE" in line or line.startswith(_DROP):
                continue
            if line not in parts and not any(line in p for p in parts):
                parts.append(line)
    return "; ".join(parts)
