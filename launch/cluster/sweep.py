"""Hydra multirun sweeps: `ladder launch -m optim.lr=1e-5,2e-5,5e-6 trainer.seed=1,2` -> six jobs.

    points = expand(["optim.lr=1e-5,2e-5", "trainer.seed=1,2", "rung=tiny"])
    # [["optim.lr=1e-05", "trainer.seed=1", "rung=tiny"], ...]: one override list per job

Expansion is Hydra's own (its override grammar and BasicSweeper's cartesian product), so sweep
syntax means exactly what it means in any Hydra app: `a=1,2`, `a=range(1,4)`, `a=choice(x,y)`,
`rung=tiny,8b`. Every point of a sweep is recorded under one sweep name in the ledger; each gets
its own run name, `<sweep>-<index>`, unless the sweep itself varies trainer.run_name.

With sweep.seeds=N every point runs N times, as replicates (`replicate`): trainer.seed, seed+1,
..., seed+N-1, run names `<point>-s<seed>`, and one sweep.point, the point's own run name, that
the ledger (jobs.point), the leaderboard and promotion group them by. Each replicate is an
ordinary job: planned, budgeted and resumed on its own, and one task of the sweep's SLURM array.
"""

from __future__ import annotations

import time

from training.common.errors import ConfigError


def expand(overrides: list[str]) -> list[list[str]]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        batches = BasicSweeper.split_arguments(parsed, None)
    except HydraException as e:
        raise ConfigError(f"cannot expand the sweep {' '.join(overrides)}: {e}") from None
    return [list(point) for batch in batches for point in batch]


def override_value(overrides: list[str], key: str) -> str | None:
    """The last value given to `key` (with or without a leading + or ++), or None."""
    value = None
    for ov in overrides:
        name, sep, val = ov.lstrip("+").partition("=")
        if sep and name == key:
            value = val
    return value


def varied_keys(points: list[list[str]]) -> list[str]:
    """The override keys whose value differs between points, in the order given."""
    keys: list[str] = []
    for ov in points[0] if points else []:
        k = ov.lstrip("+").partition("=")[0]
        if k not in keys and len({override_value(p, k) for p in points}) > 1:
            keys.append(k)
    return keys


def name_points(
    points: list[list[str]],
    sweep_name: str | None,
    default_prefix: str,
    now: float | None = None,
    run_name: str | None = None,
) -> tuple[str, list[list[str]]]:
    """Give the sweep a name (sweep.name, or `<prefix>-<UTC time>`) and each point its run name
    (`<run_name or sweep name>-<i>`). sweep_name and run_name are the composed values, already
    checked by training/config/names.py, so the overrides added here need no quoting: a user's quoted
    value never comes back as an override the user did not write."""
    if (
        override_value(points[0], "sweep.name") is not None
        and len({override_value(p, "sweep.name") for p in points}) > 1
    ):
        raise ConfigError("a sweep cannot vary sweep.name: every point is recorded under one sweep")
    name = sweep_name or f"{default_prefix}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}"
    varies_run_name = len({override_value(p, "trainer.run_name") for p in points}) > 1
    named = []
    for i, point in enumerate(points):
        extra = [f"sweep.name={name}"] if override_value(point, "sweep.name") is None else []
        if not varies_run_name:
            extra.append(f"trainer.run_name={run_name or name}-{i}")
        named.append([*point, *extra])
    return name, named


def replicate(points: list[list[str]], seeds: int, base_seed: int) -> list[list[str]]:
    """Each named point (name_points' output) as `seeds` replicates, point-major: replicate k
    gets trainer.seed=base_seed+k, trainer.run_name=<point>-s<seed> and sweep.point=<point>,
    where <point> is the point's run name. base_seed: the composed trainer.seed, which a sweep
    with replicates cannot vary."""
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ConfigError(f"sweep.seeds={seeds} must be a whole number of seeds, at least 1")
    if seeds == 1:
        return points
    if len({override_value(p, "trainer.seed") for p in points}) > 1:
        raise ConfigError(
            "a sweep cannot both vary trainer.seed and set sweep.seeds: sweep.seeds=N already "
            "runs each point with seeds trainer.seed .. trainer.seed+N-1"
        )
    out = []
    for point in points:
        name = override_value(point, "trainer.run_name")
        if name is None:  # a single job's own run name is given by the caller's name_points
            raise ConfigError("replicate: every point needs its run name first (name_points)")
        keep = [
            ov
            for ov in point
            if ov.lstrip("+").partition("=")[0] not in ("trainer.seed", "trainer.run_name")
        ]
        for k in range(seeds):
            seed = base_seed + k
            out.append(
                [
                    *keep,
                    f"trainer.seed={seed}",
                    f"trainer.run_name={name}-s{seed}",
                    f"sweep.point={name}",
                ]
            )
    return out
