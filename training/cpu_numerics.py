"""CPU numerics pinned where Ladder asserts exact losses: the test suite (and with it the golden
regeneration, LADDER_UPDATE_GOLDEN=1) and `make demo`.

    from training.cpu_numerics import pin, describe
    pin()              # before the first tensor op; a variable already set in the environment wins
    print(describe())  # "CPU: ATen kernels DEFAULT (this CPU offers AVX512), BLAS mkl with MKL_CBWR=COMPATIBLE, 2 threads"
    python -m training.cpu_numerics    # the same line, pinned (the first line `make test` prints)

Why: the same commit trained the tiny model to losses 1.2e-5 apart on an AVX-512 Xeon and an
AVX2-only EPYC, so the golden losses held on one CPU kind only. Measured on one AVX-512 machine
(bench/RESULTS.md, "CPU numerics"), the 20 golden losses move with three things:
  - MKL's code path: its GEMMs pick AVX-512, AVX2 or SSE kernels by CPU (and take a slower,
    different path on AMD). MKL_CBWR=COMPATIBLE fixes one path that every x86-64 CPU runs, Intel
    or not; with it, MKL_ENABLE_INSTRUCTIONS=AVX2 or AVX512 no longer changes a single bit.
  - ATen's own kernels (softmax, norms, reductions, element-wise ops) are compiled per ISA and
    picked at run time. ATEN_CPU_CAPABILITY=default takes the baseline build every x86-64 CPU has.
  - The thread count: a reduction split over 1 or 2 threads rounds differently. 2 is CI's count.
oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA) changed nothing: fp32 training on a CPU does not reach oneDNN.
The price is speed: the pinned golden run takes 2.4x the CPU time of an unpinned one (MKL's
COMPATIBLE path 2.1x, ATen's baseline kernels 1.13x more; bench/cpu_numerics.py). Only these
entry points pin: a user's `ladder train` keeps the fastest kernels of its machine.

A variable already set wins (setdefault), so the exact-loss tests can be run under another
kernel choice on purpose, e.g. `ATEN_CPU_CAPABILITY=avx2 pytest tests/test_training.py`, to
measure the spread that the golden tolerances are grounded in.
"""

from __future__ import annotations

import os

# Read by MKL and ATen at their first use, not at import: setting them before the first tensor
# op is enough (checked by tests/test_training.py in a fresh process).
PINNED_ENV = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"}
THREADS = 2


def pin(environ: dict | None = None) -> dict:
    """Pin the CPU numerics in this process and in every subprocess it starts (they inherit the
    environment); return the pinned variables as set. OMP_NUM_THREADS is pinned too, for
    single-process subprocesses that are compared with in-process runs (multi-process runs set
    their own count per rank)."""
    env = os.environ if environ is None else environ
    for key, value in PINNED_ENV.items():
        env.setdefault(key, value)
    env.setdefault("OMP_NUM_THREADS", str(THREADS))
    if environ is None:
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    return {key: env[key] for key in (*PINNED_ENV, "OMP_NUM_THREADS")}


def describe() -> str:
    """One line: the ATen kernels in use, the BLAS and its reproducibility mode, the thread count."""
    import torch

    config = torch.__config__.show()
    blas = next((part.split("=", 1)[1] for part in config.replace(",", " ").split() if part.startswith("BLAS_INFO=")),
                "unknown")
    machine = os.environ.get("ATEN_CPU_CAPABILITY")
    used = torch.backends.cpu.get_cpu_capability()
    offered = ""
    if machine:  # what the CPU would have given: ask a process without the override
        import subprocess
        import sys

        env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                               env=env, capture_output=True, text=True, timeout=120)
        offered = f" (this CPU offers {probe.stdout.strip() or 'unknown'})"
    cbwr = os.environ.get("MKL_CBWR")
    return (f"CPU: ATen kernels {used}{offered}, BLAS {blas}{f' with MKL_CBWR={cbwr}' if cbwr else ''}, "
            f"{torch.get_num_threads()} threads")


if __name__ == "__main__":
    pin()
    print(describe())
