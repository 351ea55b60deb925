"""Keep secrets out of configs: by name, by interpolation and by value.

    from training.config.secret_guard import argv_problems, source_problems, value_problems
    source_problems(OmegaConf.to_container(cfg, resolve=False))  # before interpolation: names, resolvers
    value_problems(OmegaConf.to_container(cfg, resolve=True))     # after it: values of secret variables
    argv_problems(["trainer.max_steps=2", ...])                   # the command line, used or not
    # each returns ["launcher.env.X: ...", ...]; compose() checks all three

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
Interpolation is allowed only in the forms configs/ and the schema use, checked on the parse
tree (OmegaConf's own grammar), so no spelling gets past a pattern: `${key.path}` (another value
of the config), `${ladder_root:}` and `${oc.env:NAME}` / `${oc.env:NAME,default}` of a variable
that is not secret-looking, with literal arguments. Any other resolver (oc.decode, oc.create,
oc.select, Hydra's `hydra:` and `now:`, anything registered later) and any interpolation inside
another one (`${oc.env:${oc.decode:X}}`, `${a.${b}}`) is refused, naming the key: their result is
computed from text that no check here has seen. `\\${` is a literal `${`, never an interpolation.
The command line itself is recorded too (run_meta.json, the ledger, launch.json, the SLURM
script, W&B's metadata), so argv_problems checks every argument by value, whether or not the
config uses it.
Messages name the key and the variable, never the value. Values shorter than MIN_SECRET_LEN
are not compared: a variable such as `USE_TOKEN=1` is a switch, not a secret, and comparing
it would refuse every config holding a 1.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.I)
MIN_SECRET_LEN = 8
# `${oc.env:NAME}`, `${oc.env:NAME,default}`, `${env:NAME}` (Hydra's older resolver), with spaces.
# scheme://user:password@host..., or ?password=... in a URL's query
_URL_PASSWORD = re.compile(
    r"^[A-Za-z][A-Za-z0-9+.-]*://([^/@?#]*:[^/@?#]*@|[^?#]*\?(.*&)?password=)", re.I
)
_ENV_INTERPOLATION = re.compile(r"\$\{\s*(?:oc\.)?env\s*:\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)")
# What each resolver a config may use is for. configs/ uses ladder_root (files shipped in the
# repo); oc.env reads a non-secret variable (a cluster's scratch path, say). Nothing else.
ALLOWED_RESOLVERS = ("ladder_root", "oc.env")
_INTERPOLATION_HELP = (
    "only ${key.path}, ${ladder_root:} and ${oc.env:NAME} of a variable that is not secret-looking, "
    "with literal arguments, are accepted; write \\${ for a literal ${"
)


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
            problems.append(
                f"launcher.env.{name}: secrets never go in configs or generated scripts; export it "
                "in the shell you launch from (sbatch passes it to the job)"
            )
    for key, value in _leaves(unresolved):
        if isinstance(value, str):
            for var in _ENV_INTERPOLATION.findall(value):
                if is_secret_name(var):
                    problems.append(
                        f"{key} interpolates the secret-looking variable {var} (oc.env): secrets "
                        "never go in configs, which are copied into run directories, checkpoints, "
                        "W&B and job scripts; jobs read it from their environment"
                    )
            if "${" in value:
                problems += interpolation_problems(key, value)
    return problems


def _walk(ctx) -> Iterator[Any]:
    yield ctx
    for child in getattr(ctx, "children", None) or []:
        yield from _walk(child)


def interpolation_problems(key: str, value: str) -> list[str]:
    """Interpolations of one config value outside the allow-list (module docstring)."""
    from omegaconf.errors import GrammarParseError
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser as P
    from omegaconf.grammar_parser import parse

    try:
        tree = parse(value)
    except GrammarParseError:
        return [
            f"{key} holds a `${{` that does not start a valid interpolation: {_INTERPOLATION_HELP}"
        ]
    problems = []
    for ctx in _walk(tree):
        if isinstance(ctx, P.InterpolationResolverContext):
            name = ctx.resolverName().getText()
            if name not in ALLOWED_RESOLVERS:
                problems.append(f"{key} uses the resolver {name}: {_INTERPOLATION_HELP}")
                continue
            args = ctx.sequence()
            if args is not None and any(isinstance(c, P.InterpolationContext) for c in _walk(args)):
                problems.append(
                    f"{key} nests an interpolation in the arguments of {name}: {_INTERPOLATION_HELP}"
                )
            elif name == "oc.env" and args is not None:  # the name as written, quoted or not
                var = args.getText().split(",")[0].strip().strip("'\"")
                if is_secret_name(var) and var not in _ENV_INTERPOLATION.findall(
                    value
                ):  # not said twice
                    problems.append(
                        f"{key} interpolates the secret-looking variable {var} (oc.env): secrets "
                        "never go in configs; jobs read it from their environment"
                    )
        elif isinstance(ctx, P.InterpolationNodeContext):
            if any(isinstance(c, P.InterpolationContext) for c in list(_walk(ctx))[1:]):
                problems.append(
                    f"{key} nests an interpolation in a key (${{a.${{b}}}}): {_INTERPOLATION_HELP}"
                )
    return problems[:1]  # the outermost: one line per key


def interpolated_keys(container: dict) -> list[str]:
    """The keys whose value holds a live interpolation (an escaped `\\${` is text, not one)."""
    from omegaconf.errors import GrammarParseError
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser as P
    from omegaconf.grammar_parser import parse

    found = []
    for key, value in _leaves(container):
        if isinstance(value, str) and "${" in value:
            try:
                live = any(isinstance(c, P.InterpolationContext) for c in _walk(parse(value)))
            except GrammarParseError:
                live = True  # OmegaConf would fail on it when read: not a value either
            if live:
                found.append(key)
    return found


def argv_problems(
    argv: list[str], environ: dict[str, str] | None = None, what: str = "argument"
) -> list[str]:
    """Command-line arguments that hold a secret's value or a password in a URL. Every record of a
    run keeps its argv (run_meta.json, W&B, the ledger's overrides, launch.json, the SLURM script),
    so an argument is checked whether or not the config reads it. Arguments are named by position
    and key (`argument 3 (hydra.job.name=...)`), never by value; `what` names them (override)."""
    from training.common.store_url import has_password, mask_url

    problems = []
    secrets = secret_values(environ)
    for i, arg in enumerate(argv, 1):
        name, sep, value = str(arg).partition("=")
        shown = sep and not any(secret in name for secret in secrets.values())
        where = f"{what} {i} ({name}=...)" if shown else f"{what} {i}"
        for var, secret in secrets.items():
            if secret in arg:
                problems.append(
                    f"{where} holds the value of the environment variable {var}, a secret: the "
                    "command line is recorded in run_meta.json, W&B, the ledger and job scripts; "
                    "jobs read it from their environment"
                )
                break
        else:
            text = value.strip().strip("'\"")  # a URL as Hydra reads it, quoted or not
            if has_password(arg) or has_password(text):
                masked = mask_url(text)
                shown = f" ({name}={masked!r})" if shown and masked != text else ""
                problems.append(
                    f"{what} {i}{shown} holds a password: the command line is recorded in run_meta.json, "
                    "W&B, the ledger and job scripts; give it the way libpq reads it, in ~/.pgpass "
                    "(PGPASSFILE names another file) or PGPASSWORD"
                )
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
            from training.common.store_url import mask_url

            seen.add(key)
            problems.append(
                f"{key}={mask_url(value.strip())!r} holds a password: configs are copied into run "
                "directories, logs, W&B and the ledger, so remove it from the URL and give it the way "
                "libpq reads it, in ~/.pgpass (PGPASSFILE names another file) or PGPASSWORD"
            )
            continue
        for var, secret in secrets.items():
            if secret in value:
                seen.add(key)
                problems.append(
                    f"{key} holds the value of the environment variable {var}, a secret: remove it "
                    "from the config (jobs read it from their environment)"
                )
                break
    return problems
