"""CPU numerics pinned where Ladder asserts losses against checked-in goldens: the test suite and
`make demo` (pin), and the fresh-process golden check and the golden regeneration (pin(exact=True)).

    from training.model.cpu_numerics import pin, describe
    pin()              # before the first tensor op; a variable already set in the environment wins
    pin(exact=True)    # also ATen's baseline kernels: the same bits on every x86-64 CPU
    print(describe())  # "CPU: ATen kernels AVX512, BLAS mkl with MKL_CBWR=COMPATIBLE, 2 threads"
    python -m training.model.cpu_numerics    # the suite's line (the first line `make test` prints)

Why: the same commit trained the tiny model to losses 1.2e-5 apart on an AVX-512 Xeon and an
AVX2-only EPYC, so the golden losses held on one CPU kind only. Measured on one AVX-512 machine
(bench/cpu_numerics.py, bench/RESULTS.md "CPU numerics"), the 20 golden losses move with:
  - MKL's code path (up to 2.7e-5): its GEMMs pick AVX-512, AVX2 or SSE kernels by CPU, and
    another path on AMD. MKL_CBWR=COMPATIBLE fixes the one path every x86-64 CPU runs, Intel or
    not; with it, MKL_ENABLE_INSTRUCTIONS=AVX2 changes not a bit. Pinned for the whole suite.
  - ATen's own kernels (up to 8.3e-6 with MKL pinned): softmax, norms and reductions are compiled
    per ISA and picked at run time. ATEN_CPU_CAPABILITY=default takes the baseline build every
    x86-64 CPU has, and then the losses are the goldens bit for bit. It is not pinned for the whole
    suite: torch's bfloat16 matmul on a CPU refuses to run under it ("pack_vnni2 is only supported
    when avx512 is supported"), and the in-process golden tests compare to 1e-5, which covers the
    measured spread. exact=True pins it where bits are compared: the fresh-process golden test
    and LADDER_UPDATE_GOLDEN=1 (so regenerated goldens are the baseline kernels' on any machine).
  - The thread count: a reduction split over 1 or 2 threads rounds differently (6e-6). 2 is CI's.
oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA) changed nothing: fp32 training on a CPU does not reach oneDNN.
The price is speed: MKL's COMPATIBLE path makes the golden run take 2.1x the CPU time of an
unpinned one, the baseline ATen kernels 1.13x more. Only these entry points pin: a user's
`ladder train` keeps the fastest kernels of its machine.

A variable already set wins (setdefault), so the exact-loss tests can be run under a kernel
choice on purpose, e.g. `ATEN_CPU_CAPABILITY=avx2 pytest tests/test_training.py`.
"""

from __future__ import annotations

import os

# Read by MKL and ATen at their first use, not at import: setting them before the first tensor
# op is enough (tests/test_training.py checks the exact settings in a fresh process).
PINNED_ENV = {"MKL_CBWR": "COMPATIBLE"}
EXACT_ENV = {**PINNED_ENV, "ATEN_CPU_CAPABILITY": "default"}
THREADS = 2


def pin(environ: dict | None = None, exact: bool = False) -> dict:
    """Pin the CPU numerics in this process and in every subprocess it starts (they inherit the
    environment); return the pinned variables as set. OMP_NUM_THREADS is pinned too, for
    single-process subprocesses that are compared with in-process runs (multi-process runs set
    their own count per rank)."""
    env = os.environ if environ is None else environ
    for key, value in (EXACT_ENV if exact else PINNED_ENV).items():
        env.setdefault(key, value)
    env.setdefault("OMP_NUM_THREADS", str(THREADS))
    if environ is None:
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    return {key: env[key] for key in (*EXACT_ENV, "OMP_NUM_THREADS") if key in env}


def describe() -> str:
    """One line: the ATen kernels in use, the BLAS and its reproducibility mode, the thread count."""
    import torch

    config = torch.__config__.show()
    blas = next(
        (
            part.split("=", 1)[1]
            for part in config.replace(",", " ").split()
            if part.startswith("BLAS_INFO=")
        ),
        "unknown",
    )
    used = torch.backends.cpu.get_cpu_capability()
    offered = ""
    if os.environ.get(
        "ATEN_CPU_CAPABILITY"
    ):  # what the CPU would have given: ask a process without it
        import subprocess
        import sys

        env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
        probe = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        offered = f" (this CPU offers {probe.stdout.strip() or 'unknown'})"
    cbwr = os.environ.get("MKL_CBWR")
    return (
        f"CPU: ATen kernels {used}{offered}, BLAS {blas}{f' with MKL_CBWR={cbwr}' if cbwr else ''}, "
        f"{torch.get_num_threads()} threads"
    )


if __name__ == "__main__":
    pin()
    print(describe())
