"""What the command line prints on ordinary runs: our lines, not third-party notices (-v shows them)."""

from __future__ import annotations

from conftest import FAST, ladder_cli


def test_third_party_notices_are_kept_out_unless_verbose(tmp_path):
    args = ["train", *FAST, "trainer.max_steps=2", "trainer.save_every=2"]
    quiet = ladder_cli(*args, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "ladder.train: step 2/2" in quiet.stderr
    assert (
        "Setting accelerator to CPU" not in quiet.stdout + quiet.stderr
    )  # DeepSpeed's (to stdout), at a save
    loud = ladder_cli("-v", *args, "trainer.run_name=loud", cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert "Setting accelerator to CPU" in loud.stdout + loud.stderr
