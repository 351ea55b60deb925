"""Keep secrets out of configs: by name, by interpolation and by value.

    from training.secret_guard import source_problems, value_problems
    source_problems(OmegaConf.to_container(cfg, resolve=False))  # before interpolation: names, oc.env
    value_problems(OmegaConf.to_container(cfg))                   # after it: values of secret variables
    # each returns ["launcher.env.X: ...", ...]; compose() checks both

A config is copied into the run directory, checkpoints, the ledger, W&B and generated sbatch
scripts, so a secret that enters it lands in all of them. Secrets reach jobs through the
environment instead (sbatch passes the submitting shell's environment on). Three checks:
  by name           a config key that looks like a secret (launcher.env.WANDB_API_KEY=...)
  by interpolation  `${oc.env:WANDB_API_KEY}` (or `${env:...}`) of a secret-looking variable,
                    which would copy the value into every one of those files
  by value          any config value that equals or contains the value of one of this
                    environment's secret-looking variables (names with KEY, TOKEN, SECRET,
                    PASSWORD, ...), whatever key it was written under, and any URL with a
                    password in it (ledger.url=postgresql://user:pw@host/db): libpq reads the
                    password from ~/.pgpass or PGPASSWORD instead
Messages name the key and the variable, never the value. Values shorter than MIN_SECRET_LEN
are not compared: a variable such as `USE_TOKEN=1` is a switch, not a secret, and comparing
it would refuse every config holding a 1.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator

SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.I)
MIN_SECRET_LEN = 8
# `${oc.env:NAME}`, `${oc.env:NAME,default}`, `${env:NAME}` (Hydra's older resolver), with spaces.
# scheme://user:password@host..., or ?password=... in a URL's query
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/@?#]*:[^/@?#]*@|[^?#]*\?(.*&)?password=)", re.I)
_ENV_INTERPOLATION = re.compile(r"\$\{\s*(?:oc\.)?env\s*:\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)")


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def secret_values(environ: dict[str, str] | None = None) -> dict[str, str]:
    """{variable name: value} of this environment's secret-looking variables worth comparing."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if is_secret_name(k) and len(v.strip()) >= MIN_SECRET_LEN}


def _leaves(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf, dict keys included as values of their own."""
    if isinstance(node, dict):
        for k, v in node.items():
            child = f"{key}.{k}" if key else str(k)
            yield child, k
            yield from _leaves(v, child)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{key}[{i}]")
    else:
        yield key, node


def source_problems(unresolved: dict) -> list[str]:
    """Secrets named in the config before interpolation (checked first: resolving `${oc.env:X}`
    is what would copy the value)."""
    problems = []
    env_names = (unresolved.get("launcher") or {}).get("env") or {}
    for name in env_names if isinstance(env_names, dict) else ():
        if is_secret_name(str(name)):
            problems.append(f"launcher.env.{name}: secrets never go in configs or generated scripts; export it "
                            "in the shell you launch from (sbatch passes it to the job)")
    for key, value in _leaves(unresolved):
        if isinstance(value, str):
            for var in _ENV_INTERPOLATION.findall(value):
                if is_secret_name(var):
                    problems.append(f"{key} interpolates the secret-looking variable {var} (oc.env): secrets "
                                    "never go in configs, which are copied into run directories, checkpoints, "
                                    "W&B and job scripts; jobs read it from their environment")
    return problems


def value_problems(resolved: dict, environ: dict[str, str] | None = None) -> list[str]:
    """Config values that equal or contain the value of a secret-looking environment variable."""
    problems = []
    secrets = secret_values(environ)
    seen = set()
    for key, value in _leaves(resolved):
        if not isinstance(value, str) or key in seen:
            continue
        if _URL_PASSWORD.match(value.strip()):
            from training.store_url import mask_url
            seen.add(key)
            problems.append(f"{key}={mask_url(value.strip())!r} holds a password: configs are copied into run "
                            "directories, logs, W&B and the ledger, so remove it from the URL and give it the way "
                            "libpq reads it, in ~/.pgpass (PGPASSFILE names another file) or PGPASSWORD")
            continue
        for var, secret in secrets.items():
            if secret in value:
                seen.add(key)
                problems.append(f"{key} holds the value of the environment variable {var}, a secret: remove it "
                                "from the config (jobs read it from their environment)")
                break
    return problems
