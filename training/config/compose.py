"""Compose the Hydra config tree under configs/ with command-line overrides.

    from training.config.compose import compose
    cfg = compose(["rung=tiny", "trainer.max_steps=20"])

The root schema (training/config/schema.py) is registered as `ladder_schema`, so every group
file is merged into a typed node: unknown keys and wrong types fail here, at compose time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from training.common.errors import ConfigError
from training.common.store_url import config_url_problems
from training.config.config_errors import describe, invalid
from training.config.names import check_names
from training.config.schema import LadderConfig
from training.config.secret_guard import (
    argv_problems,
    interpolated_keys,
    secret_values,
    source_problems,
    value_problems,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"

_ESCAPE = re.compile(r"(\\*)\$\{")  # a `${` and the backslashes before it

ConfigStore.instance().store(name="ladder_schema", node=LadderConfig)
if not OmegaConf.has_resolver("ladder_root"):
    # Lets configs name files shipped in the repo wherever the command runs from.
    OmegaConf.register_new_resolver("ladder_root", lambda: str(REPO_ROOT))


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Return the composed, resolved and read-only config, or raise ConfigError. Secrets
    (training/config/secret_guard.py), in the config or anywhere in the overrides, interpolations outside
    its allow-list, `hydra.*` overrides and names that would not be plain path components
    (training/config/names.py) are refused here, before any command writes a file."""
    overrides = list(overrides or [])
    # The overrides are recorded as given (run_meta.json, W&B, the ledger, job scripts): a secret in
    # one is refused even where the config ends up without it.
    in_argv = argv_problems(overrides, what="override")
    problems = hydra_overrides(overrides)
    if (
        problems
    ):  # before Hydra reads anything: hydra.searchpath=... would read config files from elsewhere
        raise invalid(problems + in_argv)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=overrides)
        problems = source_problems(OmegaConf.to_container(cfg, resolve=False))
        if problems:  # before resolving: that is what would copy a secret's value into the config
            raise invalid(problems + in_argv)
        # Resolved once, here: the checks below see the values every command after uses.
        values = OmegaConf.to_container(cfg, resolve=True)
        problems = value_problems(values) + in_argv
        problems += config_url_problems(
            values, problems
        )  # ledger.url, registry.url: a store's two forms only
        # `+key=value` overrides bypass the schema; merging into a fresh schema catches them. The
        # values go in escaped, so a `${` that is text (from `\\${`, or a variable's value) stays text
        # in every later merge, dump and load instead of becoming an interpolation again.
        cfg = OmegaConf.merge(OmegaConf.structured(LadderConfig), literal(values))
    except (HydraException, OmegaConfBaseException) as e:
        if in_argv:  # Hydra's message may quote the override that holds the secret
            raise invalid(in_argv) from None
        raise ConfigError(f"invalid config: {describe(e, overrides, compose)}") from None
    if problems:
        raise invalid(problems)
    check_names(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def hydra_overrides(overrides: list[str]) -> list[str]:
    """`hydra.*` overrides (and hydra/ groups), refused: Hydra's own settings do nothing under its
    compose API but harm (hydra.searchpath reads config files from elsewhere), yet would be recorded
    with the run like any override. The key is named unless it holds a secret itself."""
    secrets = secret_values().values()
    problems = []
    for ov in overrides:
        key = ov.strip().lstrip("+~").partition("=")[0].strip()
        if any(
            part == "hydra" or part.startswith(("hydra.", "hydra/")) for part in key.split("@")
        ):  # group@package
            shown = "a hydra override" if any(s in key for s in secrets) else key
            problems.append(
                f"{shown}: Hydra's own settings are not part of ladder's config (they set nothing here, "
                "and would be recorded with the run); remove it"
            )
    return problems


def literal(data: Any) -> Any:
    """Plain data (a resolved container, JSON) with every `${` in its strings escaped, to give to
    OmegaConf: it then reads back as the same text through create, merge, to_yaml and load,
    instead of as an interpolation. Backslashes just before a `${` are doubled (OmegaConf reads
    `\\\\${` as one backslash and an interpolation)."""
    if isinstance(data, str):
        return _ESCAPE.sub(lambda m: m.group(1) * 2 + "\\${", data)
    if isinstance(data, dict):
        return {k: literal(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [literal(v) for v in data]
    return data


def load_saved(path: Path) -> DictConfig:
    """A config this code saved (a run's config.yaml, a checkpoint's ladder_config.yaml,
    launch_config.yaml), read as values. compose() leaves no interpolation in a config, only
    escaped text, so one found in a saved file was written there otherwise; it is refused, not
    resolved (resolving it could read any environment variable into the run's records)."""
    cfg = OmegaConf.load(path)
    live = interpolated_keys(OmegaConf.to_container(cfg, resolve=False))
    if live:
        raise ConfigError(
            f"{path} holds interpolations ({', '.join(live)}): a saved config holds values only, "
            "so it is not read"
        )
    return cfg


def group_options() -> dict[str, list[str]]:
    """The config groups and their options, as found on disk (for --help)."""
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(CONFIG_DIR.iterdir())
        if d.is_dir()
    }
