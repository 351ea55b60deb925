"""The docs site builds strictly (no broken link, no page left out of the nav) and covers every
config group option and every CLI verb, so it cannot silently fall behind the code."""

from __future__ import annotations

import argparse
import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pages = [p for p in out.rglob("*.html") if p.name != "404.html"]
    return html.unescape(" ".join(re.sub(r"<[^>]+>", " ", p.read_text()) for p in pages))


def test_every_config_group_option_is_in_the_docs(site):
    from training.config.reference import group_options

    missing = [
        f"{group}={option}"
        for group, options in group_options().items()
        for option in options
        if option not in site
    ]
    assert group_options()["recipe"] == ["dpo", "grpo", "sft"]  # the tree it reads is the real one
    assert not missing, missing


def test_every_config_key_is_in_the_reference(site):
    import dataclasses

    from training.config.reference import nodes

    keys = [f"{node}.{f.name}" for node, cls in nodes().items() for f in dataclasses.fields(cls)]
    assert "recipe.max_policy_lag" in keys and "trainer.max_steps" in keys
    assert not [k for k in keys if k not in site]


def test_every_cli_verb_is_in_the_docs(site):
    from launch.cli import build_parser

    [subparsers] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [verb for verb in subparsers.choices if f"ladder {verb}" not in site]
    assert len(subparsers.choices) >= 15
    assert not missing, missing
