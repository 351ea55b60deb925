"""Findings 4, 5 and 9 of the security review (issue #21), each with a test that failed before its fix:
launcher.env keys that take over the job (and SLURM_JOB_ID evaluated as code by the script), names
that escape the run root (data, mixture sources, eval tasks, `--write DIR`), and paths a file system
cannot take reported as a traceback instead of a clear error with exit status 2.

    .venv/bin/python -m pytest -x -q tests/test_hardening_paths.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST
from omegaconf import OmegaConf

from launch.cli import main as ladder_main
from training.common.errors import ConfigError
from training.config.compose import compose
from training.config.names import check_names
from training.config.validate import validate

HOSTILE_ENV = [
    "SLURM_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "PATH",
    "SHELLOPTS",
    "SLURM_TASK_PROLOG",
    "LD_PRELOAD",
    "PYTHONPATH",
    "BASH_ENV",
    "IFS",
    "CUDA_VISIBLE_DEVICES",
    "MASTER_ADDR",
    "OMP_NUM_THREADS",
]


# ---- 4. launcher.env: an allow-list of prefixes --------------------------------------------
@pytest.mark.parametrize("name", HOSTILE_ENV)
def test_a_launcher_env_key_outside_the_allow_list_is_refused_naming_it(name, tmp_path):
    from launch.cluster.slurm_script import Point, render

    cfg = compose(["launcher=slurm", f"trainer.run_root={tmp_path}", f"+launcher.env.{name}=1"])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert f"launcher.env.{name}:" in str(e.value)
    if name != "CUDA_VISIBLE_DEVICES":  # that one is inside CUDA_, refused as the job's own
        assert "NCCL_, FI_" in str(e.value) and "TORCH_" in str(e.value)
    with pytest.raises(
        ConfigError, match=f"launcher.env.{name}:"
    ):  # and no script is ever made with it
        render(
            cfg,
            [Point(tmp_path / "r", [])],
            name="r",
            log_dir=tmp_path / "slurm",
            submit_dir=tmp_path,
        )


def test_allowed_prefixes_and_the_shipped_profiles_are_accepted(tmp_path):
    from launch.cluster.slurm_script import Point, render

    keys = [
        "NCCL_IB_HCA",
        "FI_EFA_FORK_SAFE",
        "OFI_NCCL_PROTOCOL",
        "UCX_NET_DEVICES",
        "GLOO_SOCKET_IFNAME",
        "TORCH_DISTRIBUTED_DEBUG",
        "CUDA_LAUNCH_BLOCKING",
    ]
    for launcher in ("slurm", "slurm_efa"):
        cfg = compose(
            [
                f"launcher={launcher}",
                f"trainer.run_root={tmp_path}",
                *(f"+launcher.env.{k}=x" for k in keys),
            ]
        )
        validate(cfg)
        script = render(
            cfg,
            [Point(tmp_path / "r", [])],
            name="r",
            log_dir=tmp_path / "slurm",
            submit_dir=tmp_path,
        )
        assert all(f"export {k}=x" in script for k in keys)


def _stubs(tmp_path: Path) -> tuple[Path, Path]:
    """The SLURM tools and the interpreter the script calls, as stubs: srun records its arguments."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "srun_args"
    bin_dir.mkdir()
    stubs = {
        "scontrol": "echo node1",
        "getent": "echo 127.0.0.1 STREAM node1",
        "scancel": "true",
        "srun": f'echo "$@" > {calls}',
        "python": "echo completed",
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir, calls


@pytest.mark.parametrize("job_id", ["BASH_VERSINFO[$(touch {m})0]", "x[$(touch {m})]"])
def test_the_script_never_evaluates_a_hostile_slurm_job_id(job_id, tmp_path):
    from launch.cluster.slurm_script import Point, render

    bin_dir, calls = _stubs(tmp_path)
    cfg = compose(
        [
            "launcher=slurm",
            "rung.gpus_per_node=2",
            "rung.engine=ddp",
            f"trainer.run_root={tmp_path}",
            f"launcher.python={bin_dir / 'python'}",
        ]
    )
    script = tmp_path / "job.sbatch"
    script.write_text(
        render(
            cfg,
            [Point(tmp_path / "r", [])],
            name="r",
            log_dir=tmp_path / "slurm",
            submit_dir=tmp_path,
        )
    )
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "node1",
        "SLURM_JOB_NUM_NODES": "1",
        "HOME": str(tmp_path),
    }
    marker = tmp_path / "PWNED"
    bad = subprocess.run(
        ["bash", str(script)],
        env={**env, "SLURM_JOB_ID": job_id.format(m=marker)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert not marker.exists(), "the script ran a command from SLURM_JOB_ID"
    assert bad.returncode == 2 and "SLURM_JOB_ID is not a job id" in bad.stderr, bad.stderr
    assert not calls.exists()  # stopped before srun
    good = subprocess.run(
        ["bash", str(script)],
        env={**env, "SLURM_JOB_ID": "1234"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    assert "--rdzv_endpoint=127.0.0.1:29734" in calls.read_text()  # 29500 + 1234 % 1000


# ---- 5. names that become paths: data, mixture sources, eval tasks ---------------------------
BAD_NAMES = ["../x", "/abs/x", "sub/dir"]


@pytest.mark.parametrize("value", BAD_NAMES)
@pytest.mark.parametrize("key", ["data.name", "eval.tasks", "eval.lm_eval.tasks"])
def test_a_data_or_eval_task_name_that_is_not_one_plain_component_is_refused(key, value):
    override = f"{key}='{value}'" if key == "data.name" else f"{key}=['{value}']"
    with pytest.raises(ConfigError) as e:
        compose([override, "trainer.run_name=ok"])
    shown = key if key == "data.name" else f"{key}[0]"
    assert f"{shown}='{value}' cannot be a file name" in str(e.value)


def _renamed_source(cfg, name: str):
    """The mixture with its first source renamed, as a data config file could name it (the command
    line cannot add a source)."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))  # writable, untyped: a key of any spelling
    sources = dict(cfg.data.sources)
    first = next(iter(sources))
    cfg.data.sources = {name: sources.pop(first), **sources}
    return cfg


@pytest.mark.parametrize("value", BAD_NAMES)
def test_a_mixture_source_name_that_is_not_one_plain_component_is_refused(value, tmp_path):
    cfg = _renamed_source(compose(["data=reverse_mix", f"trainer.run_root={tmp_path}"]), value)
    with pytest.raises(ConfigError, match=rf"data.sources\[0\]='{value}' cannot be a file name"):
        check_names(cfg)  # what compose runs
    with pytest.raises(ConfigError, match=rf"data.sources\[0\]='{value}' cannot be a file name"):
        validate(cfg)


def test_write_dir_writes_inside_dir_only(tmp_path):
    from evals.tasks.decontaminate import write_filtered

    cfg = _renamed_source(
        compose(["data=reverse_mix", f"trainer.run_root={tmp_path}"]), "../escape"
    )
    report = {"sources": [{"source": "../escape", "rows_checked": 10, "matching_rows": []}]}
    with pytest.raises(
        ConfigError,
        match=r"--write .*clean: the copy of source '../escape' would be written to "
        r".*escape.jsonl, outside",
    ):
        write_filtered(cfg, report, str(tmp_path / "clean"))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["clean"]


def test_the_cli_refuses_escaping_names_and_unwritable_paths_with_status_2(tmp_path):
    """Real `ladder` processes, run side by side: exit status 2, one clear line, no traceback, no file."""
    long = "x" * 300
    runs = {
        "inspect": (
            [
                "data",
                "inspect",
                "data.name=../../escape",
                "trainer.run_name=ok",
                f"trainer.run_root={tmp_path / 'a' / 'runs'}",
            ],
            "data.name='../../escape' cannot be a file name",
        ),
        "decontaminate": (
            [
                "data",
                "decontaminate",
                "data.name=../escape",
                "trainer.run_name=ok",
                f"trainer.run_root={tmp_path / 'a' / 'runs'}",
                "--write",
                str(tmp_path / "a" / "clean"),
            ],
            "data.name='../escape' cannot be a file name",
        ),
        "train": (
            ["train", *FAST, f"trainer.run_root={tmp_path / long}"],
            "has a part of 300 bytes",
        ),
    }
    procs = {
        k: subprocess.Popen(
            [str(Path(sys.executable).parent / "ladder"), *args],
            cwd=tmp_path,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for k, (args, _) in runs.items()
    }
    for k, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2 and "Traceback" not in err, (k, err)
        assert runs[k][1] in err, (k, err)
    assert (
        list(tmp_path.rglob("*")) == []
    )  # no run root, no lengths file, no filtered copy, anywhere


# ---- 9. paths a file system cannot take: a clear error, exit status 2 ------------------------
LONG_PART = "x" * 300
TOO_LONG = "/" + "/".join(["d" * 200] * 21)  # 4221 bytes, every part fine


PART = "has a part of 300 bytes; a file or folder name is at most 255 bytes"


@pytest.mark.parametrize(
    "override, key, reason",
    [
        (f"data.train_files=[/tmp/{LONG_PART}]", "data.train_files[0]='/tmp/xxx", PART),
        (f"eval.heldout_file=/tmp/{LONG_PART}", "eval.heldout_file='/tmp/xxx", PART),
        (f"trainer.run_root=/tmp/{LONG_PART}", "trainer.run_root='/tmp/xxx", PART),
        (
            f"trainer.run_root={TOO_LONG}",
            "trainer.run_root='/ddd",
            "is 4221 bytes long as an absolute path; at most 3584",
        ),
        (
            f"model.name_or_path={TOO_LONG}",
            "model.name_or_path='/ddd",
            "is 4221 bytes long as an absolute path; at most 4096",
        ),
        (
            'trainer.run_root="a\x00b"',
            r"trainer.run_root='a\x00b'",
            r"holds the control character '\x00'; a path cannot",
        ),
        (
            'eval.heldout_file="a\x1bb"',
            r"eval.heldout_file='a\x1bb'",
            r"holds the control character '\x1b'",
        ),
        (
            'trainer.checkpoint_url="s3://b/\x00"',
            "trainer.checkpoint_url=<a 's3' URL, not shown>",
            "holds the control",
        ),
    ],
)
def test_a_path_a_file_system_cannot_take_is_a_config_error_naming_the_key(
    override, key, reason, capsys
):
    # ledger.url set apart: by default it is derived from trainer.run_root and has its own rule
    overrides = [override, "ledger.url=sqlite:///ladder-test.db"]
    with pytest.raises(ConfigError) as e:
        compose(overrides)
    assert f"{key}" in str(e.value) and reason in str(e.value)
    # the CLI's entry point (a config file can carry any of these, a NUL included): status 2, no traceback
    assert ladder_main(["config", *overrides]) == 2
    err = capsys.readouterr().err
    assert "ladder config: error: invalid config:" in err and key in err and reason in err


def test_an_output_option_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "a_file").write_text("x")
    cases = [
        (
            ["compare", "nowhere/a", "nowhere/b", "--json", str(tmp_path / "runs")],
            "--json",
            "is a folder",
        ),
        (
            ["compare", "nowhere/a", "nowhere/b", "--html", str(tmp_path / "a_file" / "r.html")],
            "--html",
            "is a file, not a folder",
        ),
        (["leaderboard", "--json", str(tmp_path / "runs")], "--json", "is a folder"),
        (
            ["compare", "nowhere/a", "--json", f"{tmp_path}/{LONG_PART}.json"],
            "--json",
            "has a part of 305 bytes",
        ),
        (
            ["data", "decontaminate", "--write", str(tmp_path / "a_file")],
            "--write",
            "is a file; give a folder",
        ),
    ]
    for argv, flag, message in cases:
        assert ladder_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert flag in err and message in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "runs"]
