"""The golden run (tests/test_training.py: the tiny SFT model, the golden file's steps) under
each CPU kernel choice this machine can emulate: how far each is from the checked-in goldens, and
what pinning costs in time. The figures behind training/model/cpu_numerics.py and the golden
tolerance (measured when the golden run was 20 steps; it is 10 since the suite's time cut).

    .venv/bin/python bench/cpu_numerics.py                # every choice, one run each
    .venv/bin/python bench/cpu_numerics.py --repeat 3     # median CPU seconds of 3 runs

Each choice runs in a fresh process (ATen and MKL read their settings once). "exact" is what the
goldens are made and checked under; the suite keeps MKL pinned with the machine's own ATen
kernels (the avx2 or avx512 row); the last row pins nothing but the threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
GOLDEN = REPO / "tests" / "golden" / "tiny_sft_losses.json"

RUN = """
import json, sys, torch
sys.path.insert(0, {tests!r})
from conftest import FAST, losses, train_in_process
r = train_in_process([*FAST, "trainer.run_root=" + {root!r}, "trainer.run_name=golden", "trainer.max_steps={steps}",
                      "trainer.save_every=100"])
print(json.dumps({{"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                  "losses": losses(r.run_dir)}}))
"""


def choices() -> dict[str, dict]:
    from training.model.cpu_numerics import EXACT_ENV, THREADS

    pinned = {**EXACT_ENV, "OMP_NUM_THREADS": str(THREADS)}
    out = {
        "exact (goldens, fresh test)": pinned,
        "exact, MKL told AVX2": {**pinned, "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
        "MKL pinned, ATen avx2": {**pinned, "ATEN_CPU_CAPABILITY": "avx2"},
    }
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "avx512f" in flags:
        out["MKL pinned, ATen avx512"] = {**pinned, "ATEN_CPU_CAPABILITY": "avx512"}
    out["nothing pinned but threads"] = {"OMP_NUM_THREADS": str(THREADS)}
    return out


def run(env_over: dict) -> tuple[dict, float, float]:
    # conftest's pin() uses setdefault: the variables given here win; the unpinned case must not
    # inherit the pinned ones either (conftest would set them), so it names them explicitly empty.
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")
    }
    env.update(env_over, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if "ATEN_CPU_CAPABILITY" not in env_over:  # unpinned: the machine's own kernels and MKL path
        env["ATEN_CPU_CAPABILITY"] = native_capability()
        env["MKL_CBWR"] = "AUTO"
    with tempfile.TemporaryDirectory() as root:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                RUN.format(tests=str(REPO / "tests"), root=root, steps=golden_steps()),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall, cpu


_native: str | None = None


def golden_steps() -> int:
    # the run the goldens hold (tests/test_training.py GOLDEN_STEPS wrote them)
    return json.loads(GOLDEN.read_text())["steps"]


def native_capability() -> str:
    global _native
    if _native is None:
        env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        _native = out.stdout.strip().lower()
    return _native


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per choice (alternated); the median time is shown",
    )
    args = ap.parse_args()
    golden = json.loads(GOLDEN.read_text())["losses"]
    results: dict[str, list] = {name: [] for name in choices()}
    for _ in range(args.repeat):  # alternate the choices, so a busy moment hits them alike
        for name, env in choices().items():
            results[name].append(run(env))
    print(
        f"golden run, {golden_steps()} steps; machine: {native_capability()}; load: {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'choice':32} {'ATen':8} {'max |loss - golden|':>20} {'last step':>18} {'CPU s':>8} {'wall s':>8}"
    )
    pinned_cpu = None
    rows = {}
    for name, runs in results.items():
        got = runs[0][0]
        diff = max(abs(a - b) for a, b in zip(got["losses"], golden))
        cpu = statistics.median(r[2] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        pinned_cpu = pinned_cpu or cpu
        print(
            f"{name:32} {got['capability']:8} {diff:20.3g} {got['losses'][-1]:18.15f} {cpu:8.1f} {wall:8.1f}"
        )
        rows[name] = {
            "capability": got["capability"],
            "max_diff": diff,
            "losses": got["losses"],
            "cpu_s": cpu,
            "wall_s": wall,
        }
    unpinned = results["nothing pinned but threads"]
    print(
        f"CPU time, pinned / unpinned: {pinned_cpu / statistics.median(r[2] for r in unpinned):.2f}"
    )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
