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
    planted, lm_tasks, tmp_path
):
    common = [
        *FAST,
        f"data.train_files=[{planted['path']}]",
        f"eval.lm_eval.include_path={lm_tasks}",  # and a task not on this machine: unchecked
        "eval.lm_eval.tasks=[my_hub]",
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
    allowed = ladder_cli(
        "launch", *common, "--allow-contamination", "--allow-unchecked", cwd=tmp_path
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "launched with --allow-contamination" in allowed.stderr
    assert "my_hub could not be read here" in allowed.stderr
    assert "launched with --allow-unchecked" in allowed.stderr
    (job,) = Ledger(tmp_path / "runs" / "ladder.db").jobs()
    assert job["allow_contamination"] == 1 and job["state"] == "completed"
    assert job["allow_unchecked"] == 1
    assert json.loads(job["data_mixture"])["sources"]["reverse"] == {
        "files": [str(planted["path"])]
    }


# ---- issue #22: never pass what was not checked; CJK ---------------------------------------------
QUESTION = (
    "A farmer plants seven rows of beans with twelve plants in each row and then loses fifteen "
    "plants to frost; how many plants are left?"
)
QUESTION_ZH = (
    "请写一篇关于秋天的短文，描述落叶的颜色、空气的味道以及你在公园里散步时的感受，"
    "文章不少于三百字，并且不要使用任何形容词的重复。"
)
TASK_YAML = """task: {name}
dataset_path: {path}
{extra}output_type: generate_until
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: exact_match
"""


@pytest.fixture()
def lm_tasks(tmp_path):
    """An include path with my_local (its documents in a local jsonl), my_hub (openai/gsm8k: on the
    hub, not on this machine, HF_DATASETS_OFFLINE=1 in conftest) and mygroup (my_local and the
    catalogue's gsm8k)."""
    tasks = tmp_path / "mytasks"
    tasks.mkdir()
    docs = tasks / "docs.jsonl"
    docs.write_text(
        "".join(
            json.dumps({"id": i, "question": q, "answer": "x"}, ensure_ascii=False) + "\n"
            for i, q in (("q1", QUESTION), ("q2", QUESTION_ZH))
        )
    )
    files = f"dataset_kwargs:\n  data_files:\n    test: {docs}\n"
    (tasks / "my_local.yaml").write_text(
        TASK_YAML.format(name="my_local", path="json", extra=files)
    )
    (tasks / "my_hub.yaml").write_text(
        TASK_YAML.format(name="my_hub", path="openai/gsm8k", extra="dataset_name: main\n")
    )
    (tasks / "mygroup.yaml").write_text("group: mygroup\ntask:\n  - gsm8k\n  - my_local\n")
    return tasks


def source(tmp_path, users: list[str]) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(chat(u), ensure_ascii=False) + "\n" for u in users))
    return path


def decontam_cli(tmp_path, data: Path, tasks: Path, names: str, capsys) -> tuple[int, dict, str]:
    from launch.cli import main as ladder_main

    code = ladder_main(
        [
            "data",
            "decontaminate",
            f"data.train_files=[{data}]",
            "eval=cpu",
            "eval.tasks=[reverse]",
            f"eval.lm_eval.include_path={tasks}",
            f"eval.lm_eval.tasks=[{names}]",
            f"trainer.run_root={tmp_path}",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_a_catalogue_task_that_cannot_be_read_is_unchecked_with_exit_status_3(
    lm_tasks, tmp_path, capsys
):
    """(a) gsm8k from lm-eval's catalogue, not downloaded: unchecked, exit 3 (was "not checked",
    exit 0: a CI gate passed); my_local is read and checked; a leak still wins (exit 1)."""
    clean = source(tmp_path, ["Name three colours.", "Reverse: a b c"])
    code, report, err = decontam_cli(tmp_path, clean, lm_tasks, "my_local,gsm8k", capsys)
    assert code == 3 and report["status"] == "unchecked", err
    assert [x["task"] for x in report["unchecked_tasks"]] == ["gsm8k"]
    assert "OfflineModeIsEnabled" in report["unchecked_tasks"][0]["reason"]
    assert report["eval_prompts"]["my_local"] == 2 and report["matching_rows"] == 0
    assert "eval task(s) gsm8k could not be read here" in err and err.strip().endswith(
        "exit status 3"
    )
    leaked = source(tmp_path, ["Name three colours.", QUESTION])
    code, report, _ = decontam_cli(tmp_path, leaked, lm_tasks, "my_local,gsm8k", capsys)
    assert code == 1 and report["status"] == "contaminated" and report["unchecked_tasks"]


def test_a_local_task_whose_dataset_is_on_the_hub_is_unchecked_not_a_crash(
    lm_tasks, tmp_path, capsys
):
    """(c) the issue's reproduction: a local YAML naming openai/gsm8k under HF_DATASETS_OFFLINE=1
    raised ConnectionError, exit 1 (the code for contaminated)."""
    clean = source(tmp_path, ["Name three colours."])
    code, report, _ = decontam_cli(tmp_path, clean, lm_tasks, "my_hub", capsys)
    assert code == 3 and [x["task"] for x in report["unchecked_tasks"]] == ["my_hub"]
    assert "ConnectionError" in report["unchecked_tasks"][0]["reason"]


def test_a_local_group_listing_a_catalogue_task_is_read_by_lm_evals_task_manager(
    lm_tasks, tmp_path, capsys
):
    """(d) the hand YAML reading took gsm8k, listed in a local group, for a local task: TypeError.
    lm-eval's TaskManager says what the include path defines; the group's local member is checked,
    its catalogue member is looked up in the catalogue (and unchecked: not downloaded). `ladder
    eval` asks the same index whether it needs the catalogue."""
    leaked = source(tmp_path, ["Please solve: " + QUESTION])
    code, report, _ = decontam_cli(tmp_path, leaked, lm_tasks, "mygroup", capsys)
    assert code == 1 and report["rows_by_task"] == {"my_local": 1}
    assert [x["task"] for x in report["unchecked_tasks"]] == ["gsm8k"]
    from evals.tasks.lm_harness import local_task_index, missing_names

    assert set(local_task_index(str(lm_tasks))) == {"my_local", "my_hub", "mygroup"}
    assert missing_names(["mygroup"], local_task_index(str(lm_tasks))) == {"gsm8k"}
    assert missing_names(["my_local"], local_task_index(str(lm_tasks))) == set()


def test_chinese_prompts_are_compared_by_characters(lm_tasks, tmp_path):
    """(e) \\w+ made a whole Chinese clause one word: any edit escaped. Character n-grams catch the
    prompt with its punctuation stripped, with spaces between its characters, with every 的
    written 之, and inside a longer message with ASCII commas; an unrelated Chinese row and the
    English row pass."""
    import re

    leaks = [
        re.sub(r"[，、。]", "", QUESTION_ZH),
        " ".join(QUESTION_ZH),
        QUESTION_ZH.replace("的", "之"),
        "你好！" + QUESTION_ZH.replace("，", ",") + "谢谢",
    ]
    clean = [
        "今天天气很好，我们一起去公园散步吧，顺便买一些水果和面包回家，晚上再做一顿丰盛的晚饭。"
    ]
    data = source(tmp_path, [*leaks, *clean, "Name three colours."])
    report = decontaminate(
        compose(
            [
                f"data.train_files=[{data}]",
                "eval=cpu",
                "eval.tasks=[]",
                f"eval.lm_eval.include_path={lm_tasks}",
                "eval.lm_eval.tasks=[my_local]",
                f"trainer.run_root={tmp_path}",
            ]
        )
    )
    lines = [int(m["where"].rsplit(":", 1)[1]) for m in report["sources"][0]["matching_rows"]]
    assert lines == [1, 2, 3, 4]
    assert all(m["tasks"] == {"my_local": ["q2"]} for m in report["sources"][0]["matching_rows"])


def test_launch_refuses_a_suite_with_unchecked_tasks_unless_allowed(lm_tasks, tmp_path):
    """(b) `launch` went ahead with only a note; now it refuses before recording anything, naming
    the task, unless --allow-unchecked (recorded as jobs.allow_unchecked: the test below)."""
    from launch.commands.launch_cmd import launch

    runs = tmp_path / "runs"
    overrides = [
        *FAST,
        f"data.train_files=[{source(tmp_path, ['Name three colours.'])}]",
        f"eval.lm_eval.include_path={lm_tasks}",
        "eval.lm_eval.tasks=[my_hub]",
        f"trainer.run_root={runs}",
        "trainer.max_steps=1",
    ]
    with pytest.raises(
        DataError,
        match=r"eval task\(s\) my_hub could not be read here.*--allow-unchecked launches anyway",
    ):
        launch(overrides)
    assert not (runs / "ladder.db").exists() or not Ledger(runs / "ladder.db").jobs()


def test_hostile_task_ids_and_reasons_print_as_themselves():
    """Task ids, row places and reasons come from files Ladder did not write: rich markup and
    terminal escapes in them are printed as text, never interpreted."""
    from rich.console import Console

    from evals.tasks.contamination_report import print_report, summary_lines, unchecked_line

    bad = "[bold red]t\x1b[2J"
    report = {
        "data": "d",
        "eval": "e",
        "ngram": 8,
        "threshold": 0.5,
        "eval_prompts": {bad: 3},
        "prompts_by_task": {bad: 1},
        "sources": [
            {
                "source": "s",
                "rows_checked": 2,
                "rows_by_task": {bad: 1},
                "matching_rows": [{"where": "x.jsonl:1[/]", "tasks": {bad: ["[i]id"]}}],
            }
        ],
        "unchecked_tasks": [{"task": bad, "reason": "boom [link=http://x]y[/link]\x1b]8;;"}],
        "unchecked_sources": [],
    }
    console = Console(record=True, width=300, color_system=None)
    print_report(report, console)
    out = console.export_text()
    assert "[bold red]t\\x1b[2J" in out and "[i]id" in out and "[link=http://x]y[/link]" in out
    assert "\x1b" not in out
    lines = " ".join(summary_lines(report)) + unchecked_line(report)
    assert "\x1b" not in lines and "\\x1b" in lines
