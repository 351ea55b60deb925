"""Security issue #21, items 1 and 6: nothing Ladder loads runs code planted in it, and no file a run
writes follows a symlink planted in its folder.

Item 1: an object whose unpickling creates a marker file (what a planted checkpoint would do with a
shell command) is put into each kind of state file Ladder reads back: the trainer state (with
COMPLETE's sizes and hashes updated to match, as an attacker would), a DeepSpeed state from another
run, GRPO's saved rollouts, a reference log-prob cache entry and a token cache entry. Resume reaches
them by path, by file:// URL and with resume=auto; the marker must never appear and the error (or,
for a cache, the warning before it recomputes) must name the file.

Item 6: dangling links from a run's files (and the temporary names earlier writers used) to a folder
outside; after a real run nothing exists there. Checkpoints that are links, or hold links, are
refused when loading.

One tiny run (3 steps, a checkpoint each) is trained once per module and copied for each case; the
DeepSpeed cases (slow) train one 1-process ZeRO-2 run of 2 steps.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pathlib
import pickle
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import FAST, ladder_cli, losses, train_in_process
from distributed_helpers import run, run_overrides, torchrun_cmd

from training.common.errors import CheckpointError
from training.data import token_cache
from training.recipes import ref_cache
from training.run.checkpoint import COMPLETE, KEY_FILE, STATE_FILE, file_sha256, origin_problem
from training.run.metrics import MetricsFile, read_metrics
from training.run.remote import RemoteCheckpoints

STEPS = 3
BASE = [*FAST, f"trainer.max_steps={STEPS}", "trainer.save_every=1"]


class Planted:
    """Unpickling this touches `marker`: a stand-in for any command a planted pickle could run."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "PWNED"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("pickles")
    result = train_in_process([*BASE, f"trainer.run_root={root}", "trainer.run_name=source"])
    assert [p.name for p in result.checkpoints] == ["step_000001", "step_000002", "step_000003"]
    return result.run_dir


def reseal(ckpt):
    """Update COMPLETE's sizes and hashes to the files now there, as whoever planted them would. The
    HMAC stays as it was: without the run's key nobody can compute a new one."""
    manifest = json.loads((ckpt / COMPLETE).read_text())
    files = {}
    for p in sorted(ckpt.rglob("*")):
        if p.is_file() and p.name != COMPLETE:
            size, digest = file_sha256(p)
            files[p.relative_to(ckpt).as_posix()] = {"size": size, "sha256": digest}
    manifest["files"] = files
    (ckpt / COMPLETE).write_text(json.dumps(manifest, indent=1) + "\n")


def plant_state(ckpt, marker, **changes):
    """The checkpoint's real trainer state plus the planted object (or other changes), resealed."""
    state = torch.load(ckpt / STATE_FILE, weights_only=False)  # this module's own run (any format)
    state.update(changes or {"planted": Planted(marker)})
    torch.save(state, ckpt / STATE_FILE)
    reseal(ckpt)


def test_the_planted_object_runs_when_unpickled(marker):
    """The payload is live: every 'marker absent' below means the loader refused it."""
    pickle.loads(pickle.dumps(Planted(marker)))
    assert marker.exists()


# ---- item 1: the trainer state -----------------------------------------------------------------
def test_a_saved_trainer_state_holds_only_plain_values(base):
    state = torch.load(
        base / "checkpoints" / "step_000002" / STATE_FILE, weights_only=True
    )  # no extra globals
    assert state["step"] == 2 and isinstance(state["rng"]["numpy"]["key"], list)


def test_a_planted_trainer_state_named_by_path_is_refused(base, tmp_path, marker):
    shared = tmp_path / "shared" / "step_000002"  # a checkpoint a teammate shared
    shutil.copytree(base / "checkpoints" / "step_000002", shared)
    plant_state(shared, marker)
    with pytest.raises(
        CheckpointError,
        match=rf"{re.escape(str(shared / STATE_FILE))} holds objects other than "
        "tensors.*will not be unpickled",
    ):
        train_in_process(
            [
                *BASE,
                f"trainer.run_root={tmp_path}",
                "trainer.run_name=victim",
                f"trainer.resume={shared}",
            ]
        )
    assert not marker.exists()
    assert not (tmp_path / "victim").exists()  # refused before anything was written


def test_a_planted_trainer_state_at_a_file_url_is_refused(base, tmp_path, marker):
    ckpt = tmp_path / "planted" / "step_000002"
    shutil.copytree(base / "checkpoints" / "step_000002", ckpt)
    plant_state(ckpt, marker)
    url = f"{(tmp_path / 'bucket').as_uri()}/team/checkpoints"
    RemoteCheckpoints(url).upload(ckpt, 2)
    with pytest.raises(
        CheckpointError, match=rf"step_000002/{STATE_FILE} holds objects other than tensors"
    ):
        train_in_process(
            [
                *BASE,
                f"trainer.run_root={tmp_path}",
                "trainer.run_name=victim",
                f"trainer.resume={url}/step_000002",
            ]
        )
    assert not marker.exists()


def test_a_trainer_state_planted_in_the_run_folder_stops_ladder_train_cleanly(
    base, tmp_path, marker
):
    """resume=auto on a checkpoint planted in runs/<name>/checkpoints, through the command line."""
    run_dir = tmp_path / "source"
    shutil.copytree(base, run_dir)
    newest = run_dir / "checkpoints" / "step_000003"
    plant_state(newest, marker)
    proc = ladder_cli(
        "train",
        *BASE,
        f"trainer.run_root={tmp_path}",
        "trainer.run_name=source",
        "trainer.resume=auto",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"{newest / STATE_FILE} holds objects other than tensors" in proc.stderr, proc.stderr[
        -3000:
    ]
    assert not marker.exists()


def test_an_old_format_trainer_state_is_refused_naming_the_file(base, tmp_path, marker):
    """Older Ladders saved numpy's RNG state as an ndarray: it is not unpickled, and the error says why."""
    ckpt = tmp_path / "old" / "step_000002"
    shutil.copytree(base / "checkpoints" / "step_000002", ckpt)
    state = torch.load(ckpt / STATE_FILE, weights_only=False)
    plant_state(ckpt, marker, rng={**state["rng"], "numpy": np.random.get_state()})
    with pytest.raises(
        CheckpointError,
        match=rf"{re.escape(str(ckpt / STATE_FILE))} holds objects other than "
        "tensors.*numpy.*will not be unpickled.*older Ladder",
    ):
        train_in_process(
            [
                *BASE,
                f"trainer.run_root={tmp_path}",
                "trainer.run_name=old",
                f"trainer.resume={ckpt}",
            ]
        )


def test_each_checkpoint_carries_an_hmac_under_its_run_key(base, tmp_path):
    ckpt = base / "checkpoints" / "step_000002"
    key = base / KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    assert not [
        p for p in (base / "checkpoints").rglob("*") if p.name == KEY_FILE
    ]  # never in a checkpoint
    assert origin_problem(ckpt, base) is None
    assert "holds no key" in origin_problem(ckpt, tmp_path / "other")
    copy = tmp_path / "copy" / "step_000002"
    shutil.copytree(ckpt, copy)
    plant_state(
        copy, None, tokens_seen=-1
    )  # a file changed and resealed: the HMAC no longer matches
    assert "was not signed with the key of run source" in origin_problem(copy, base)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(key, other / KEY_FILE)
    os.chmod(other / KEY_FILE, 0o644)  # a key others can read is no proof
    assert "holds no key" in origin_problem(ckpt, other)


# ---- item 1: GRPO's saved rollouts, the reference and token caches ---------------------------------
def test_planted_rollouts_are_refused_naming_the_file(tmp_path, marker):
    data = tmp_path / "words.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"w{i}",
                    "messages": [{"role": "user", "content": f"Name {t} in one word."}],
                    "ground_truth": json.dumps({"type": "max_words", "n": 1}),
                    "dataset": "ifeval",
                }
            )
            + "\n"
            for i, t in enumerate(["cats", "rain", "boats", "tea"])
        )
    )
    over = [
        *FAST,
        "recipe=grpo",
        "model.from_scratch=true",
        f"data.train_files=[{data}]",
        f"trainer.run_root={tmp_path}",
        "trainer.run_name=rl",
        "trainer.max_steps=2",
        "trainer.save_every=1",
        "recipe.prompts_per_step=4",
        "recipe.num_generations=4",
        "recipe.ppo_epochs=2",
        "generator.max_new_tokens=4",
    ]
    run_dir = train_in_process(over).run_dir
    saved = run_dir / "rollouts" / "batch_000000" / "rank_00000_of_00001.pt"
    chunk = torch.load(saved, weights_only=True)  # what a run writes loads with no extra globals
    torch.save({**chunk, "planted": Planted(marker)}, saved)
    shutil.rmtree(
        run_dir / "checkpoints" / "step_000002"
    )  # resume at step 1, inside rollout batch 0
    with pytest.raises(
        CheckpointError, match=rf"{re.escape(str(saved))} holds objects other than tensors"
    ):
        train_in_process([*over, "trainer.resume=auto"])
    assert not marker.exists()


def test_a_planted_reference_cache_entry_is_recomputed_not_unpickled(tmp_path, marker, caplog):
    ref_cache.store(tmp_path, "k", torch.zeros(5, 2), {})
    data, meta = ref_cache.paths(tmp_path, "k")
    torch.save({"logps": Planted(marker)}, data)
    meta.write_text(json.dumps({"sha256": hashlib.sha256(data.read_bytes()).hexdigest()}))
    with caplog.at_level(logging.WARNING, logger="ladder.ref_cache"):
        assert ref_cache.load(tmp_path, "k", 5) is None
    assert not marker.exists()
    assert f"{data} is corrupt or stale" in caplog.text


def test_a_planted_token_cache_entry_is_recomputed_not_unpickled(tmp_path, marker, caplog):
    token_cache.store_entry(tmp_path, "k", [([1, 2, 3], [-100, 2, 3])], "messages", {})
    data, meta = token_cache.paths(tmp_path, "k")
    buf = io.BytesIO()
    np.savez(
        buf,
        ids=np.array([Planted(marker)], dtype=object),
        labels=np.zeros(1, np.int32),
        offsets=np.array([0, 1]),
    )
    data.write_bytes(buf.getvalue())
    sidecar = json.loads(meta.read_text())
    meta.write_text(json.dumps({**sidecar, "sha256": hashlib.sha256(buf.getvalue()).hexdigest()}))
    with caplog.at_level(logging.WARNING, logger="ladder.token_cache"):
        assert token_cache.load_entry(tmp_path, "k", "messages") is None
    assert not marker.exists()
    assert f"{data} is corrupt or stale" in caplog.text


# ---- item 1: DeepSpeed, whose own loader unpickles ------------------------------------------------
@pytest.fixture(scope="module")
def ds_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    proc = run(
        torchrun_cmd(1, run_overrides(root, "dsrc", 2, engine="deepspeed_zero2", save_every=1))
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "dsrc"


def plant_deepspeed(ckpt, marker):
    torch.save(
        {"planted": Planted(marker)}, ckpt / "deepspeed" / "state" / "mp_rank_00_model_states.pt"
    )
    reseal(ckpt)


def ds_resume(root, name: str, resume: str, *extra: str):
    return run(
        torchrun_cmd(
            1,
            [
                *run_overrides(root, name, 2, engine="deepspeed_zero2", save_every=1),
                f"trainer.resume={resume}",
                *extra,
            ],
        )
    )


@pytest.mark.slow
def test_a_deepspeed_state_from_another_run_is_refused(ds_run, tmp_path, marker):
    ckpt = tmp_path / "shared" / "step_000001"
    shutil.copytree(ds_run / "checkpoints" / "step_000001", ckpt)
    plant_deepspeed(ckpt, marker)
    proc = ds_resume(tmp_path, "victim", str(ckpt))
    assert (
        proc.returncode != 0
    )  # the rank exits with 2 and one line; torchrun reports it with a traceback of its own
    assert f"ladder train: error: {ckpt / 'deepspeed'} is not from this run" in proc.stderr, (
        proc.stderr[-3000:]
    )
    assert "trainer.trust_checkpoint=true" in proc.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_a_deepspeed_state_planted_in_the_run_folder_is_refused(ds_run, tmp_path, marker):
    run_dir = tmp_path / "dsrc"
    shutil.copytree(ds_run, run_dir)  # the run's own folder, key included
    shutil.rmtree(run_dir / "checkpoints" / "step_000002")
    plant_deepspeed(
        run_dir / "checkpoints" / "step_000001", marker
    )  # its hashes match; its HMAC cannot
    proc = ds_resume(tmp_path, "dsrc", "auto")
    assert proc.returncode != 0
    assert "was not signed with the key of run dsrc" in proc.stderr, proc.stderr[-3000:]
    assert not marker.exists()


@pytest.mark.slow
def test_trust_checkpoint_resumes_another_runs_deepspeed_state(ds_run, tmp_path):
    proc = ds_resume(
        tmp_path,
        "trusting",
        str(ds_run / "checkpoints" / "step_000001"),
        "trainer.trust_checkpoint=true",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trainer.trust_checkpoint=true: loading" in proc.stderr
    assert losses(tmp_path / "trusting") == pytest.approx(losses(ds_run)[1:], abs=1e-6, rel=0)


# ---- item 6: symlinks --------------------------------------------------------------------------
def plant_links(folder, outside, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).symlink_to(outside / name)


def test_a_run_follows_no_symlink_planted_in_its_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept.txt").write_text("mine\n")
    run_dir = tmp_path / "runs" / "r"
    pid = (
        os.getpid()
    )  # the run is in this process: the temporary names earlier writers used are predictable
    plant_links(
        run_dir,
        outside,
        [
            "wandb_id",
            "metrics.jsonl",
            "heartbeat.json",
            "config.yaml",
            "run_meta.json",
            KEY_FILE,
            f".config.yaml.tmp{pid}",
            f".run_meta.json.tmp{pid}",
            f"heartbeat.tmp{pid}",
            "metrics.tmp",
        ],
    )
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / ".tmp-step_000001").symlink_to(
        outside / "staging", target_is_directory=True
    )
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "metrics.jsonl").symlink_to(outside / "kept.txt")  # one link to a file that exists
    train_in_process(
        [
            *FAST,
            f"trainer.run_root={tmp_path / 'runs'}",
            "trainer.run_name=r",
            "trainer.max_steps=1",
            "trainer.save_every=1",
            "tracker.mode=offline",
        ]
    )
    assert sorted(p.name for p in outside.iterdir()) == ["kept.txt"]
    assert (outside / "kept.txt").read_text() == "mine\n"
    for name in [
        "wandb_id",
        "metrics.jsonl",
        "heartbeat.json",
        "config.yaml",
        "run_meta.json",
        KEY_FILE,
    ]:
        assert not (run_dir / name).is_symlink() and (run_dir / name).is_file(), name
    assert len(json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])) > 5
    assert (run_dir / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert (run_dir / "checkpoints" / "step_000001" / COMPLETE).is_file()


def test_metrics_are_not_appended_through_a_dangling_symlink(tmp_path, caplog):
    (tmp_path / "metrics.jsonl").symlink_to(tmp_path / "outside.txt")
    with caplog.at_level(logging.WARNING, logger="ladder.files"):
        MetricsFile(tmp_path / "metrics.jsonl").append({"step": 1, "loss": 2.0})
    assert not (tmp_path / "outside.txt").exists()
    assert not (tmp_path / "metrics.jsonl").is_symlink()
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 2.0}]
    assert "is a symlink" in caplog.text


def test_the_caches_follow_no_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    cache = tmp_path / "cache"
    pid = os.getpid()
    plant_links(
        cache,
        outside,
        [
            "k.pt",
            "k.json",
            f"k.pt.tmp{pid}",
            f"k.json.tmp{pid}",
            "t.npz",
            "t.json",
            f".t.npz.tmp{pid}",
            f".t.json.tmp{pid}",
        ],
    )
    ref_cache.store(cache, "k", torch.ones(3, 2), {})
    token_cache.store_entry(cache, "t", [([1, 2], [-100, 2])], "messages", {})
    assert not list(outside.iterdir())
    assert torch.equal(ref_cache.load(cache, "k", 3), torch.ones(3, 2))
    assert token_cache.load_entry(cache, "t", "messages")[0] == [([1, 2], [-100, 2])]


def test_a_checkpoint_that_is_a_symlink_is_refused(base, tmp_path):
    outside = tmp_path / "outside" / "step_000002"
    shutil.copytree(base / "checkpoints" / "step_000002", outside)
    run_dir = tmp_path / "source"
    shutil.copytree(base, run_dir)
    link = run_dir / "checkpoints" / "step_000002"
    shutil.rmtree(link)
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(link))} is a symlink"):
        train_in_process(
            [
                *BASE,
                f"trainer.run_root={tmp_path}",
                "trainer.run_name=other",
                f"trainer.resume={link}",
            ]
        )


def test_resume_auto_skips_a_symlinked_checkpoint_and_replaces_it(base, tmp_path, caplog):
    outside = tmp_path / "outside" / "step_000003"
    shutil.copytree(base / "checkpoints" / "step_000003", outside)
    before = (outside / COMPLETE).read_bytes()
    run_dir = tmp_path / "source"
    shutil.copytree(base, run_dir)
    link = run_dir / "checkpoints" / "step_000003"
    shutil.rmtree(link)
    link.symlink_to(outside, target_is_directory=True)
    caplog.set_level(logging.INFO, logger="ladder")
    train_in_process(
        [*BASE, f"trainer.run_root={tmp_path}", "trainer.run_name=source", "trainer.resume=auto"]
    )
    assert f"{link} is a symlink" in caplog.text
    assert f"resumed from {run_dir / 'checkpoints' / 'step_000002'} (step 2" in caplog.text
    assert (
        not link.is_symlink() and (link / COMPLETE).is_file()
    )  # step 3 saved again, in the run folder
    assert (outside / COMPLETE).read_bytes() == before  # and the link's target untouched
    assert losses(run_dir) == pytest.approx(losses(base), abs=1e-6, rel=0)


def test_a_checkpoint_holding_a_symlink_is_refused_naming_it(base, tmp_path):
    ckpt = tmp_path / "shared" / "step_000002"
    shutil.copytree(base / "checkpoints" / "step_000002", ckpt)
    outside = tmp_path / "outside.safetensors"
    shutil.move(ckpt / "model.safetensors", outside)
    (ckpt / "model.safetensors").symlink_to(outside)  # same bytes: its size and hash match COMPLETE
    with pytest.raises(
        CheckpointError, match=re.escape(f"{ckpt} holds symlinks (model.safetensors)")
    ):
        train_in_process(
            [
                *BASE,
                f"trainer.run_root={tmp_path}",
                "trainer.run_name=other",
                f"trainer.resume={ckpt}",
            ]
        )
