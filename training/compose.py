"""Compose the Hydra config tree under configs/ with command-line overrides.

    from training.compose import compose
    cfg = compose(["rung=tiny", "trainer.max_steps=20"])

The root schema (training/schema.py) is registered as `ladder_schema`, so every group
file is merged into a typed node: unknown keys and wrong types fail here, at compose time.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from training.config_errors import describe
from training.errors import ConfigError
from training.names import check_names
from training.schema import LadderConfig
from training.secret_guard import source_problems, value_problems

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"

ConfigStore.instance().store(name="ladder_schema", node=LadderConfig)
if not OmegaConf.has_resolver("ladder_root"):
    # Lets configs name files shipped in the repo wherever the command runs from.
    OmegaConf.register_new_resolver("ladder_root", lambda: str(REPO_ROOT))


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Return the composed, resolved and read-only config, or raise ConfigError. Secrets
    (training/secret_guard.py) and names that would not be plain path components
    (training/names.py) are refused here, before any command writes a file."""
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides or []))
        problems = source_problems(OmegaConf.to_container(cfg, resolve=False))
        if problems:  # before resolving: that is what would copy a secret's value into the config
            raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))
        OmegaConf.resolve(cfg)
        problems = value_problems(OmegaConf.to_container(cfg))
        # `+key=value` overrides bypass the schema; merging into a fresh schema catches them.
        cfg = OmegaConf.merge(OmegaConf.structured(LadderConfig), OmegaConf.to_container(cfg))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"invalid config: {describe(e, list(overrides or []), compose)}") from None
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))
    check_names(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def group_options() -> dict[str, list[str]]:
    """The config groups and their options, as found on disk (for --help)."""
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(CONFIG_DIR.iterdir()) if d.is_dir()
    }
