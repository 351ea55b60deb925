"""Checkpoints that lie: COMPLETE lists every file's size and SHA-256, and a checkpoint whose files
do not match it is skipped by resume=auto, refused by an explicit resume and by `ladder eval`.

One tiny run (6 steps, a checkpoint every 2) is trained once per module; each case copies its
run directory and damages the newest checkpoint (step 6) with COMPLETE left in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tracemalloc

import pytest
from conftest import FAST, ladder_cli, losses, train_in_process
from distributed_helpers import run, run_overrides, torchrun_cmd

from training.common.errors import CheckpointError
from training.config.compose import compose
from training.run.checkpoint import CHUNK, COMPLETE, check_checkpoint, file_sha256, prune
from training.run.remote import RemoteCheckpoints, resolve_resume

STEPS, EVERY = 6, 2
BASE = [*FAST, f"trainer.max_steps={STEPS}", f"trainer.save_every={EVERY}"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The uninterrupted run: checkpoints at steps 2, 4 and 6, and its per-step losses."""
    root = tmp_path_factory.mktemp("integrity")
    result = train_in_process([*BASE, f"trainer.run_root={root}", "trainer.run_name=base"])
    assert [p.name for p in result.checkpoints[-3:]] == [
        "step_000002",
        "step_000004",
        "step_000006",
    ]
    return result.run_dir, losses(result.run_dir)


def truncate(f):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def delete(f):
    f.unlink()


def flip(f):
    """One bit in the middle of the file: past the safetensors header, so it still loads."""
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))


CASES = {  # name: (file, damage, what the message says)
    "truncated": ("model.safetensors", truncate, "COMPLETE records"),
    "missing": ("trainer_state.pt", delete, "is missing"),
    "flipped": ("model.safetensors", flip, "does not match its SHA-256"),
}


def damaged_copy(base, tmp_path, case):
    """A copy of the base run (same run name, under tmp_path) with step 6 damaged."""
    run_dir = tmp_path / "base"
    shutil.copytree(base[0], run_dir)
    name, damage, _ = CASES[case]
    newest = run_dir / "checkpoints" / "step_000006"
    damage(newest / name)
    assert (newest / COMPLETE).is_file()
    return run_dir, newest


def test_complete_lists_every_file_with_its_size_and_sha256(base):
    ckpt = base[0] / "checkpoints" / "step_000004"
    manifest = json.loads((ckpt / COMPLETE).read_text())
    on_disk = {
        p.relative_to(ckpt).as_posix(): p
        for p in ckpt.rglob("*")
        if p.is_file() and p.name != COMPLETE
    }
    assert set(manifest["files"]) == set(on_disk) and "model.safetensors" in on_disk
    for rel, p in on_disk.items():
        data = p.read_bytes()
        assert manifest["files"][rel] == {
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }, rel
    # the unique token of each save stays (remote.py tells saves apart by COMPLETE's bytes)
    other = json.loads((base[0] / "checkpoints" / "step_000002" / COMPLETE).read_text())
    assert manifest["token"] and manifest["token"] != other["token"]


def test_hashing_streams_in_chunks(tmp_path):
    """A file three chunks long is hashed with about one chunk in memory, not the whole file."""
    f = tmp_path / "big.bin"
    with open(f, "wb") as fh:
        for i in range(3):
            fh.write(bytes([i]) * CHUNK)
    tracemalloc.start()
    size, digest = file_sha256(f)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert size == 3 * CHUNK
    assert digest == hashlib.sha256(b"".join(bytes([i]) * CHUNK for i in range(3))).hexdigest()
    assert peak < 1.5 * CHUNK, f"hashing held {peak / CHUNK:.1f} chunks in memory"


@pytest.mark.parametrize("case", CASES)
def test_resume_auto_skips_a_damaged_checkpoint_and_reproduces_the_losses(
    base, tmp_path, case, caplog
):
    run_dir, newest = damaged_copy(base, tmp_path, case)
    name, _, why = CASES[case]
    caplog.set_level(logging.INFO, logger="ladder")  # ladder.train and ladder.checkpoint
    train_in_process(
        [*BASE, f"trainer.run_root={tmp_path}", "trainer.run_name=base", "trainer.resume=auto"]
    )
    skipped = [
        r.getMessage()
        for r in caplog.records
        if r.name == "ladder.checkpoint" and r.levelno == logging.WARNING
    ]
    assert any("step_000006" in m and name in m and why in m for m in skipped), skipped
    assert f"resumed from {run_dir / 'checkpoints' / 'step_000004'} (step 4" in caplog.text
    assert losses(run_dir) == pytest.approx(base[1], abs=1e-6, rel=0)
    check_checkpoint(newest, hashes=True)  # step 6 was saved again, whole


@pytest.mark.parametrize("case", CASES)
def test_an_explicit_damaged_checkpoint_is_refused_naming_the_file(base, tmp_path, case):
    _, newest = damaged_copy(base, tmp_path, case)
    name, _, why = CASES[case]
    with pytest.raises(CheckpointError, match=rf"corrupt checkpoint .*step_000006: {name} .*{why}"):
        train_in_process(
            [
                *BASE,
                f"trainer.run_root={tmp_path}",
                "trainer.run_name=again",
                f"trainer.resume={newest}",
            ]
        )


@pytest.mark.parametrize("case", CASES)
def test_ladder_eval_refuses_a_damaged_checkpoint_naming_the_file(base, tmp_path, case):
    _, newest = damaged_copy(base, tmp_path, case)
    name, _, why = CASES[case]
    proc = ladder_cli(
        "eval",
        str(newest),
        "tracker.mode=disabled",
        f"trainer.run_root={tmp_path}",
        "eval.max_examples=2",
        "eval.max_new_tokens=2",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"{newest}: {name}" in proc.stderr and why in proc.stderr, proc.stderr[-3000:]


def test_files_added_after_the_commit_are_not_checked_and_old_checkpoints_still_load(
    base, tmp_path, caplog
):
    ckpt = tmp_path / "step_000004"
    shutil.copytree(base[0] / "checkpoints" / "step_000004", ckpt)
    (ckpt / "eval").mkdir()
    (ckpt / "eval" / "synthetic.json").write_text("{}\n")  # eval results, written later
    (ckpt / "deepspeed" / "universal").mkdir(parents=True)  # DeepSpeed's conversion on resume
    (ckpt / "deepspeed" / "universal" / "mp_rank_00.pt").write_bytes(b"x")
    assert check_checkpoint(ckpt, hashes=True) == ckpt
    # A checkpoint from before manifests: COMPLETE is one line (time and id). It loads, unverified.
    (ckpt / COMPLETE).write_text("2025-01-01T00:00:00Z 0123456789abcdef0123456789abcdef\n")
    flip(ckpt / "trainer_state.pt")
    caplog.set_level(logging.INFO, logger="ladder.checkpoint")
    assert check_checkpoint(ckpt, hashes=True) == ckpt
    assert "its files are not verified" in caplog.text


def test_a_legacy_checkpoint_resumes(base, tmp_path):
    run_dir = tmp_path / "base"
    shutil.copytree(base[0], run_dir)
    # Step 4 as an older Ladder wrote it (a one-line COMPLETE); step 6 never happened.
    (run_dir / "checkpoints" / "step_000004" / COMPLETE).write_text(
        "2025-01-01T00:00:00Z 0123456789abcdef\n"
    )
    shutil.rmtree(run_dir / "checkpoints" / "step_000006")
    train_in_process(
        [*BASE, f"trainer.run_root={tmp_path}", "trainer.run_name=base", "trainer.resume=auto"]
    )
    assert losses(run_dir) == pytest.approx(base[1], abs=1e-6, rel=0)
    assert "files" in json.loads((run_dir / "checkpoints" / "step_000006" / COMPLETE).read_text())


def test_a_damaged_remote_checkpoint_is_caught_after_download_and_skipped(base, tmp_path, caplog):
    url = (tmp_path / "bucket").as_uri()
    store = RemoteCheckpoints(f"{url}/base/checkpoints")
    for step in (4, 6):
        store.upload(base[0] / "checkpoints" / f"step_{step:06d}", step)
    truncate(tmp_path / "bucket" / "base" / "checkpoints" / "step_000006" / "model.safetensors")
    cfg = compose(
        [
            *BASE,
            f"trainer.run_root={tmp_path}",
            "trainer.run_name=base",
            f"trainer.checkpoint_url={url}",
            "trainer.resume=auto",
        ]
    )
    run_dir = tmp_path / "base"
    caplog.set_level(logging.WARNING, logger="ladder.checkpoint")
    assert (
        resolve_resume(cfg, run_dir, RemoteCheckpoints.for_run(cfg))
        == run_dir / "checkpoints" / "step_000004"
    )
    assert f"{store.step_url(6)}: model.safetensors is" in caplog.text
    # the bad download never took the checkpoint's name, and left nothing behind
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_000004"]
    # named explicitly, it is refused
    with pytest.raises(CheckpointError, match="model.safetensors is"):
        resolve_resume(
            compose([*BASE, f"trainer.run_root={tmp_path}", f"trainer.resume={store.step_url(6)}"]),
            run_dir,
        )


def test_prune_leaves_checkpoints_after_the_one_just_saved(base, tmp_path):
    """After falling back from a damaged step 6 to step 4, saving step 5 with keep_last=1 must
    not count step 6 (it would delete step 5, the only good one); the run overwrites step 6."""
    run_dir = tmp_path / "base"
    shutil.copytree(base[0], run_dir)
    prune(run_dir, keep_last=1, protect=(), newest=4)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step_000004",
        "step_000006",
    ]
    store = RemoteCheckpoints(
        f"{(tmp_path / 'bucket').as_uri()}/base/checkpoints"
    )  # the same rule at a URL
    for step in (2, 4, 6):
        store.upload(base[0] / "checkpoints" / f"step_{step:06d}", step)
    store.prune(keep_last=1, protect=(), newest=4)
    assert store.all_steps() == [4, 6]


def test_two_processes_agree_on_the_checkpoint_to_fall_back_to(base, tmp_path):
    """Only rank 0 hashes; a flipped byte passes the size check the other rank makes, so rank 1
    must take rank 0's choice (step 4), not find step 6 itself."""
    run_dir, _ = damaged_copy(base, tmp_path, "flipped")
    over = run_overrides(tmp_path, "base", STEPS, engine="ddp", procs=2, save_every=EVERY) + [
        "trainer.resume=auto"
    ]
    proc = run(torchrun_cmd(2, over))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "model.safetensors does not match its SHA-256" in proc.stderr
    assert f"resumed from {run_dir / 'checkpoints' / 'step_000004'} (step 4" in proc.stderr
    assert losses(run_dir) == pytest.approx(base[1], abs=1e-4, rel=0)  # ddp on 2 against 1 process


def test_an_unsupported_resume_protocol_is_named(tmp_path):
    proc = ladder_cli(
        "train",
        "rung=tiny",
        "tracker.mode=disabled",
        "trainer.resume=ftp://x/y",
        f"trainer.run_root={tmp_path}",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "trainer.resume='ftp://x/y': ftp:// is not supported for checkpoints" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "tiny-sft-reverse").exists()  # refused before anything ran
