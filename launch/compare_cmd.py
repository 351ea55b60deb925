"""`ladder compare` and `ladder leaderboard`: read the registry, evaluate what is missing, print.

    ladder compare runs/a/checkpoints/step_000000 runs/a/checkpoints/step_000150 [--html r.html]
    ladder compare runs/a runs/b sweep:lr-sweep --baseline runs/a eval=cpu
    ladder leaderboard --sweep lr-sweep --rung tiny [eval=cpu] [trainer.run_root=/data/runs]

Both take Hydra overrides after their options: `eval=SUITE` and `eval.*` pick the tasks and
settings, `registry.url` or `trainer.run_root` the registry. Without them, compare uses the
registry beside the first checkpoint or run it names, and leaderboard <trainer.run_root>/registry.db.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from evals.registry import Registry, run_dir_of
from training.compose import compose


def split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """Targets are paths or sweep:NAME; anything else with '=' is a Hydra override."""
    targets, overrides = [], []
    for item in items:
        (overrides if "=" in item and not Path(item).exists() else targets).append(item)
    return targets, overrides


def registry_for_targets(cfg, overrides: list[str], targets: list[str]) -> Registry:
    explicit = any(o.lstrip("+").startswith(("registry.url=", "trainer.run_root=")) for o in overrides)
    if not explicit:
        for t in targets:
            p = Path(t)
            run_dir = p.resolve() if (p / "checkpoints").is_dir() else run_dir_of(p) if p.is_dir() else None
            if run_dir is not None:
                return Registry(run_dir.parent / "registry.db", cfg.registry.busy_timeout_s)
    return Registry.from_config(cfg)


def cmd_compare(args) -> int:
    from evals.compare import compare, print_comparison
    targets, overrides = split_overrides(args.items)
    cfg = compose(overrides)
    registry = registry_for_targets(cfg, overrides, targets)
    console = Console()
    c = compare(targets, cfg.eval, registry, baseline=args.baseline)
    print_comparison(c, console)
    if args.json:
        Path(args.json).write_text(json.dumps(c.to_json(), indent=1) + "\n")
        console.print(f"json: {args.json}")
    if args.html:
        from evals.report import write_report
        console.print(f"report: {write_report(c, cfg.eval, registry, args.html)}")
    return 0


def cmd_leaderboard(args) -> int:
    from evals.leaderboard import leaderboard, print_leaderboard
    cfg = compose(args.overrides)
    registry = Registry.from_config(cfg)
    filters = {"sweep": args.sweep, "rung": args.rung, "recipe": args.recipe, "data": args.data, "lr": args.lr,
               "run_name": args.run}
    tasks, rows = leaderboard(registry, cfg.eval, task=args.task, top=args.top, **filters)
    print_leaderboard(tasks, rows, cfg.eval.name, args.task)
    if args.json:
        Path(args.json).write_text(json.dumps({"tasks": tasks, "rows": rows}, indent=1) + "\n")
    return 0
