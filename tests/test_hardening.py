"""Findings of the outside review (issue #11), each with a test that failed before its fix:
names that escape their folder, secrets by value, #SBATCH values, hostile sweep names, numeric
ranges, a broken pipe, and the test cluster's /etc/hosts lines. The hostile-script test that
runs on the real SLURM cluster is in tests/test_slurm.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, REPO, ladder_cli
from omegaconf import OmegaConf

from training.common.errors import ConfigError
from training.config.compose import compose
from training.config.validate import validate


# ---- 4. names that become paths -----------------------------------------------------------
@pytest.mark.parametrize("key", ["trainer.run_name", "sweep.name", "eval.name"])
@pytest.mark.parametrize(
    "value", ["../../etc", "a/b", "..", ".hidden", "-rf", "a..b", "x" * 300, "a b", "a$(id)"]
)
def test_a_name_that_is_not_one_plain_path_component_is_refused(key, value):
    with pytest.raises(ConfigError) as e:
        compose([f"{key}='{value}'"])
    assert key in str(e.value)
    assert "cannot be a file name" in str(e.value) or "characters long" in str(e.value)


def test_a_derived_run_name_is_checked_too_and_says_where_it_came_from():
    with pytest.raises(ConfigError, match=r"trainer.run_name=.*derived as <rung.name>"):
        compose(["rung.name='../x'"])


def test_a_path_escaping_run_is_refused_before_anything_is_written(tmp_path):
    root = tmp_path / "a" / "runs"
    proc = ladder_cli(
        "train", *FAST, f"trainer.run_root={root}", "trainer.run_name=../../escaped", cwd=tmp_path
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "trainer.run_name='../../escaped' cannot be a file name" in proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == []  # not even the run root
    long = ladder_cli(
        "launch",
        "-m",
        *FAST,
        f"trainer.run_root={root}",
        "optim.lr=1e-3,2e-3",
        f"sweep.name={'s' * 300}",
        cwd=tmp_path,
    )
    assert (
        long.returncode == 2
        and "OSError" not in long.stderr
        and "sweep.name is 300 characters long" in long.stderr
    )


# ---- 5. hostile sweep names: the message names the value the user gave -------------------
@pytest.mark.parametrize("name", ["a$(touch x)", "it's", "a\\nb", "a;b"])
def test_a_hostile_sweep_name_is_named_not_a_hydra_grammar_error(name):
    from launch.commands.launch_cmd import prepare

    quoted = "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"
    with pytest.raises(ConfigError) as e:
        prepare([*FAST, f"sweep.name={quoted}", "optim.lr=1e-3,2e-3"], multirun=True)
    assert "sweep.name=" in str(e.value) and "cannot be a file name" in str(e.value)
    assert "LexerNoViableAlt" not in str(e.value) and "mismatched input" not in str(e.value)


def test_names_from_a_users_quoted_run_name_are_not_re_parsed():
    from launch.commands.launch_cmd import prepare

    sweep, jobs = prepare(
        [*FAST, "sweep.name='lr'", "trainer.run_name='base'", "optim.lr=1e-3,2e-3"], multirun=True
    )
    assert sweep == "lr" and [j.run_name for j in jobs] == ["base-0", "base-1"]


# ---- 3. secrets: by name, by interpolation, by value --------------------------------------
def test_secrets_are_refused_by_name_interpolation_and_value(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "planted-wandb-value-123")
    monkeypatch.setenv("HF_TOKEN", "hf_planted_token_456")
    cases = {
        "launcher.env.NCCL_DEBUG=${oc.env:WANDB_API_KEY}": "interpolates the secret-looking variable WANDB_API_KEY",
        "+launcher.env.HF_AUTH=x": "launcher.env.HF_AUTH: secrets never go in configs",
        "+launcher.env.NCCL_X=hf_planted_token_456": "launcher.env.NCCL_X holds the value of the environment "
        "variable HF_TOKEN",
        "tracker.tags=[ok,'--key=planted-wandb-value-123']": "tracker.tags[1] holds the value of the environment "
        "variable WANDB_API_KEY",
        "model.name_or_path=planted-wandb-value-123": "model.name_or_path holds the value",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError) as e:
            compose(["launcher=slurm", override])
        assert message in str(e.value), (override, str(e.value))
        assert "planted" not in str(e.value)  # the key and the variable are named, never the value
    # a variable that is not secret-looking may be interpolated
    assert (
        compose(
            ["launcher=slurm", "launcher.env.NCCL_DEBUG=${oc.env:HOME}"]
        ).launcher.env.NCCL_DEBUG
        == os.environ["HOME"]
    )


def test_a_planted_secret_reaches_no_file_of_the_run_the_ledger_or_wandb(tmp_path):
    secret = "planted-secret-7f3a9c"
    env = {**os.environ, "WANDB_API_KEY": secret, "MY_SERVICE_PASSWORD": secret + "-pw"}
    exe = str(Path(sys.executable).parent / "ladder")
    base = [
        "launch",
        "rung=tiny",
        "tracker.mode=offline",
        "trainer.max_steps=2",
        "trainer.save_every=2",
        "trainer.eval_on_save=false",
        "trainer.run_name=s",
    ]
    refused = subprocess.run(
        [exe, *base, f"+launcher.env.HF_AUTH={secret}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and secret not in refused.stdout + refused.stderr, refused.stderr
    refused = subprocess.run(
        [exe, *base, "+launcher.env.NCCL_X=${oc.env:MY_SERVICE_PASSWORD}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and "MY_SERVICE_PASSWORD" in refused.stderr, refused.stderr
    ok = subprocess.run(
        [exe, *base], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert any(p.name == "ladder.db" for p in files) and any("wandb" in p.parts for p in files)
    leaked = [p for p in files if secret.encode() in p.read_bytes()]
    assert leaked == [] and secret not in ok.stdout + ok.stderr


# ---- 2 and 6. #SBATCH values: fullmatch, and no leading '-' -------------------------------
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("launcher.account", "--wrap=id", "starts with '-'"),
        ("launcher.partition", "-p", "starts with '-'"),
        (
            "launcher.partition",
            "gpu\n",
            "cannot carry",
        ),  # `$` in a regex matches before a final newline
        ("launcher.qos", "high\n#SBATCH --wrap=id", "cannot carry"),
        ("launcher.time", "24:00:00\n", "is not a SLURM time"),
        ("launcher.profile", "ib\ntouch x", "launcher.profile="),
    ],
)
def test_sbatch_values_are_refused_not_rewritten(key, value, message, tmp_path):
    from launch.cluster.slurm_script import Point, check, render

    cfg = compose(["launcher=slurm", f"trainer.run_root={tmp_path}"])
    OmegaConf.set_readonly(
        cfg, False
    )  # set what no override could: the value as a YAML file may hold it
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ConfigError, match=message):
        check(cfg, tmp_path / "slurm")
    with pytest.raises(ConfigError):  # render checks too: no script is ever made from such a value
        render(
            cfg,
            [Point(tmp_path / "r", [])],
            name="r",
            log_dir=tmp_path / "slurm",
            submit_dir=tmp_path,
        )


def test_an_env_name_with_a_trailing_newline_is_refused(tmp_path):
    from launch.cluster.slurm_script import check

    cfg = OmegaConf.merge(
        compose(["launcher=slurm"]), {"launcher": {"env": {"NCCL_DEBUG\n": "INFO"}}}
    )
    with pytest.raises(
        ConfigError, match=r"launcher.env.'NCCL_DEBUG\\n': not an environment variable name"
    ):
        check(cfg, tmp_path)


# ---- 9. numeric ranges --------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=nan", "optim.lr=nan must be a finite number"),
        ("optim.lr=inf", "optim.lr=inf must be a finite"),
        ("optim.beta1=1.5", "optim.beta1=1.5 must be in [0, 1)"),
        ("optim.beta2=1.0", "optim.beta2=1.0 must be in [0, 1)"),
        ("optim.beta1=-0.1", "optim.beta1=-0.1 must be in [0, 1)"),
        ("optim.eps=-1e-8", "optim.eps=-1e-08 must be in"),
        ("optim.weight_decay=-0.1", "optim.weight_decay=-0.1 must be in [0, inf)"),
        ("data.max_seq_len=0", "data.max_seq_len=0 must be in (0, inf)"),
        ("rung.assumed_mfu=1.5", "rung.assumed_mfu=1.5 must be in (0, 1]"),
        ("budget.price_per_gpu_hour=nan", "budget.price_per_gpu_hour=nan must be a finite number"),
        ("trainer.seed=-1", "trainer.seed=-1 must be in"),
    ],
)
def test_numeric_values_out_of_range_or_not_finite_are_refused(override, message):
    with pytest.raises(ConfigError) as e:
        validate(compose([override]))
    assert message in str(e.value)


def test_every_numeric_field_of_the_schema_has_a_range():
    from training.config.validate import RANGES

    cfg = OmegaConf.to_container(compose(["rung=8b"]))

    def walk(node, key=""):
        for k, v in node.items():
            if isinstance(v, dict):
                yield from walk(v, f"{key}{k}.")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                yield f"{key}{k}"

    missing = sorted(k for k in walk(cfg) if k not in RANGES)
    assert missing == []


def test_an_invalid_number_fails_at_once_with_no_run_directory(tmp_path):
    proc = ladder_cli("train", *FAST, "optim.lr=nan", "optim.beta1=1.5", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert (
        "optim.lr=nan" in proc.stderr and "optim.beta1=1.5" in proc.stderr
    )  # every problem at once
    assert not (tmp_path / "runs").exists()


# ---- 11. a closed pipe --------------------------------------------------------------------
def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path):
    exe = Path(sys.executable).parent / "ladder"
    # `true` exits at once, so every write of ladder's meets a closed pipe
    proc = subprocess.run(
        ["bash", "-c", f"'{exe}' config rung=tiny | true; echo \"status ${{PIPESTATUS[0]}}\""],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert "status 141" in proc.stdout  # the shell's convention for a reader that went away


# ---- 13. the test cluster's /etc/hosts lines ----------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="writes /etc/hosts")
def test_cluster_teardown_leaves_another_clusters_hosts_lines_alone(tmp_path):
    script = REPO / "tests" / "cluster" / "slurm_cluster.sh"
    tag = subprocess.run(
        ["bash", str(script), "tag", str(tmp_path / "other")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert (
        tag
        != subprocess.run(
            ["bash", str(script), "tag", str(tmp_path / "mine")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    line = f"127.0.1.250 ladder-other-node {tag}"
    with open("/etc/hosts", "a") as f:
        f.write(line + "\n")
    try:
        subprocess.run(
            ["bash", str(script), "down", str(tmp_path / "mine")],
            capture_output=True,
            timeout=120,
            env={**os.environ, "LADDER_SLURM_PORT": "1"},
        )
        assert line in Path("/etc/hosts").read_text().splitlines()
        subprocess.run(
            ["bash", str(script), "down", str(tmp_path / "other")],
            capture_output=True,
            timeout=120,
            env={**os.environ, "LADDER_SLURM_PORT": "1"},
        )
        assert line not in Path("/etc/hosts").read_text().splitlines()
    finally:
        kept = [x for x in Path("/etc/hosts").read_text().splitlines() if x != line]
        Path("/etc/hosts").write_text("\n".join(kept) + "\n")
