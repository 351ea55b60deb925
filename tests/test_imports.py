"""The import graph (issue #13 item 13, #25 item 2): launch depends on training and evals, evals on
training, never the reverse (the trainer gets its eval callback from launch/train.py), and the
trainer's and the DPO recipe's modules import in one direction.

    .venv/bin/python -m pytest -q tests/test_imports.py
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere (top level or inside a function)."""
    mods = {
        ".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): f
        for pkg in ("training", "evals", "launch")
        for f in (REPO / pkg).rglob("*.py")
        if "assets" not in f.parts
    }
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def test_imports_point_one_way_training_then_evals_then_launch():
    """training imports neither evals nor launch, and evals does not import launch, at the top of a
    module or inside a function: a lazy import is an import all the same."""
    below = {"training": ("evals", "launch"), "evals": ("launch",), "launch": ()}
    graph = import_graph()
    wrong = {
        m: sorted(d for d in deps if d.split(".")[0] in below[m.split(".")[0]])
        for m, deps in graph.items()
    }
    assert {m: d for m, d in wrong.items() if d} == {}
    # the helper sees lazy imports: launch.train imports evals.on_save inside train()
    assert "evals.on_save" in graph["launch.train"]


def cycles_through(graph: dict[str, set[str]], start: str) -> list[list[str]]:
    found, stack = [], [(start, [start])]
    while stack:
        node, path = stack.pop()
        for dep in graph[node]:
            if dep == start:
                found.append(path + [start])
            elif dep not in path:
                stack.append((dep, path + [dep]))
    return found


def test_training_and_evals_never_import_launch():
    graph = import_graph()
    wrong = {
        m: sorted(d for d in deps if d.startswith("launch."))
        for m, deps in graph.items()
        if not m.startswith("launch.")
    }
    assert {m: d for m, d in wrong.items() if d} == {}


def test_the_trainer_and_the_dpo_modules_are_in_no_import_circle():
    graph = import_graph()
    for module in (
        "training.run.trainer",
        "training.run.entry",
        "training.run.callbacks",
        "launch.train",
        "evals.on_save",
        "training.recipes.reference",
        "training.data.preference",
        "launch.commands.eval_cmd",
        "launch.commands.launch_cmd",
        "training.config.compose",
        "training.rl.rollouts",
        "training.rl.generator",
        "evals.tasks.generate",
    ):
        assert cycles_through(graph, module) == [], module
    assert not [
        c
        for c in cycles_through(graph, "training.recipes.registry")
        if "training.recipes.reference" in c
    ]


def test_config_plan_and_config_errors_load_no_torch():
    """#28 item 5: `ladder config`, `ladder plan rung=8b` and a config error answer in about a
    second because none of them imports torch, transformers, datasets or deepspeed (the time is
    measured in bench/cli_latency.py, not here). One fresh interpreter runs the three verbs."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from launch.cli import main\n"
        "assert main(['config']) == 0\n"
        "assert main(['plan', 'rung=8b']) == 0\n"
        "assert main(['train', 'optim.lr=abc']) == 2\n"
        "assert main(['leaderboard', 'optim.lr=abc']) == 2\n"
        "heavy = {'torch', 'transformers', 'datasets', 'deepspeed'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
