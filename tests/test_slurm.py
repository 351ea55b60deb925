"""The SLURM launcher against a real SLURM cluster of two nodes on this host (tests/cluster/).

Every job here is a real sbatch job: slurmctld schedules it, slurmd on node n1 and n2 starts it,
srun runs torchrun or the trainer, sacct (slurmdbd + MariaDB) reports how it ended. The cluster
is started once per session and torn down by PID (tests/conftest.py: `slurm_cluster`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import FAST, ladder_cli, losses

pytestmark = pytest.mark.slurm

TINY = [*FAST, "launcher=slurm", "launcher.signal_before_s=0"]


def hydra_quote(value: str) -> str:
    """A value as a single-quoted string of Hydra's override grammar."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hydra_quote_raw(value: str) -> str:
    """A value as a double-quoted string of Hydra's override grammar, backslashes as typed (so
    `\\${` is Hydra's escaped interpolation)."""
    return '"' + value.replace('"', '\\"') + '"'


def launch(cwd: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    proc = ladder_cli("launch", *args, cwd=cwd, timeout=timeout)
    return proc


def status_json(cwd: Path, *args: str) -> list[dict]:
    proc = ladder_cli("status", "--json", *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def wait_for_step(run_dir: Path, step: int, timeout: float = 120) -> None:
    from training.run.heartbeat import read_heartbeat

    deadline = time.time() + timeout
    while time.time() < deadline:
        hb = read_heartbeat(run_dir) or {}
        if hb.get("state") == "running" and (hb.get("step") or 0) >= step:
            return
        time.sleep(0.3)
    raise AssertionError(f"{run_dir} did not reach step {step}: {read_heartbeat(run_dir)}")


def wait_final(cwd: Path, job: str, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        row = status_json(cwd, job)[0]
        if row["state"] not in ("pending", "running"):
            return row
        time.sleep(1.0)
    raise AssertionError(f"job {job} still {row['state']} after {timeout} s")


def sacct(job: str, fields: str) -> list[str]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", fields, "-j", job], capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()


def test_two_node_job_trains_with_torchrun_and_a_slurm_job_evaluates_its_checkpoint(
    slurm_cluster, tmp_path
):
    proc = launch(
        tmp_path,
        *TINY,
        "--wait",
        "rung.nodes=2",
        "rung.engine=ddp",
        "trainer.run_name=two-node",
        "trainer.max_steps=12",
        "trainer.save_every=6",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "completed" in proc.stdout
    run_dir = tmp_path / "runs" / "two-node"
    record = json.loads((run_dir / "launch.json").read_text())
    # SLURM gave the job both nodes, and one torchrun per node made a world of two.
    assert sacct(record["external_id"], "NNodes,NodeList,State") == ["2|n[1-2]|COMPLETED"]
    meta = json.loads((run_dir / "run_meta.json").read_text())
    assert meta["world_size"] == 2
    loss = losses(run_dir)
    assert len(loss) == 12 and loss[-1] < loss[0]
    # The submission is kept beside the run: config snapshot, commit, script.
    assert (run_dir / "launch_config.yaml").is_file() and record["git_commit"]
    assert "#SBATCH --nodes=2" in Path(record["script"]).read_text()

    # The checkpoint is evaluated by a SLURM job of its own, through the same launcher.
    ckpt = run_dir / "checkpoints" / "step_000012"
    ev = ladder_cli(
        "eval",
        str(ckpt),
        "launcher=slurm",
        "eval.max_examples=40",
        "tracker.mode=disabled",
        f"trainer.run_root={tmp_path / 'runs'}",
        "--wait",
        cwd=tmp_path,
        timeout=240,
    )
    assert ev.returncode == 0, ev.stdout + ev.stderr
    eval_job = ev.stdout.split("SLURM job ")[1].split()[0]
    assert sacct(eval_job, "State") == ["COMPLETED"]
    result = json.loads((ckpt / "eval" / "synthetic.json").read_text())
    assert result["tasks"]["reverse"]["n"] == 40 and "reverse/exact_match" in result["scores"]
    # the eval job is in the ledger, as an eval, charged SLURM's elapsed x 1 device to the same team
    from launch.accounting.ledger import Ledger

    jobs = Ledger(tmp_path / "runs" / "ladder.db").jobs()
    [ev_job] = [j for j in jobs if j["kind"] == "eval"]
    assert (
        ev_job["external_id"] == eval_job
        and ev_job["state"] == "completed"
        and ev_job["team"] == jobs[0]["team"]
    )
    [elapsed] = sacct(eval_job, "ElapsedRaw")
    assert (
        ev_job["used_gpu_hours"] == pytest.approx(int(elapsed) / 3600)
        and ev_job["used_gpu_hours"] > 0
    )
    report = ladder_cli("budget", "report", f"trainer.run_root={tmp_path / 'runs'}", cwd=tmp_path)
    assert report.returncode == 0 and "eval: of the used hours" in report.stdout, (
        report.stdout + report.stderr
    )


def test_sweep_runs_as_a_job_array_and_status_shows_it(slurm_cluster, tmp_path):
    proc = launch(
        tmp_path,
        "-m",
        *TINY,
        "--wait",
        "optim.lr=1e-3,2e-3,3e-3",
        "sweep.name=lr-array",
        "trainer.max_steps=6",
        "trainer.save_every=6",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = status_json(tmp_path, "--sweep", "lr-array")
    assert [r["state"] for r in rows] == ["completed"] * 3
    array_ids = {r["slurm_id"].split("_")[0] for r in rows}
    assert len(array_ids) == 1, rows  # one job array ...
    assert sorted(r["slurm_id"].split("_")[1] for r in rows) == [
        "0",
        "1",
        "2",
    ]  # ... of three tasks
    assert [r["run"] for r in rows] == ["lr-array-0", "lr-array-1", "lr-array-2"]
    assert all(r["step"] == 6 and r["used_gpu_hours"] > 0 for r in rows)
    # each point trained with its own learning rate
    from omegaconf import OmegaConf

    lrs = [OmegaConf.load(tmp_path / "runs" / r["run"] / "config.yaml").optim.lr for r in rows]
    assert lrs == [1e-3, 2e-3, 3e-3]
    table = ladder_cli("status", "--sweep", "lr-array", cwd=tmp_path)
    assert table.returncode == 0 and table.stdout.count("completed") == 3, table.stdout


def test_preempted_job_requeues_resumes_and_finishes_with_the_uninterrupted_losses(
    slurm_cluster, tmp_path
):
    common = ["trainer.max_steps=30", "trainer.save_every=10"]
    proc = launch(tmp_path, *TINY, *common, "trainer.run_name=preempted")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = tmp_path / "runs" / "preempted"
    slurm_id = json.loads((run_dir / "launch.json").read_text())["external_id"]
    # The same run uninterrupted, on this machine, with the job's thread count.
    ref = subprocess.Popen(
        [
            str(Path(os.sys.executable).parent / "ladder"),
            "train",
            *FAST,
            *common,
            f"trainer.run_root={tmp_path / 'ref'}",
            "trainer.run_name=ref",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    # 1. Preempted by the scheduler: SLURM sends SIGTERM, the trainer checkpoints, SLURM requeues.
    wait_for_step(run_dir, 8)
    subprocess.run(["scontrol", "requeue", slurm_id], check=True)
    # 2. The time limit is near: SLURM sends USR1 to the batch script (--signal=B:USR1@N), which
    #    has the trainer checkpoint and requeues the job itself.
    wait_for_step(run_dir, 18, timeout=180)
    subprocess.run(["scancel", "--batch", "--signal=USR1", slurm_id], check=True)
    assert ref.wait(timeout=240) == 0, ref.stdout.read()
    row = wait_final(tmp_path, slurm_id, timeout=240)
    assert row["state"] == "completed", row
    log = Path(json.loads((run_dir / "launch.json").read_text())["log"]).read_text()
    assert "DUE TO JOB REQUEUE" in log and "(restart 1)" in log, log
    assert "USR1: checkpointing for requeue" in log and "(restart 2)" in log, log
    assert losses(run_dir) == pytest.approx(losses(tmp_path / "ref" / "ref"), abs=1e-5)
    assert sacct(slurm_id, "State")[0] == "COMPLETED"
    # one job in the ledger, its hours those of all three segments, nothing lost to the preemptions
    assert row["used_gpu_hours"] > 0 and row["waste_gpu_hours"] < 0.5 * row["used_gpu_hours"]


def test_cancelled_job_is_recorded_with_its_waste(slurm_cluster, tmp_path):
    proc = launch(
        tmp_path,
        *TINY,
        "trainer.max_steps=5000",
        "trainer.save_every=1000",
        "trainer.run_name=long",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = tmp_path / "runs" / "long"
    slurm_id = json.loads((run_dir / "launch.json").read_text())["external_id"]
    wait_for_step(run_dir, 3)
    cancel = ladder_cli("cancel", slurm_id, cwd=tmp_path)
    assert cancel.returncode == 0, cancel.stderr
    assert "cancelled" in cancel.stdout
    row = status_json(tmp_path, slurm_id)[0]
    assert row["state"] == "cancelled"
    assert row["used_gpu_hours"] > 0 and row["waste_gpu_hours"] == pytest.approx(
        row["used_gpu_hours"]
    )
    assert sacct(slurm_id, "State")[0].startswith("CANCELLED")


def test_a_job_that_dies_is_marked_failed_with_its_reason_and_the_tail_of_its_log(
    slurm_cluster, tmp_path
):
    # sbatch hands the job the launching environment: the fault makes step 3's loss NaN.
    env = {**os.environ, "LADDER_FAULT": "nan_at:3"}
    exe = str(Path(os.sys.executable).parent / "ladder")
    proc = subprocess.run(
        [exe, "launch", *TINY, "--wait", "trainer.max_steps=10", "trainer.run_name=dies"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = status_json(tmp_path)[0]
    assert row["state"] == "failed"
    reason = row["reason"]
    assert reason.startswith("SLURM FAILED, exit code 2:0"), reason
    assert "non-finite loss" in reason.lower() or "nan" in reason.lower(), reason
    assert (
        "--- last lines of the log ---" in reason and "ladder: step exited with status 2" in reason
    )
    table = ladder_cli("status", cwd=tmp_path)
    assert "failed" in table.stdout and "last lines of the log" in table.stdout


def test_job_asking_for_more_nodes_than_exist_fails_at_once(slurm_cluster, tmp_path):
    start = time.time()
    proc = launch(
        tmp_path,
        *TINY,
        "rung.nodes=3",
        "rung.engine=ddp",
        "trainer.global_batch_tokens=3072",
        "trainer.run_name=too-big",
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert time.time() - start < 30
    assert "SLURM refused the job: Node count specification invalid" in proc.stderr
    assert "Traceback" not in proc.stderr
    row = status_json(tmp_path)[0]
    assert row["state"] == "failed" and "Node count" in row["reason"] and row["used_gpu_hours"] == 0


# Hostile values: each ends the line, closes a quote or substitutes a command, and would leave a
# marker file if any shell ever ran it. {m} is the marker's path.
PAYLOADS = {
    "newline": "x\ntouch {m}",
    "trailing-newline": "gpu\n",
    "subst": "x$(touch {m})",
    "backtick": "x`touch {m}`",
    "squote": "x'; touch {m}; echo '",
    "dquote": 'x"; touch {m}; echo "',
    "option": "--wrap=touch {m}",
    # control characters and rich markup: a terminal escape that retitles the window, a markup tag
    "ctrl-markup": "x\x1b]0;touch {m}\x07[/bold]\x00",
    # very long: past a file name's 255 bytes, with a substitution at the end
    "long": "a" * 300 + "$(touch {m})",
}

# Typed by a user as overrides (they go through compose, the layer that must stop them): nested
# and unknown resolvers are refused in every field; an escaped `${` is carried as text or refused
# by the name and path rules. (payload as typed, the literal it means or None: always refused)
SECRET = "secret-value-12345"  # WANDB_API_KEY's value in this test
TYPED = {
    "interp-nested": ("${{oc.env:${{oc.decode:WANDB_API_KEY}}}}", None),
    "interp-unknown": ("${{ladder_unknown:{m}}}", None),
    "interp-env-secret": ("${{oc.env:WANDB_API_KEY}}", None),
    "interp-escaped": ("cost\\${{USD}}$(touch {m})", "cost${{USD}}$(touch {m})"),
}
HYDRA_KEYS = [
    "hydra.job.name=x",
    "hydra.run.dir=/tmp/x",
    "+hydra.searchpath=[file:///tmp]",
    "hydra/launcher=basic",
    "~hydra.job.chdir",
]
# launcher.env keys that the job owns or that change how the script itself runs
ENV_KEYS = [
    "SLURM_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_TASK_PROLOG",
    "PATH",
    "SHELLOPTS",
    "LD_PRELOAD",
    "PYTHONPATH",
    "BASH_ENV",
    "IFS",
    "CUDA_VISIBLE_DEVICES",
]


def string_fields() -> list[tuple[str, str]]:
    """(key, kind) of every string field of the launcher, trainer, sweep and eval config."""
    import dataclasses
    import typing

    from training.config.schema import (
        EvalConfig,
        LauncherConfig,
        LmEvalConfig,
        SweepConfig,
        TrainerConfig,
    )

    found = []
    for prefix, cls in (
        ("launcher", LauncherConfig),
        ("trainer", TrainerConfig),
        ("sweep", SweepConfig),
        ("eval", EvalConfig),
        ("eval.lm_eval", LmEvalConfig),
    ):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kinds = {
                str: ["str"],
                typing.Optional[str]: ["str"],
                list[str]: ["list"],
                dict[str, str]: ["dict-value", "dict-key"],
            }.get(hints[f.name], [])
            found += [(f"{prefix}.{f.name}", kind) for kind in kinds]
    return found


def hostile_config(
    fields: list[tuple[str, str]], payload: str, markers: Path, run_root: Path, tag: str
):
    """The composed SLURM config with a hostile value in each field (set directly, as a YAML file
    could hold it, so nothing upstream of the script renderer gets a chance to refuse it), and the
    overrides a user would have typed for them."""
    from omegaconf import OmegaConf

    from training.config.compose import compose

    cfg = compose([*TINY, f"trainer.run_root={run_root}"])
    OmegaConf.set_readonly(cfg, False)
    overrides = []
    for key, kind in fields:
        value = payload.format(m=markers / f"{tag}-{key}")
        if kind == "dict-value":
            OmegaConf.update(cfg, key, {"NCCL_X": value}, merge=True)
        elif kind == "dict-key":
            OmegaConf.update(cfg, key, {value: "1"}, merge=True)
        else:
            OmegaConf.update(cfg, key, [value] if kind == "list" else value, merge=False)
        overrides.append(
            f"{key}={hydra_quote(value)}"
            if kind == "str"
            else f"{key}=[{hydra_quote(value)}]"
            if kind == "list"
            else f"+{key}.NCCL_X={hydra_quote(value)}"
        )
    return cfg, overrides


def test_hostile_values_in_every_string_field_never_run_in_a_real_job(slurm_cluster, tmp_path):
    """Every string field, every payload: the renderer refuses the value (naming its key) or the
    script carries it inertly. Scripts pass `bash -n`, and run for real on the cluster (the trainer
    and `ladder eval` then refuse the values): no marker may appear."""
    from omegaconf import OmegaConf

    from launch.cluster.slurm import query, submit
    from launch.cluster.slurm_script import EVAL, TRAIN, Point, render
    from launch.commands.launch_cmd import log_dir_of
    from training.common.errors import ConfigError
    from training.config.compose import compose

    markers = tmp_path / "markers"
    markers.mkdir()
    fields = string_fields()
    assert {
        "launcher.profile",
        "launcher.python",
        "launcher.env",
        "trainer.run_name",
        "trainer.run_root",
        "sweep.name",
        "eval.name",
        "eval.tasks",
    } <= {k for k, _ in fields}
    ids, refused = [], {}
    for name, payload in PAYLOADS.items():
        accepted = []
        for key, kind in fields:  # one at a time: which fields does the renderer refuse?
            cfg, _ = hostile_config([(key, kind)], payload, markers, tmp_path / "runs", name)
            try:  # a NUL in run_root cannot even be resolved: then render() itself must refuse it
                log_dir = log_dir_of(cfg)
            except ValueError:
                log_dir = tmp_path / "runs" / "slurm"
            try:
                render(
                    cfg,
                    [Point(tmp_path / "runs" / "r", [])],
                    name="r",
                    log_dir=log_dir,
                    submit_dir=tmp_path,
                )
                accepted.append((key, kind))
            except ConfigError as e:
                assert (
                    key.split(".")[-1] in str(e)
                    or "run_root" in str(e)
                    or "cannot go on an #SBATCH" in str(e)
                ), (key, str(e))
                refused.setdefault(name, []).append(key)
        # then all the accepted ones at once, in a training job and in an eval job
        cfg, overrides = hostile_config(accepted, payload, markers, tmp_path / "runs", name)
        for entry in (TRAIN, EVAL):
            script = render(
                cfg,
                [Point(tmp_path / "runs" / f"hostile-{name}", overrides)],
                name=f"hostile-{name}",
                log_dir=log_dir_of(cfg),
                submit_dir=tmp_path,
                entry=entry,
            )
            assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0, script
            path = tmp_path / f"{name}-{entry[-1]}.sbatch"
            path.write_text(script)
            ids.append(submit(str(path)))
    counts = {
        "refused": sum(map(len, refused.values())),
        "carried": len(PAYLOADS) * len(fields) - sum(map(len, refused.values())),
    }
    # Typed payloads, through compose as a user's overrides would go, one field at a time
    os.environ["WANDB_API_KEY"] = SECRET
    try:
        for name, (typed, literal) in TYPED.items():
            accepted_cfgs = []
            for key, kind in fields:
                value = typed.format(m=markers / f"{name}-{key}")
                over = (
                    f"{key}={hydra_quote_raw(value)}"
                    if kind == "str"
                    else f"{key}=[{hydra_quote_raw(value)}]"
                    if kind == "list"
                    else f"+{key}.NCCL_X={hydra_quote_raw(value)}"
                    if kind == "dict-value"
                    else f"+{key}.{value}=1"
                )
                try:
                    cfg = compose([*TINY, f"trainer.run_root={tmp_path / 'runs'}", over])
                except ConfigError as e:
                    assert SECRET not in str(e), str(e)
                    counts["refused"] += 1
                    continue
                assert literal is not None and kind != "dict-key", (name, key)  # never accepted
                got = OmegaConf.select(cfg, key)
                got = got[0] if kind == "list" else got["NCCL_X"] if kind == "dict-value" else got
                assert got == literal.format(m=markers / f"{name}-{key}"), (name, key, got)
                try:  # the renderer may still refuse it (an #SBATCH field), naming the key
                    render(
                        cfg,
                        [Point(tmp_path / "runs" / "r", [])],
                        name="r",
                        log_dir=log_dir_of(cfg),
                        submit_dir=tmp_path,
                    )
                except ConfigError as e:
                    assert key.split(".")[-1] in str(e) or "run_root" in str(e), (key, str(e))
                    counts["refused"] += 1
                    continue
                counts["carried"] += 1
                accepted_cfgs.append((key, over))
            if accepted_cfgs:  # all the carried ones, in one real job
                cfg = compose(
                    [*TINY, f"trainer.run_root={tmp_path / 'runs'}", *(o for _, o in accepted_cfgs)]
                )
                script = render(
                    cfg,
                    [Point(tmp_path / "runs" / f"typed-{name}", [o for _, o in accepted_cfgs])],
                    name=f"typed-{name}",
                    log_dir=log_dir_of(cfg),
                    submit_dir=tmp_path,
                )
                assert SECRET not in script
                assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0, (
                    script
                )
                path = tmp_path / f"typed-{name}.sbatch"
                path.write_text(script)
                ids.append(submit(str(path)))
        for over in HYDRA_KEYS:  # refused before Hydra reads them, naming hydra
            with pytest.raises(ConfigError, match="hydra"):
                compose([*TINY, over])
            counts["refused"] += 1
        for env_key in ENV_KEYS:  # refused by the renderer too, naming the key
            cfg, _ = hostile_config([], "", markers, tmp_path / "runs", "env")
            OmegaConf.update(cfg, "launcher.env", {env_key: "1"}, merge=True)
            with pytest.raises(ConfigError, match=f"launcher.env.{env_key}"):
                render(
                    cfg,
                    [Point(tmp_path / "runs" / "r", [])],
                    name="r",
                    log_dir=log_dir_of(cfg),
                    submit_dir=tmp_path,
                )
            counts["refused"] += 1
    finally:
        os.environ.pop("WANDB_API_KEY", None)
    print(
        f"hostile values: {sum(counts.values())} payload x field attempts, {counts['refused']} refused, "
        f"{counts['carried']} carried inertly, none executed (checked below)"
    )
    # the #SBATCH fields and the names that become paths are refused for every payload
    for name in PAYLOADS:
        assert {
            "launcher.partition",
            "launcher.account",
            "launcher.qos",
            "launcher.constraint",
            "launcher.mem",
            "launcher.time",
            "launcher.profile",
        } <= set(refused[name]), (name, refused[name])
    deadline = time.time() + 240
    while time.time() < deadline:
        states = query(ids)
        if len(states) == len(ids) and all(s.final for s in states.values()):
            break
        time.sleep(1.0)
    else:
        raise AssertionError(f"hostile jobs did not finish: {query(ids)}")
    assert all(s.state in ("COMPLETED", "FAILED") for s in states.values()), states  # they ran
    assert sorted(p.name for p in markers.iterdir()) == []
    assert not list(tmp_path.glob("**/touch*"))


def test_dry_run_prints_a_70b_script_and_submits_nothing(slurm_cluster, tmp_path):
    proc = ladder_cli(
        "launch",
        "--dry-run",
        "rung=70b",
        "launcher=slurm",
        "launcher.account=llm",
        "launcher.partition=h100",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in (
        "#SBATCH --nodes=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --account=llm",
        "#SBATCH --partition=h100",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@120",
        "--nproc_per_node=8",
        "--rdzv_backend=c10d",
        "export NCCL_IB_DISABLE=0",
    ):
        assert line in out, line
    assert not (tmp_path / "runs").exists()  # nothing recorded, nothing written
    script = out[out.index("#!/bin/bash") :]
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_secrets_never_enter_the_script(tmp_path):
    env = {**os.environ, "WANDB_API_KEY": "sk-very-secret-123"}
    exe = str(Path(os.sys.executable).parent / "ladder")
    proc = subprocess.run(
        [exe, "launch", "--dry-run", "rung=8b", "launcher=slurm"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "sk-very-secret" not in proc.stdout + proc.stderr
    )  # it reaches jobs through sbatch's environment
    bad = subprocess.run(
        [
            exe,
            "launch",
            "--dry-run",
            "rung=8b",
            "launcher=slurm",
            "+launcher.env.WANDB_API_KEY=sk-very-secret-123",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "launcher.env.WANDB_API_KEY: secrets never go in configs" in bad.stderr
    assert "#!/bin/bash" not in bad.stdout


def test_hours_are_slurms_allocation_not_the_time_someone_looked(slurm_cluster, tmp_path):
    """A job that finished before anyone asked is recorded completed, charged SLURM's elapsed x
    GPUs; a job cancelled while pending costs nothing."""
    # 1. finished before the first `ladder status`: its heartbeat predates that call
    proc = launch(
        tmp_path, *TINY, "trainer.max_steps=4", "trainer.save_every=4", "trainer.run_name=early"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    early = json.loads((tmp_path / "runs" / "early" / "launch.json").read_text())["external_id"]
    deadline = time.time() + 180
    while sacct(early, "State") != ["COMPLETED"] and time.time() < deadline:
        time.sleep(1.0)
    time.sleep(5)  # and then someone looks, late
    row = status_json(tmp_path, early)[0]
    assert row["state"] == "completed", row
    [elapsed] = sacct(early, "ElapsedRaw")
    assert row["used_gpu_hours"] == pytest.approx(
        int(elapsed) / 3600, abs=1.5 / 3600
    )  # 1 device x elapsed
    assert row["waste_gpu_hours"] == 0
    # 2. a job that never left the queue: both nodes are taken by a long 2-node job
    big = launch(
        tmp_path,
        *TINY,
        "rung.nodes=2",
        "rung.engine=ddp",
        "launcher.exclusive=true",
        "trainer.max_steps=5000",
        "trainer.save_every=1000",
        "trainer.run_name=hog",
    )
    assert big.returncode == 0, big.stdout + big.stderr
    hog = json.loads((tmp_path / "runs" / "hog" / "launch.json").read_text())["external_id"]
    wait_for_step(tmp_path / "runs" / "hog", 1)
    queued = launch(tmp_path, *TINY, "trainer.max_steps=4", "trainer.run_name=queued")
    assert queued.returncode == 0, queued.stdout + queued.stderr
    waiting = json.loads((tmp_path / "runs" / "queued" / "launch.json").read_text())["external_id"]
    deadline = time.time() + 60
    while (
        not sacct(waiting, "State") and time.time() < deadline
    ):  # accounting learns of a job a moment late
        time.sleep(0.5)
    assert sacct(waiting, "State") == ["PENDING"]
    time.sleep(3)
    cancel = ladder_cli("cancel", waiting, hog, cwd=tmp_path)
    assert cancel.returncode == 0, cancel.stderr
    rows = {r["slurm_id"]: r for r in status_json(tmp_path, waiting, hog)}
    assert rows[waiting]["state"] == "cancelled" and rows[waiting]["used_gpu_hours"] == 0
    assert rows[waiting]["waste_gpu_hours"] == 0
    [hog_elapsed] = sacct(hog, "ElapsedRaw")
    assert rows[hog]["used_gpu_hours"] == pytest.approx(
        2 * int(hog_elapsed) / 3600, abs=3 / 3600
    )  # 2 nodes


@pytest.mark.postgres
def test_a_slurm_job_recorded_in_a_postgres_ledger(
    slurm_cluster, postgres_server, pg_url, tmp_path
):
    """The SLURM tier once with the team's ledger on PostgreSQL: the launch is checked and
    recorded on the server, `ladder status` finishes the record from sacct, and the password
    (in PGPASSFILE, passed to the job by sbatch with the environment) is in none of its files."""
    from launch.accounting.ledger import Ledger

    ledger = Ledger(pg_url)
    with ledger.transaction() as db:
        ledger.set_budget(db, "default", "month", 50.0)
    proc = launch(
        tmp_path,
        *TINY,
        "--wait",
        "trainer.run_name=pg",
        "trainer.max_steps=4",
        "trainer.save_every=4",
        f"ledger.url={pg_url}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [job] = ledger.jobs()
    assert job["state"] == "completed" and job["launcher"] == "slurm" and job["used_gpu_hours"] > 0
    assert sacct(job["external_id"], "State") == ["COMPLETED"]
    rows = status_json(tmp_path, f"ledger.url={pg_url}")
    assert [(r["run"], r["state"]) for r in rows] == [("pg", "completed")]
    script = Path(json.loads((tmp_path / "runs" / "pg" / "launch.json").read_text())["script"])
    files = {script, *(p for p in tmp_path.rglob("*") if p.is_file())}
    assert (
        script.is_file() and pg_url in script.read_text()
    )  # the URL reaches the job, the password does not
    assert [p for p in files if postgres_server.password.encode() in p.read_bytes()] == []
