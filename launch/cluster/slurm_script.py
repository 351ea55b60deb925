"""The sbatch script of a SLURM job or sweep, rendered from the composed config.

    script = render(cfg, points=[Point(run_dir, overrides), ...], log_dir=..., submit_dir=...)

One script per job, or per sweep (a job array whose task i runs point i). Its shape:
  #SBATCH lines     nodes, GPUs per node, time, partition, account, QOS from `launcher.*`,
                    `--signal=B:USR1@N` and `--requeue`
  environment       the cluster profile's NCCL/network settings (`launcher.env`, keys from the
                    prefixes in training/validate.ENV_PREFIXES), never secrets: WANDB_API_KEY
                    and the like reach the job from the submitting environment
  the point         its run directory and its overrides, chosen by SLURM_ARRAY_TASK_ID
  srun              one task per node: the trainer itself on a single device, otherwise torchrun
                    with c10d rendezvous on the first node's address
  requeue           USR1 (the time limit is near) is passed to the trainer as SIGTERM: it finishes
                    its step, checkpoints and stops as "preempted"; the script then requeues the
                    job, and the requeued job resumes from that checkpoint (trainer.resume=auto).
                    A preemption by SLURM itself (`scontrol requeue`, a higher-priority job)
                    sends SIGTERM to the trainer directly, and SLURM requeues the job.

Safe by construction: every line that carries a value is made by one of three functions.
  _q(value)          a word of the shell body, quoted with shlex.quote
  _comment(text)     a `#` comment: newlines and every other control or non-ASCII character are
                     escaped, so a value can never end the comment and start a shell line
  _sbatch(flag, v)   an #SBATCH line: sbatch reads these, not the shell, so the value must match
                     a strict character set (fullmatch: a trailing newline does not pass) and may
                     not start with `-` (it would be read as another option, e.g. --wrap)
`render` runs `check` itself, so no script is ever made from values that were not checked. A
bad value is refused with the key to change, never rewritten. Variables the job's environment
sets are only ever expanded inside double quotes, never in arithmetic or eval: the one number
computed from one (the rendezvous port, from SLURM_JOB_ID) is computed after checking it is digits.
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from training.common.errors import ConfigError
from training.common.safe_files import write_atomic
from training.config.names import name_problem
from training.config.paths import path_problems
from training.config.validate import env_problems

# What sbatch's directive parser takes unquoted: no spaces, quotes, newlines, % (a filename
# pattern in --output) or shell syntax; and no leading `-`, which sbatch would take for an option.
# Always used with fullmatch: with match and `$`, "gpu\n" would pass (`$` matches before a final
# newline).
SBATCH_SAFE = re.compile(r"[A-Za-z0-9_./:,+@=][A-Za-z0-9_./:,+@=-]*")
SLURM_TIME = re.compile(r"\d+|\d+-\d{1,2}(:\d{2}){0,2}|\d{1,3}:\d{2}(:\d{2})?")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Point:
    run_dir: Path  # absolute
    overrides: list[str]


def log_dir_of(cfg: DictConfig) -> Path:
    """Where SLURM writes job logs: <run_root>/slurm/<job id>.out."""
    return (Path(cfg.trainer.run_root) / "slurm").resolve()


def job_name(text: str) -> str:
    """A label for squeue, derived from the run or sweep name (the name itself is kept intact)."""
    return ("ladder-" + re.sub(r"[^A-Za-z0-9_.+-]", "_", text))[:64]


def nul_keys(node, prefix: str = "") -> list[str]:
    """The keys whose value (or key) holds a NUL: a YAML file can write one ("\\0")."""
    if isinstance(node, dict):
        return [
            k
            for key, value in node.items()
            for k in (
                [f"{prefix}{key!r}"] if "\0" in str(key) else nul_keys(value, f"{prefix}{key}.")
            )
        ]
    if isinstance(node, list):
        return [
            k
            for i, value in enumerate(node)
            for k in nul_keys(value, f"{prefix.rstrip('.')}[{i}].")
        ]
    return [prefix.rstrip(".")] if isinstance(node, str) and "\0" in node else []


def check(cfg: DictConfig, log_dir: Path) -> None:
    """Every problem with the launcher node and the paths that go into #SBATCH lines, at once."""
    lc, problems = cfg.launcher, []
    for key in ("partition", "account", "qos", "constraint", "mem"):
        value = lc.get(key)
        if value is not None and not SBATCH_SAFE.fullmatch(str(value)):
            problems.append(
                f"launcher.{key}={value!r} "
                + (
                    "starts with '-', which sbatch would read as another option"
                    if str(value).startswith("-")
                    else "has characters an #SBATCH line cannot carry (letters, digits and _ . / : , + @ = - only)"
                )
            )
    if lc.time is not None and not SLURM_TIME.fullmatch(str(lc.time)):
        problems.append(
            f"launcher.time={lc.time!r} is not a SLURM time (minutes, HH:MM:SS or D-HH:MM:SS)"
        )
    if lc.signal_before_s < 0:
        problems.append(f"launcher.signal_before_s={lc.signal_before_s} must be >= 0")
    if lc.cpus_per_task is not None and lc.cpus_per_task < 1:
        problems.append(f"launcher.cpus_per_task={lc.cpus_per_task} must be >= 1")
    if lc.max_parallel is not None and lc.max_parallel < 1:
        problems.append(f"launcher.max_parallel={lc.max_parallel} must be >= 1")
    if not 1024 <= lc.rdzv_port <= 64535:
        problems.append(f"launcher.rdzv_port={lc.rdzv_port} must be in 1024..64535")
    profile_problem = name_problem("launcher.profile", lc.profile)
    if profile_problem:
        problems.append(profile_problem)
    for name in lc.env or {}:  # secret-looking names are refused when the config is composed
        if not ENV_NAME.fullmatch(str(name)):
            problems.append(f"launcher.env.{str(name)!r}: not an environment variable name")
    problems += env_problems(lc.env)  # validate() says it too; a script is never made without it
    problems += path_problems(
        cfg
    )  # compose says it too: a NUL or an over-long path never reaches a script
    problems += [
        f"{key} holds a NUL character, which no shell script can carry (sbatch refuses it)"
        for key in nul_keys(OmegaConf.to_container(cfg, resolve=False))
    ]
    if not SBATCH_SAFE.fullmatch(str(log_dir)):
        problems.append(
            f"trainer.run_root resolves to {str(log_dir.parent)!r}, which has characters an #SBATCH "
            "--output line cannot carry (spaces, quotes, %); choose a plain path"
        )
    if problems:
        raise ConfigError("invalid SLURM launch:\n  - " + "\n  - ".join(problems))


def _comment(text) -> str:
    """A `# ...` line. unicode_escape turns a newline (and every other control or non-ASCII
    character) into a visible escape, so no value can end the comment."""
    return "# " + str(text).encode("unicode_escape").decode("ascii")


def _q(value) -> str:
    return shlex.quote(str(value))


def _sbatch(flag: str, value=None) -> str:
    """An `#SBATCH --flag[=value]` line; a value outside SBATCH_SAFE is refused, not rewritten.
    check() has already refused such values with their keys; this is the last line of defence."""
    if value is None:
        return f"#SBATCH --{flag}"
    if not SBATCH_SAFE.fullmatch(str(value)):
        raise ConfigError(f"--{flag}={str(value)!r} cannot go on an #SBATCH line")
    return f"#SBATCH --{flag}={value}"


def _sbatch_lines(
    cfg: DictConfig, name: str, log_dir: Path, n_points: int, entry: tuple[str, ...]
) -> list[str]:
    lc, r = cfg.launcher, cfg.rung
    array = n_points > 1
    nodes, gpus = (r.nodes, r.gpus_per_node) if entry == TRAIN else (1, 1)
    lines = [
        _sbatch("job-name", job_name(name)),
        _sbatch("nodes", int(nodes)),
        _sbatch("ntasks-per-node", 1),
    ]
    if r.device == "cuda":
        lines.append(_sbatch("gpus-per-node", int(gpus)))
    for key, flag in (
        ("cpus_per_task", "cpus-per-task"),
        ("mem", "mem"),
        ("time", "time"),
        ("partition", "partition"),
        ("account", "account"),
        ("qos", "qos"),
        ("constraint", "constraint"),
    ):
        if lc.get(key) is not None:
            lines.append(_sbatch(flag, lc[key]))
    if lc.exclusive:
        lines.append(_sbatch("exclusive"))
    if array:
        # integers only (`%` is not in SBATCH_SAFE: it is array syntax here)
        lines.append(
            f"#SBATCH --array=0-{n_points - 1}"
            + (f"%{int(lc.max_parallel)}" if lc.max_parallel else "")
        )
    # `%` is a file-name pattern for --output, so this line is built from the checked log_dir
    lines.append(
        f"#SBATCH --output={_sbatch_value(log_dir)}/" + ("%A_%a.out" if array else "%j.out")
    )
    lines.append(
        _sbatch("open-mode", "append")
    )  # a requeued job appends to its log instead of replacing it
    if lc.requeue:
        lines.append(_sbatch("requeue"))
        if lc.signal_before_s:
            lines.append(_sbatch("signal", f"B:USR1@{int(lc.signal_before_s)}"))
    return lines


def _sbatch_value(value) -> str:
    if not SBATCH_SAFE.fullmatch(str(value)):
        raise ConfigError(f"{str(value)!r} cannot go on an #SBATCH line")
    return str(value)


TRAIN = ("-m", "launch.train")  # the trainer with its eval-on-save callback
EVAL = ("-m", "launch.cli", "eval")


def _launch_command(cfg: DictConfig, python: str, entry: tuple[str, ...]) -> list[str]:
    """What srun starts on every node, as shell words (variables expand on the node)."""
    r = cfg.rung
    if entry != TRAIN:  # an eval: one process
        return [_q(python), *entry]
    if r.nodes == 1 and r.gpus_per_node == 1:
        return [_q(python), *entry]
    return [
        _q(python),
        "-m",
        "torch.distributed.run",
        '--nnodes="$SLURM_JOB_NUM_NODES"',
        f"--nproc_per_node={int(r.gpus_per_node)}",
        "--rdzv_backend=c10d",
        '--rdzv_endpoint="$head_addr:$rdzv_port"',
        '--rdzv_id="$SLURM_JOB_ID"',
        *TRAIN,
    ]


def render(
    cfg: DictConfig,
    points: list[Point],
    name: str,
    log_dir: Path,
    submit_dir: Path,
    commit: str | None = None,
    plan_line: str | None = None,
    entry: tuple[str, ...] = TRAIN,
) -> str:
    """The script; `entry` is what each point runs: the trainer, or `ladder eval` (one process,
    one node, and on USR1 simply requeued: finished eval tasks are cached)."""
    check(cfg, log_dir)  # never a script from unchecked values, whoever calls this
    lc = cfg.launcher
    python = lc.python or sys.executable
    out = [
        "#!/bin/bash",
        _comment(
            f"Generated by `ladder launch` at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
            + (f" from commit {commit}" if commit else "")
            + "."
        ),
        "# Every value below the #SBATCH lines is shell-quoted; the #SBATCH values were checked.",
        *([_comment(f"Plan: {plan_line}")] if plan_line else []),
        *_sbatch_lines(cfg, name, log_dir, len(points), entry),
        "",
        "set -euo pipefail",
        # SLURM_JOB_ID goes into arithmetic below, and bash evaluates an array subscript there
        # (`x[$(cmd)]` runs cmd): so a job id is digits, checked before any use.
        '[[ "${SLURM_JOB_ID:-}" =~ ^[0-9]+$ ]] || { echo "ladder: SLURM_JOB_ID is not a job id;'
        ' run this script with sbatch" >&2; exit 2; }',
        f"cd {_q(submit_dir)}",
        "",
        _comment(f"Network environment of the cluster profile {lc.profile}."),
        *[f"export {k}={_q(v)}" for k, v in (lc.env or {}).items()],
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        "",
        "# The sweep point of this task: its run directory and its overrides.",
        'case "${SLURM_ARRAY_TASK_ID:-0}" in',
    ]
    for i, p in enumerate(points):
        out.append(f"  {i}) run_dir={_q(p.run_dir)}")
        out.append("     overrides=(" + " ".join(_q(o) for o in p.overrides) + ") ;;")
    out += [
        '  *) echo "ladder: no sweep point ${SLURM_ARRAY_TASK_ID}" >&2; exit 2 ;;',
        "esac",
        'mkdir -p "$run_dir"',
        'echo "ladder: job ${SLURM_JOB_ID} on ${SLURM_JOB_NODELIST} (restart ${SLURM_RESTART_COUNT:-0}),'
        ' run ${run_dir}"',
        "",
        "# torchrun's rendezvous lives on the first node; the port is unique per job.",
        'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "head_addr=$(getent ahostsv4 \"$head_node\" | awk 'NR == 1 {print $1}')",
        # checked digits above; 10# so that a leading 0 is not read as octal
        f"rdzv_port=$(( {int(lc.rdzv_port)} + 10#$SLURM_JOB_ID % 1000 ))",
        "",
        "# USR1 means the time limit is near: the trainer checkpoints on SIGTERM, then we requeue.",
        "# SIGTERM goes to the step's tasks through SLURM (a SIGTERM to srun itself would kill them).",
        "requeue=0",
        'trap \'requeue=1; echo "ladder: USR1: checkpointing for requeue"; '
        'scancel --signal=TERM "${SLURM_JOB_ID}.0" || true\' USR1',
        "srun --kill-on-bad-exit=1 --ntasks-per-node=1 \\",
        "  "
        + " ".join(_launch_command(cfg, python, entry))
        + ' "${overrides[@]}"'
        + (" trainer.eval_handoff=true" if entry == TRAIN else "")
        + " &",
        "step=$!",
        "status=0",
        'wait "$step" || status=$?',
        'while kill -0 "$step" 2>/dev/null; do status=0; wait "$step" || status=$?; done',
        f'state=$({_q(python)} -m training.run.heartbeat "$run_dir" state)',
        'echo "ladder: step exited with status ${status}, run state ${state}"',
        *(_handoff_lines(python) if entry == TRAIN else []),
        'if [ "$requeue" = 1 ] && [ "$state" = preempted ]; then'
        if entry == TRAIN
        else 'if [ "$requeue" = 1 ]; then',
        '  scontrol requeue "$SLURM_JOB_ID"',
        "  exit 0",
        "fi",
        'exit "$status"',
        "",
    ]
    return "\n".join(out)


def _handoff_lines(python: str) -> list[str]:
    """A finished run's evaluations still running went to pending_evals.json (trainer.eval_handoff):
    submit them as SLURM eval jobs of their own (in the ledger as kind eval) and end this
    allocation, instead of holding its GPUs while they finish. Seconds, not the evals' minutes."""
    return [
        'if [ "$state" = completed ] && [ -f "$run_dir/pending_evals.json" ]; then',
        f'  {_q(python)} -m launch.cli eval --pending "$run_dir" "${{overrides[@]}}" || echo "ladder: the '
        'evaluations left by ${run_dir} were not submitted; run: ladder eval --pending ${run_dir} ..." >&2',
        "fi",
    ]


def submit_script(
    cfg: DictConfig,
    points: list[Point],
    name: str,
    log_dir: Path,
    commit: str | None,
    plan_line: str | None = None,
    entry: tuple[str, ...] = TRAIN,
    what: str = "",
) -> tuple[Path, list[str]]:
    """Render the script, keep it in log_dir and submit it; returns its path and one SLURM id per
    point ("<job>" alone, "<array>_<i>" in an array)."""
    import os

    from launch.cluster.slurm import submit

    script = render(
        cfg,
        points,
        name=name,
        log_dir=log_dir,
        submit_dir=Path.cwd(),
        commit=commit,
        plan_line=plan_line,
        entry=entry,
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.sbatch"
    write_atomic(path, script)  # under the run root: never through a planted link
    job = submit(str(path), what=what)
    return path, [job] if len(points) == 1 else [f"{job}_{i}" for i in range(len(points))]
