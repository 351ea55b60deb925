"""Files that launch/ and evals/ write under a run, cache or checkpoint folder never go through a
link planted at their name or at a predictable temporary name (#21 item 6; the trainer's own
run files are covered by tests/test_hardening_pickles.py). Each writer is called for real on a
folder where a dangling link points outside: the link is replaced, the outside stays absent."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import FAST
from omegaconf import OmegaConf


def plant(folder: Path, name: str, outside: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / name
    os.symlink(outside, link)
    return link


def assert_replaced(link: Path, outside: Path) -> None:
    assert not outside.exists(), f"{outside} was written through the link at {link}"
    assert link.is_file() and not link.is_symlink(), link


def test_the_eval_cache_replaces_a_planted_link(tmp_path):
    from evals.store.cache import EvalCache

    cache = EvalCache(tmp_path / "cache")
    key = "ab" + "0" * 30
    link = plant(cache.path(key).parent, cache.path(key).name, tmp_path / "outside.json")
    # the temporary name a writer would predict (<name>.tmp<pid>) is planted too
    tmp = plant(
        cache.path(key).parent,
        cache.path(key).with_suffix(f".tmp{os.getpid()}").name,
        tmp_path / "outside-tmp.json",
    )
    cache.put(key, {"score": 1.0})
    assert_replaced(link, tmp_path / "outside.json")
    assert not (tmp_path / "outside-tmp.json").exists() and tmp.is_symlink()
    assert cache.get(key) == {"score": 1.0}


def test_the_launch_record_and_the_data_lengths_replace_planted_links(tmp_path):
    from launch.commands.launch_cmd import Job, write_launch_record
    from launch.planning.doc_lengths import lengths_path, save_lengths
    from training.config.compose import compose

    cfg = compose([*FAST, f"trainer.run_root={tmp_path / 'runs'}", "trainer.run_name=r"])
    run_dir = tmp_path / "runs" / "r"
    links = {
        name: plant(run_dir, name, tmp_path / f"outside-{name}")
        for name in ("launch_config.yaml", "launch.json")
    }
    job = Job(overrides=[], cfg=cfg, plan=None, run_name="r", run_dir=run_dir, job_id=1)
    write_launch_record(job, "123", tmp_path / "s.sbatch", tmp_path / "s.out", None)
    for name, link in links.items():
        assert_replaced(link, tmp_path / f"outside-{name}")
    assert json.loads((run_dir / "launch.json").read_text())["external_id"] == "123"
    assert OmegaConf.load(run_dir / "launch_config.yaml").trainer.run_name == "r"

    path = lengths_path(cfg)
    link = plant(path.parent, path.name, tmp_path / "outside-lengths.json")
    save_lengths(cfg, {"docs": 1})
    assert_replaced(link, tmp_path / "outside-lengths.json")
