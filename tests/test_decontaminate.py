"""Decontamination: n-gram overlap of training rows with the eval suite's prompts, on a planted leak.

.venv/bin/python -m pytest -q tests/test_decontaminate.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST, ladder_cli

from evals.tasks.decontaminate import decontaminate, write_filtered
from launch.accounting.ledger import Ledger
from training.common.errors import ConfigError, DataError
from training.config.compose import compose
from training.config.validate import validate
from training.data.chat_data import iter_jsonl

HELDOUT = (
    Path(__file__).resolve().parent.parent
    / "training"
    / "assets"
    / "synthetic"
    / "reverse_heldout.jsonl"
)
IFEVAL = Path(__file__).resolve().parent.parent / "evals" / "assets" / "ifeval_lite.jsonl"


def chat(user: str, answer: str = "ok") -> dict:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    }


@pytest.fixture()
def planted(tmp_path):
    """A source with leaks among clean rows: line 3 is a held-out prompt word for word, line 5 an
    instruction prompt inside a longer message, line 7 the first 12 words of a 21-word instruction prompt."""
    held = [r for _, r in iter_jsonl(str(HELDOUT))]
    inst = [r for _, r in iter_jsonl(str(IFEVAL))]
    long_inst = max(inst, key=lambda r: len(r["prompt"].split()))  # 21 words: 14 distinct 8-grams
    half = " ".join(long_inst["prompt"].split()[:12])  # 5 of them: 0.36 of the prompt
    rows = [
        chat("Reverse: q q q q q q q"),
        chat(
            held[0]["messages"][0]["content"] + " z"
        ),  # starts with a held-out prompt: another question
        held[7],
        chat("Compute: 2 + 2", "4"),
        chat("Please help me. " + inst[3]["prompt"] + " Thank you!", "SURE STOP"),
        chat("Reverse: a b"),
        chat(half),
    ]
    path = tmp_path / "planted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"path": path, "held": held[7], "inst": inst[3], "half_of": long_inst}


def test_the_shipped_data_is_clean_against_the_shipped_suites(tmp_path):
    report = decontaminate(
        compose(["data=reverse_mix", "eval=cpu", f"trainer.run_root={tmp_path}"])
    )
    assert report["matching_rows"] == 0
    assert [s["rows_checked"] for s in report["sources"]] == [20000, 2000]
    assert report["eval_prompts"] == {"reverse": 500, "ifeval_lite": 120, "ladder_reverse_mc": 200}
    pref = decontaminate(compose(["recipe=dpo", f"trainer.run_root={tmp_path}"]))
    assert pref["matching_rows"] == 0 and pref["sources"][0]["rows_checked"] == 4000


def test_a_planted_leak_is_found_per_source_and_task_and_filtered_out(planted, tmp_path):
    cfg = compose(
        [f"data.train_files=[{planted['path']}]", "eval=cpu", f"trainer.run_root={tmp_path}"]
    )
    report = decontaminate(cfg)
    (src,) = report["sources"]
    assert src["rows_checked"] == 7
    got = {m["where"].rsplit(":", 1)[1]: m["tasks"] for m in src["matching_rows"]}
    held_id = planted["held"]["id"]
    # the held-out prompt is also a prompt of the multiple-choice lm-eval task built from the same split
    assert got == {
        "3": {"reverse": [held_id], "ladder_reverse_mc": [held_id]},
        "5": {"ifeval_lite": [planted["inst"]["id"]]},
    }
    assert report["rows_by_task"] == {"reverse": 1, "ladder_reverse_mc": 1, "ifeval_lite": 1}
    assert report["prompts_by_task"] == {"reverse": 1, "ladder_reverse_mc": 1, "ifeval_lite": 1}
    # a lower threshold also catches the row holding about half of an instruction prompt's 8-grams
    loose = decontaminate(compose([*cfg_overrides(planted), "data.decontamination.threshold=0.2"]))
    last = loose["sources"][0]["matching_rows"][-1]
    assert last["where"].endswith(":7") and planted["half_of"]["id"] in last["tasks"]["ifeval_lite"]
    written = write_filtered(cfg, report, str(tmp_path / "clean"))
    kept = [r for _, r in iter_jsonl(written[cfg.data.name])]
    original = [r for _, r in iter_jsonl(str(planted["path"]))]
    assert kept == [r for i, r in enumerate(original, 1) if i not in (3, 5)]
    again = decontaminate(
        compose(
            [
                f"data.train_files=[{written[cfg.data.name]}]",
                "eval=cpu",
                f"trainer.run_root={tmp_path}",
            ]
        )
    )
    assert again["matching_rows"] == 0


def cfg_overrides(planted) -> list[str]:
    return [
        f"data.train_files=[{planted['path']}]",
        "eval=cpu",
        f"trainer.run_root={planted['path'].parent}",
    ]


def test_a_source_that_is_all_leak_has_no_filtered_copy_and_bad_settings_are_refused(tmp_path):
    held = [r for _, r in iter_jsonl(str(HELDOUT))][:3]
    path = tmp_path / "leak.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in held))
    cfg = compose([f"data.train_files=[{path}]", f"trainer.run_root={tmp_path}"])
    report = decontaminate(cfg)
    assert report["matching_rows"] == 3
    with pytest.raises(DataError, match="every one of its 3 rows matches the eval suite"):
        write_filtered(cfg, report, str(tmp_path / "out"))
    with pytest.raises(
        ConfigError, match=r"data.decontamination.threshold=1.5 must be in \(0, 1\]"
    ):
        validate(compose(["data.decontamination.threshold=1.5"]))


def test_launch_refuses_contaminated_data_unless_allowed_and_the_ledger_records_it(
    planted, tmp_path
):
    common = [
        *FAST,
        f"data.train_files=[{planted['path']}]",
        "trainer.max_steps=1",
        "trainer.save_every=1",
        "rung.micro_batch_tokens=256",
        "trainer.global_batch_tokens=256",
    ]
    refused = ladder_cli("launch", *common, cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (
        "ladder launch: error: the data of job tiny-sft-reverse (data=reverse) overlaps the prompts of its "
        "eval suite eval=synthetic: reverse: 1 of 7 rows match reverse (1 rows)" in refused.stderr
    )
    assert "--allow-contamination launches anyway" in refused.stderr
    assert (
        not (tmp_path / "runs" / "ladder.db").exists()
        or not Ledger(tmp_path / "runs" / "ladder.db").jobs()
    )
    allowed = ladder_cli("launch", *common, "--allow-contamination", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "launched with --allow-contamination" in allowed.stderr
    (job,) = Ledger(tmp_path / "runs" / "ladder.db").jobs()
    assert job["allow_contamination"] == 1 and job["state"] == "completed"
    assert json.loads(job["data_mixture"])["sources"]["reverse"] == {
        "files": [str(planted["path"])]
    }
