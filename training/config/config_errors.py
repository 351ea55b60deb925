"""Hydra's and OmegaConf's errors, said in terms of what the user typed.

    from training.config.config_errors import describe
    raise ConfigError(f"invalid config: {describe(exc, overrides)}")

Two cases Hydra words unhelpfully:
  an unknown key      Hydra suggests `+key=value`, which fails too for a typed node. We name the
                      key and suggest the closest keys of the schema (`trainer.max_stpes` ->
                      `trainer.max_steps`). Free-form nodes (launcher.env) do take `+key=value`,
                      and for those Hydra's own advice stands.
  a value to quote    unicode, `$(`, spaces and the like stop Hydra's override grammar with a
                      lexer error that does not say which override or what to do. We find the
                      override and show how to quote it for both the shell and Hydra.
Everything else keeps Hydra's text, with the cause that names the key and the type.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing

from training.config.schema import LadderConfig

GRAMMAR_HINTS = (
    "LexerNoViableAltException",
    "mismatched input",
    "token recognition error",
    "extraneous input",
    "no viable alternative",
)


def schema_keys(cls=LadderConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the typed schema (free-form dicts end the walk)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        keys.append(key)
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            keys += schema_keys(t, key + ".")
    return keys


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


def suggest(key: str) -> str:
    if key in ("budget.gpu_hours", "budget.period"):  # keys of older configs, moved into the ledger
        return (
            f"{key} is no longer a config key: a team's allocation lives in the ledger, set by whoever owns "
            "it with `ladder budget set --team T --period P --gpu-hours H`; a job names only budget.team"
        )
    keys = schema_keys()
    parent = key.rpartition(".")[0]
    siblings = [k for k in keys if k.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(key, siblings, n=2, cutoff=0.8) or difflib.get_close_matches(
        key, keys, n=2, cutoff=0.7
    )
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"{key} is not a config key{hint} (`ladder config` prints every key and its value)"


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
    for err in _chain(
        e
    ):  # data.sources.<x>: a mixture has no source x (a map, so not a schema key)
        full_key = str(getattr(err, "full_key", None) or "")
        if full_key.startswith("data.sources.") and "not in struct" in str(err):
            from training.data.mixture_config import unknown_source

            return unknown_source(full_key, list(overrides or []), recompose) or _hydra_text(e)
        if "DataSourceConfig" in str(err):  # +data.sources.x...: a new source from the command line
            from training.data.mixture_config import unknown_source

            added = [o[1:].split("=")[0] for o in overrides or [] if o.startswith("+data.sources.")]
            return (
                unknown_source(added[0], list(overrides or []), recompose) if added else None
            ) or _hydra_text(e)
    key = unknown_key(e)
    if key:
        return suggest(key)
    text = "\n".join(str(x) for x in _chain(e))
    if any(h in text for h in GRAMMAR_HINTS):
        bad = bad_override(list(overrides or []))
        if bad is not None:
            return quoting_help(bad)
    from omegaconf.errors import InterpolationKeyError

    if any(isinstance(x, InterpolationKeyError) for x in _chain(e)):  # `cost${USD}` meant as text
        return (
            _hydra_text(e)
            + "\n(`${...}` names another key of the config; write \\${ for a literal ${)"
        )
    return _hydra_text(e)


def _hydra_text(e: BaseException) -> str:
    """Hydra wraps the OmegaConf error that names the key and the expected type: show both."""
    parts = [str(e).strip()]
    for cause in _chain(e)[1:4]:
        text = str(cause).strip()
        if text and text != "None" and text not in parts[-1] and "$VALUE" not in text:
            parts.append(text)
    return "\n".join(parts)
