"""Shared fixtures. Every test is hermetic: no hub, no network, runs under a temp directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    WANDB_SILENT="true",
    TOKENIZERS_PARALLELISM="false",
)
os.environ.pop("WANDB_API_KEY", None)
# this session's own memo key (training/common/private_key.py), not the user's ~/.cache/ladder one
os.environ.setdefault("LADDER_KEY_DIR", tempfile.mkdtemp(prefix="ladder-keys-"))
# one token cache for the session's runs (xdist workers inherit the controller's), not one per
# test's run root: a fresh root tokenised the tiny SFT data again, 4.4 of a 2-step run's 6.7 CPU s.
# The process that made it removes it (pytest_unconfigure).
TOKEN_CACHE = None
if "LADDER_TOKEN_CACHE" not in os.environ:
    TOKEN_CACHE = os.environ["LADDER_TOKEN_CACHE"] = tempfile.mkdtemp(prefix="ladder-tokens-")
sys.path.insert(0, str(Path(__file__).resolve().parent))
# The Ctrl-C tests press SIGINT at runs in this process and in the processes it starts. A suite
# started as a background job without job control (`make test &` in a script) inherits SIGINT
# ignored, which Ladder keeps, as it should (training/run/stop_signals.py), and which every child
# inherits through exec: those tests then waited on presses nobody heard. The suite takes Ctrl-C.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# 2 threads here and in the processes the tests start, so in-process and subprocess runs round
# alike. The golden runs pin the rest of the CPU numerics in their own processes (golden_env;
# training/model/cpu_numerics.py says what and why): pinned, the whole suite took twice the time.
from training.model.cpu_numerics import THREADS, pin_threads  # noqa: E402

# Under pytest-xdist each worker takes its share of the threads (2 workers: 1 thread each), so
# the workers together never ask for more threads than there are cores: an oversubscribed
# OpenMP pool spins and slows both. The golden runs set their own count (golden_env) regardless.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = str(
        max(1, THREADS // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    )
# Threads that wait at the end of a parallel region sleep rather than spin (libgomp's default spins
# first): the golden runs' 2 threads share the 2 cores with the other worker, and spinning took CPU
# from both. Measured, the golden SFT test beside a busy core: 59 s -> 38 s, 65 -> 38 CPU s; alone,
# and in the numerics (the goldens still match bit for bit), no change. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
pin_threads()

# A fast tiny run: no in-process evals, no step-0 checkpoint, no W&B, unless a test asks.
FAST = [
    "rung=tiny",
    "tracker.mode=disabled",
    "trainer.eval_on_save=false",
    "trainer.save_initial=false",
]


def ladder_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the installed `ladder` command as a user would."""
    exe = Path(sys.executable).parent / "ladder"
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def train_in_process(overrides: list[str]):
    # the trainer with its eval-on-save callback, as the launchers run it
    from launch.train import train
    from training.config.compose import compose

    return train(compose(overrides))


def losses(run_dir: Path) -> list[float]:
    from training.run.metrics import read_metrics

    return [r["loss"] for r in read_metrics(Path(run_dir) / "metrics.jsonl")]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One real tiny run shared by the checkpoint, eval and W&B tests: 150 steps with W&B
    offline, the untrained model saved as step 0, and every checkpoint scored as it is saved."""
    root = tmp_path_factory.mktemp("runs")
    result = train_in_process(
        [
            "rung=tiny",
            f"trainer.run_root={root}",
            "trainer.run_name=shared",
            "trainer.max_steps=150",
            "trainer.save_every=75",
            "eval.max_examples=100",
            "tracker.mode=offline",
        ]
    )
    return result


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real two-node SLURM cluster on this host (tests/cluster/slurm_cluster.sh), for the session.

    Its daemons get ports of their own (from this process's id), so a developer's cluster or a
    second test session on the same host is left alone. SLURM_CONF points the client tools at it."""
    state = tmp_path_factory.mktemp("slurm")
    script = REPO / "tests" / "cluster" / "slurm_cluster.sh"
    env = {**os.environ, "LADDER_SLURM_PORT": str(20000 + (os.getpid() % 400) * 25)}
    up = subprocess.run(
        ["bash", str(script), "up", str(state), "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if up.returncode != 0:
        subprocess.run(["bash", str(script), "down", str(state)], env=env, capture_output=True)
        pytest.fail(
            f"could not start the test SLURM cluster:\n{up.stderr[-3000:]}\n"
            "It needs root and Debian's slurm packages (the script installs them); "
            "run `pytest -m 'not slurm'` to leave these tests out."
        )
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
    os.environ["PATH"] = os.environ["PATH"] + ":/usr/sbin"
    try:
        yield state
    finally:
        subprocess.run(
            ["bash", str(script), "down", str(state)], env=env, capture_output=True, timeout=120
        )
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (tests/cluster/postgres.py): Debian's
    binaries, a private port and data directory, stopped by its PID at the end. Its password
    is in a pgpass file that PGPASSFILE names, the libpq convention a user's login follows."""
    sys.path.insert(0, str(REPO / "tests" / "cluster"))
    from postgres import PostgresServer

    try:
        server = PostgresServer.start()
    except RuntimeError as e:
        pytest.fail(
            f"could not start the test PostgreSQL server: {e}\n"
            "run `pytest -m 'not postgres'` to leave these tests out."
        )
    previous = os.environ.get("PGPASSFILE")
    os.environ["PGPASSFILE"] = str(server.pgpass)
    try:
        yield server
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("PGPASSFILE", None)
        else:
            os.environ["PGPASSFILE"] = previous


@pytest.fixture
def pg_url(postgres_server, request):
    """A fresh, empty database on the shared server, for one test."""
    import re

    name = (
        re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
        + f"_{os.getpid()}_{id(request) % 10000}"
    )
    return postgres_server.create_database(name)


# Two pytest-xdist workers (`make test` runs `-n 2 --dist loadgroup`): a worker is idle for much
# of a test that waits on a subprocess, a SLURM job or a PostgreSQL server, so two keep both cores
# busy. A work unit is a whole file, so a module-scoped fixture is built once, and the files whose
# tests share an expensive session fixture are one unit, so the SLURM cluster and the shared
# trained run are built once. The long units go first, so that no long unit starts last.
# The units are given to xdist by a scheduler of our own: xdist 3.8's `xdist_group` marker
# rewrites a private node id that pytest 9.2 no longer reads, and is silently ignored.
SESSION_GROUPS = {"slurm_cluster": "slurm", "trained_run": "trained_run"}  # fixture -> unit
LONG_FIRST = ("slurm", "trained_run")


def _file_units() -> dict[str, str]:
    """tests/<file> -> its unit: the shared fixture's group if the file uses one, else itself."""
    units = {}
    for f in sorted((REPO / "tests").glob("test_*.py")):
        text = f.read_text()
        used = [group for fixture, group in SESSION_GROUPS.items() if fixture in text]
        units[f"tests/{f.name}"] = used[0] if used else f"tests/{f.name}"
    return units


FILE_UNITS = _file_units()


def _unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return FILE_UNITS.get(path, path)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        unit = _unit(item.nodeid)
        return LONG_FIRST.index(unit) if unit in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: the rest keep their collection order


def pytest_unconfigure(config):
    if TOKEN_CACHE is not None:
        shutil.rmtree(TOKEN_CACHE, ignore_errors=True)


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return UnitScheduling(config, log)
