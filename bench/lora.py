"""LoRA against full fine-tuning: step time and peak memory of the same SFT job, in one run; with
--dpo, LoRA DPO with the adapter-disabled reference against a separate frozen copy of the base.

    .venv/bin/python bench/lora.py [--steps 8] [--warmup 2] [--shape small|tiny] [--r 16] [--rounds 2]
    .venv/bin/python bench/lora.py --dpo [--steps 8] [--warmup 2] [--rounds 2]

Each mode trains the same Llama (built from config, same seed, same data, same batches) through
Ladder's own entry point (training/run/trainer.py), in a process of its own, one after the other,
never both at once: full fine-tuning (every weight trains, AdamW on all) and LoRA
(model.lora.enabled=true: the base frozen, adapters on every attention and MLP linear layer).
It prints, per mode, the median step time after --warmup steps, tokens/s, the peak resident
memory at the end of the last step (VmHWM: checkpoint saving, which runs after, is not counted),
whole and above the same process's RSS just before the trainer starts (torch, the tokenizer and
the data cost both modes the same), and the model states counted from the live tensors (weights,
a gradient per trainable weight, the optimizer's state) beside what `ladder plan` predicts for
them; then LoRA's figures as ratios of full fine-tuning's. --rounds N alternates the modes N
times (full, lora, full, lora, ...) and takes each mode's median over its rounds: on a machine
shared with other work, the load then falls on both alike.

On a CPU the step time is the FLOPs story (LoRA skips the frozen base's weight gradients: 4N + 6A
per token instead of 6N, training/model/flops.py; and AdamW updates the adapters only), less what
peft's unfused adapter products and additions cost; the memory is the plan's: 16 bytes per
parameter for full fine-tuning against 4 per frozen parameter and 16 per adapter parameter
(launch/planning/memory.py), plus activations, which LoRA does not shrink.

Memory and time are measured in separate runs of each mode. The memory runs (3 steps) set
MALLOC_MMAP_THRESHOLD_=131072: glibc otherwise raises its mmap threshold as large blocks are freed,
keeps one step's freed activations in its heap and reuses them, so a process's RSS (and its peak)
is the allocator's high-water mark, not the tensors alive at once. Measured on the small shape,
one forward and backward of 1,024 tokens: without it, full fine-tuning and LoRA both settle near
1.1 GiB of RSS; with it, at 0.37 and 0.20 GiB between steps. But then every activation is a fresh
mmap whose pages the kernel zeroes, which costs both modes alike and hid LoRA's shorter backward
(one forward and backward: 2.87 s full, 2.84 s LoRA with it; 3.0 and 2.5 s without), so the
timed runs keep glibc's default.

--dpo compares the two references of the same LoRA DPO job (recipe=dpo, built from config, with
recipe.precompute_reference=false on both sides, so the reference runs beside the policy in every
step): `adapter_off`, Ladder's (the policy itself under peft's disable_adapter(), no weights of its
own), against `separate`, a frozen copy of the base built as a full fine-tuning run builds its
reference (training/recipes/reference.py: load_reference_model with LoRA off; validation refuses
that for a LoRA run, so the bench swaps it in). Both start from the same base, so step 1's loss
is ln 2 in both. The reference column is the bytes of the reference's own tensors (0 when it
shares the policy's), beside the plan's (launch/planning/plan_dpo.py: reference_memory).

The small shape (default) is 8 layers of hidden 512 and MLP 1536, about 28M parameters, large
enough that the model states show beside the activations; tiny is the tiny rung's 2M.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHAPES = {
    "tiny": [],
    "small": [
        "model.hidden_size=512",
        "model.intermediate_size=1536",
        "model.num_layers=8",
        "model.num_heads=8",
        "model.num_kv_heads=8",
    ],
}
MiB = 2**20
MEMORY_STEPS = 3  # the memory runs: Adam's state exists from step 1, so step 2 is a steady one
COLUMNS = ("step_s", "tokens_per_s", "peak_mib", "above_start_mib", "states_mib", "reference_mib")
# each section's modes, its baseline first: the ratio row is the second over the first
SECTIONS = {"sft": ("full", "lora"), "dpo": ("separate", "adapter_off")}
DPO = ["recipe=dpo", "model.from_scratch=true", "recipe.precompute_reference=false"]


def status_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (the peak so far) of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def live_states(trainer) -> int:
    """Bytes of the model states alive in a run: every weight, one gradient per trainable weight
    (freed between steps, alive through each backward) and the optimizer's state tensors."""
    import torch

    params = list(trainer.model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    grads = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    optim = sum(
        t.numel() * t.element_size()
        for state in trainer.engine.torch_optimizer.state.values()
        for t in state.values()
        if torch.is_tensor(t)
    )
    return weights + grads + optim


def reference_states(trainer) -> int:
    """Bytes of the reference's own tensors: 0 for none, and for the adapter-disabled reference,
    whose parameters are the policy's."""
    ref = trainer.recipe.reference_model
    if ref is None:
        return 0
    own = {p.data_ptr() for p in trainer.model.parameters()}
    return sum(p.numel() * p.element_size() for p in ref.parameters() if p.data_ptr() not in own)


def separate_reference():
    """Make load_reference_model build a frozen copy of the base, as for full fine-tuning (the
    `separate` mode): the same function with model.lora.enabled=false in the config it reads."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from training.recipes import reference

    ladders = reference.load_reference_model

    def copy_of_base(trainer):
        cfg = OmegaConf.merge(trainer.cfg, {"model": {"lora": {"enabled": False}}})
        keep = ("tokenizer", "device", "world", "layout")
        return ladders(SimpleNamespace(cfg=cfg, **{k: getattr(trainer, k) for k in keep}))

    reference.load_reference_model = copy_of_base  # read at call time by the recipe's prepare()


def overrides(mode: str, args, out: Path, steps: int) -> list[str]:
    lora = ["model.lora.enabled=true", f"model.lora.r={args.r}", "trainer.save_merged=none"]
    return [
        "rung=tiny",
        *SHAPES[args.shape],
        "tracker.mode=disabled",
        "trainer.eval_on_save=false",
        "trainer.save_initial=false",
        f"trainer.max_steps={steps}",
        f"trainer.save_every={steps}",
        f"trainer.run_root={out}",
        f"trainer.run_name={mode}",
        "trainer.log_every=1000",
        "optim.lr=1e-4",  # the same rate for both: the rate changes no step's cost
        *(lora if mode != "full" else []),
        *(DPO if mode in SECTIONS["dpo"] else []),
    ]


def child(mode: str, args, out: Path) -> dict:
    """One mode's run, in this process: its step times and tokens/s, or (--memory) its memory."""
    import torch

    from launch.planning.plan import make_plan, memory_for
    from training.config.compose import compose
    from training.model.shape import model_shape
    from training.run.callbacks import Callback
    from training.run.metrics import read_metrics
    from training.run.trainer import Trainer

    torch.set_num_threads(args.threads)
    steps = MEMORY_STEPS if args.memory else args.steps
    cfg = compose(overrides(mode, args, out, steps))
    m = make_plan(cfg).memory
    # the separate reference is the one a full fine-tuning run of the job would hold
    planned_ref = (
        memory_for(model_shape(cfg), cfg, full=True).reference
        if mode == "separate"
        else m.reference
    )
    if mode == "separate":
        separate_reference()
    seen = {}

    class LastStep(Callback):  # the peak as the last step ends, before the final save
        def on_step_end(self, step: int, metrics: dict) -> None:
            if step == steps:
                seen["peak_kib"] = status_kib("VmHWM")
                seen["states"] = live_states(self.trainer)
                seen["reference"] = reference_states(self.trainer)

    before = status_kib("VmRSS")
    trainer = Trainer(cfg, callbacks=[LastStep()])
    trainer.run()
    params = list(trainer.model.parameters())
    rows = read_metrics(out / mode / "metrics.jsonl")
    if args.memory:
        return {
            "peak_mib": seen["peak_kib"] / 1024,
            "above_start_mib": (seen["peak_kib"] - before) / 1024,
            "states_mib": seen["states"] / MiB,
            "planned_states_mib": (m.params + m.grads + m.optimizer) / MiB,
            "reference_mib": seen["reference"] / MiB,
            "planned_reference_mib": planned_ref / MiB,
        }
    timed = rows[args.warmup :]
    return {
        "params": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "step_s": statistics.median(r["step_time_s"] for r in timed),
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
        "first_loss": rows[0]["loss"],
    }


def run_mode(mode: str, out: str, memory: bool) -> dict:
    env = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": "131072"} if memory else {})}  # module doc
    argv = [*sys.argv[1:], "--child", mode, "--out", out, *(["--memory"] if memory else [])]
    proc = subprocess.run(
        [sys.executable, __file__, *argv], capture_output=True, text=True, check=False, env=env
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"bench/lora.py: the {mode} run failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the timing")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--r", type=int, default=16, help="model.lora.r")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: a shared machine)"
    )
    ap.add_argument("--rounds", type=int, default=1, help="the two modes alternated this often")
    ap.add_argument(
        "--dpo",
        action="store_true",
        help="LoRA DPO: the adapter-disabled reference against a separate copy of the base",
    )
    ap.add_argument(
        "--child", choices=[m for ms in SECTIONS.values() for m in ms], help=argparse.SUPPRESS
    )
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.warmup >= args.steps:
        ap.error(f"--warmup {args.warmup} leaves no step of --steps {args.steps} to time")
    if args.child:
        print(json.dumps(child(args.child, args, Path(args.out))))
        return 0
    section = "dpo" if args.dpo else "sft"
    base, other = modes = SECTIONS[section]
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for i in range(args.rounds):
        for mode in modes:  # one at a time: each its own process
            with tempfile.TemporaryDirectory() as out:
                runs[mode].append(run_mode(mode, out, memory=False))
            print(f"round {i + 1} {mode}: {runs[mode][-1]['step_s']:.3f} s/step", flush=True)
    memory = {}
    for mode in modes:
        with tempfile.TemporaryDirectory() as out:
            memory[mode] = run_mode(mode, out, memory=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    # the same model, data and first batch: step 1's loss is the base's in both (DPO: ln 2, the
    # policy equal to either reference while the adapters' B is zero)
    first = [runs[m][0]["first_loss"] for m in modes]
    assert first[0] == first[1], runs
    assert section == "sft" or abs(first[0] - math.log(2)) < 1e-6, first
    res = {
        mode: {
            **rs[0],
            **memory[mode],
            **{c: statistics.median(r[c] for r in rs) for c in ("step_s", "tokens_per_s")},
        }
        for mode, rs in runs.items()
    }
    f, lo = res[base], res[other]
    what = "DPO, precompute_reference=false" if args.dpo else "SFT"
    print(
        f"{what}, shape {args.shape}: {f['params']:,} parameters; LoRA r={args.r} trains "
        f"{lo['trainable']:,} ({100 * lo['trainable'] / f['params']:.2f}%); {args.steps} steps, "
        f"times: median of the last {args.steps - args.warmup} of {args.rounds} round(s); "
        f"memory: {MEMORY_STEPS} steps; {args.threads} thread(s)"
    )
    w = max(len(m) for m in (*modes, "ratio"))
    print(f"{'':{w}}" + "".join(f"{c:>17}" for c in COLUMNS))
    for mode in modes:
        print(f"{mode:{w}}" + "".join(f"{res[mode][c]:>17.3f}" for c in COLUMNS))
    ratios = [f"{lo[c] / f[c]:>17.3f}" if f[c] else f"{'-':>17}" for c in COLUMNS]
    print(f"{'ratio':{w}}" + "".join(ratios) + f"  ({other} / {base})")
    print(
        "model states and reference as `ladder plan` predicts them (launch/planning/memory.py): "
        + ", ".join(
            f"{m} {res[m]['planned_states_mib']:.1f} MiB + reference "
            f"{res[m]['planned_reference_mib']:.1f} MiB"
            for m in modes
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
