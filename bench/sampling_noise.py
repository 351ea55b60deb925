"""Sampling noise for one decoded token: the old per-row host generators against the on-device hash.

    .venv/bin/python bench/sampling_noise.py [--rows 128] [--vocab 128256] [--repeats 7]

Both paths make (rows x vocab) Gumbel noise and leave it on the device in float32, as the sampler
adds it to the logits. "host" is what SeededSampler did before issue #23: one torch.Generator per
row, float64 uniforms over the whole vocabulary, -log(-log(u)) on the host, then a copy to the
device. "hash" is training/rl/sampling_noise.gumbel_noise, made on the device from the keys.
Each path runs --repeats times after one warm-up; the median is printed, with the ratio measured
in this same run. It runs on the CPU, and on CUDA as well where a GPU is visible.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.common.seeds import seed_of  # noqa: E402
from training.rl.sampling_noise import gumbel_noise, key_tensor  # noqa: E402


def host_noise(gens: list[torch.Generator], vocab: int, device) -> torch.Tensor:
    """The pre-#23 path, as SeededSampler had it."""
    u = torch.stack([torch.rand(vocab, generator=g, dtype=torch.float64) for g in gens])
    gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))
    return gumbel.to(device, torch.float32)


def median_seconds(fn, device, repeats: int) -> float:
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    once()  # warm-up: allocator, kernels
    return statistics.median(once() for _ in range(repeats))


def time_device(device, keys: list[int], vocab: int, repeats: int) -> tuple[float, float]:
    """Median seconds per token of the host path and of the hash path on `device`."""
    # the generators are made once per batch, as the sampler made them; each call draws the next
    # token's noise from them, as each decoding step did
    gens = [torch.Generator().manual_seed(k) for k in keys]
    key_t = key_tensor(keys, device)
    position = iter(range(10**9))
    host = median_seconds(lambda: host_noise(gens, vocab, device), device, repeats)
    hashed = median_seconds(lambda: gumbel_noise(key_t, next(position), vocab), device, repeats)
    return host, hashed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=128_256)  # Llama 3's
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()

    keys = [seed_of(0, 1, i // 8, i % 8) for i in range(a.rows)]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"rows={a.rows} vocab={a.vocab} repeats={a.repeats} threads={torch.get_num_threads()}")
    for device in devices:
        host, hashed = time_device(device, keys, a.vocab, a.repeats)
        print(
            f"{device.type}: host generators {host * 1e3:.1f} ms, on-device hash "
            f"{hashed * 1e3:.1f} ms per token; host / hash = {host / hashed:.2f}"
        )


if __name__ == "__main__":
    main()
