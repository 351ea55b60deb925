"""CPU numerics pinned where Ladder asserts losses against checked-in goldens: every golden run is
a fresh process under golden_env(), and the test suite pins its thread count (pin_threads).

    from training.model.cpu_numerics import golden_env, pin_threads, describe
    subprocess.run([...trainer...], env=golden_env())   # the goldens' bits, on any x86-64 CPU
    pin_threads()      # the suite: 2 threads here and in the processes it starts
    print(describe())  # "CPU: ATen kernels AVX512, BLAS mkl, 2 threads; golden runs: ..."
    python -m training.model.cpu_numerics    # the suite's line (the first line `make test` prints)

Why: the same commit trained the tiny model to losses 1.2e-5 apart on an AVX-512 Xeon and an
AVX2-only EPYC, so the golden losses held on one CPU kind only. Measured on one AVX-512 machine
(bench/cpu_numerics.py, bench/RESULTS.md "CPU numerics"), the 20 golden losses move with:
  - MKL's code path (up to 2.7e-5): its GEMMs pick AVX-512, AVX2 or SSE kernels by CPU, and
    another path on AMD. MKL_CBWR=COMPATIBLE fixes the one path every x86-64 CPU runs, Intel or
    not; with it, MKL_ENABLE_INSTRUCTIONS=AVX2 changes not a bit.
  - ATen's own kernels (up to 8.3e-6 with MKL pinned): softmax, norms and reductions are compiled
    per ISA and picked at run time. ATEN_CPU_CAPABILITY=default takes the baseline build every
    x86-64 CPU has. With both, the losses are the goldens bit for bit.
  - The thread count: a reduction split over 1 or 2 threads rounds differently (6e-6). 2 is CI's.
oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA) changed nothing: fp32 training on a CPU does not reach oneDNN.

Only golden runs are pinned, because pinning is slow: MKL's COMPATIBLE path takes 2.1x the CPU
time of an unpinned tiny run (2.2x measured again under load), the baseline ATen kernels 1.13x
more, and torch's bfloat16 matmul on a CPU refuses to run under ATEN_CPU_CAPABILITY=default
("pack_vnni2 is only supported when avx512 is supported"). Every other test compares runs made
on the same machine with each other (a resume against an uninterrupted run, 2 processes against
1), which needs the same numerics on both sides, not the goldens'. A user's `ladder train` and
`make demo` keep the fastest kernels of their machine.
"""

from __future__ import annotations

import os

# Read by MKL and ATen at their first use, not at import: setting them before the first tensor
# op is enough (tests/test_training.py checks the exact settings in a fresh process).
PINNED_ENV = {"MKL_CBWR": "COMPATIBLE"}
EXACT_ENV = {**PINNED_ENV, "ATEN_CPU_CAPABILITY": "default"}
THREADS = 2


def golden_env(base: dict | None = None) -> dict:
    """The environment of a process whose losses are compared with the goldens (or regenerate
    them): MKL's reproducible path, ATen's baseline kernels and THREADS threads, forced over
    whatever `base` (default: this process's environment) says."""
    return {
        **(os.environ if base is None else base),
        **EXACT_ENV,
        "OMP_NUM_THREADS": str(THREADS),
    }


def pin_threads() -> int:
    """THREADS threads in this process and in the single-process subprocesses it starts (they
    inherit OMP_NUM_THREADS), so that a run in a subprocess and one in process round alike.
    A count already set in the environment wins. Multi-process runs set their own per rank.

    MKL_DYNAMIC=FALSE too: torch.set_num_threads turns MKL's dynamic thread count off in this
    process, but a subprocess that only inherits OMP_NUM_THREADS keeps it on, and MKL then picks
    fewer threads for some GEMM shapes. Measured: the same 20-step tiny run, in process and in a
    subprocess, 3.7e-5 apart from step 16 with it on, bit for bit with it off."""
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    os.environ.setdefault("MKL_DYNAMIC", "FALSE")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    return torch.get_num_threads()


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
    pin_threads()
    golden = " ".join(f"{k}={v}" for k, v in EXACT_ENV.items())
    print(f"{describe()}; golden runs: {golden}, {THREADS} threads")
