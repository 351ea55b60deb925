"""Start multi-process runs the way a launcher does: torchrun, one free port per run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import FAST


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra) -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1")  # two ranks on two cores: no oversubscription
    e.pop("LADDER_FAULT", None)
    e.update(extra)
    return e


def torchrun_cmd(
    nproc: int, overrides: list[str], port: int | None = None, nnodes: int = 1
) -> list[str]:
    port = port or free_port()
    if nnodes == 1:
        where = (
            ["--standalone"]
            if port is None
            else ["--master-addr", "127.0.0.1", "--master-port", str(port)]
        )
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(nproc),
            *where,
            "-m",
            "launch.train",
            *overrides,
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(nnodes),
        "--nproc-per-node",
        str(nproc),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        f"ladder-{port}",
        "-m",
        "launch.train",
        *overrides,
    ]


def run_overrides(
    root: Path,
    name: str,
    steps: int,
    engine: str = "single",
    procs: int = 1,
    nodes: int = 1,
    save_every: int = 4,
) -> list[str]:
    return [
        *FAST,
        f"trainer.run_root={root}",
        f"trainer.run_name={name}",
        f"trainer.max_steps={steps}",
        f"trainer.save_every={save_every}",
        f"rung.engine={engine}",
        f"rung.gpus_per_node={procs}",
        f"rung.nodes={nodes}",
    ]


def run(cmd: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=kw.pop("env", env()), **kw
    )
    return proc
