"""Rank 0's peak memory while sharded weights are consolidated to Hugging Face format: the
whole-state-dict gather the engines used before, against the one-tensor-at-a-time stream.

    OMP_NUM_THREADS=1 .venv/bin/python -m torch.distributed.run --nproc-per-node 2 --standalone \\
        bench/consolidation_memory.py --engine fsdp2 --hidden 1024 --layers 16 --vocab 32000 --out /tmp/cons
    ... bench/consolidation_memory.py --engine fsdp2 --check --out DIR    # tiny model; exit 1 unless the
                                                                          # two methods' files are identical

Both methods save the same sharded model into DIR/stream and DIR/gather. Each one's peak is read
from the kernel: the resident high-water mark is reset (/proc/self/clear_refs, 5) just before it
and VmHWM read just after, minus the resident size before; so it is the memory the save itself
added. gather: fsdp2 get_model_state_dict(full_state_dict, cpu_offload) then save_pretrained
(what EngineBackend.model_state feeds it); deepspeed_zero3 every parameter gathered in turn into one state
dict on rank 0, then save_pretrained. stream: EngineBackend.save_model (training/engine/consolidate.py).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from training.config.compose import compose  # noqa: E402
from training.config.validate import validate  # noqa: E402
from training.engine import distributed  # noqa: E402
from training.engine.engines import EngineBackend, make_engine  # noqa: E402
from training.model.modeling import build_model, load_tokenizer  # noqa: E402


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measured(fn) -> tuple[float, float]:
    """(seconds, MiB the call added to this process's peak resident memory)."""
    dist.barrier()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    before = rss_kib("VmRSS")
    t0 = time.perf_counter()
    fn()
    dist.barrier()
    return time.perf_counter() - t0, (rss_kib("VmHWM") - before) / 1024


def gather_then_save(engine, model, out: Path) -> None:
    """The consolidation the engines did before streaming: the whole state dict on rank 0."""
    if engine.name == "deepspeed_zero3":
        import deepspeed

        sd = {}
        for name, p in engine.module.module.named_parameters():
            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                if engine.world.main:
                    sd[name] = p.detach().to("cpu", copy=True)
    else:
        sd = EngineBackend.model_state(engine)
    if engine.world.main:
        model.save_pretrained(out, state_dict=sd, safe_serialization=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", default="fsdp2", choices=["fsdp2", "deepspeed_zero3"])
    ap.add_argument("--hidden", type=int, default=None, help="default: the tiny model's shape")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--intermediate", type=int, default=None, help="default: 2.75 x hidden")
    ap.add_argument("--vocab", type=int, default=None, help="default: the tokenizer's")
    ap.add_argument(
        "--check", action="store_true", help="exit 1 unless both methods write identical files"
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    world = distributed.env_world()
    over = [
        "rung=tiny",
        f"rung.engine={args.engine}",
        f"rung.gpus_per_node={world.size}",
        "tracker.mode=disabled",
    ]
    if args.hidden:  # a bigger Llama: 64-dim heads, as in Llama 3
        over += [
            f"model.hidden_size={args.hidden}",
            f"model.num_heads={args.hidden // 64}",
            f"model.num_kv_heads={args.hidden // 64}",
            f"model.intermediate_size={args.intermediate or int(2.75 * args.hidden)}",
        ]
    if args.layers:
        over.append(f"model.num_layers={args.layers}")
    if args.vocab:
        over.append(f"model.vocab_size={args.vocab}")
    cfg = compose(over)
    layout = validate(cfg, world_size=world.size)
    distributed.init(world, "cpu", 1800.0)
    tok = load_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, "cpu", seed=0)
    engine = make_engine(cfg, model, lambda ps: torch.optim.AdamW(ps, lr=1e-3), world, layout)
    out = Path(args.out)
    dirs = {m: out / f"{args.engine}-{m}" for m in ("stream", "gather")}
    if world.main:
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    params = (
        sum(p.numel() for p in model.parameters())
        if args.engine == "fsdp2"
        else sum(p.ds_numel for p in engine.module.module.parameters())
    )
    largest = max(p.numel() if args.engine == "fsdp2" else p.ds_numel for p in model.parameters())
    res = {
        "engine": args.engine,
        "world_size": world.size,
        "params": params,
        "model_mib": params * 4 / 2**20,
        "largest_tensor_mib": largest * 4 / 2**20,
    }
    s_time, s_peak = measured(lambda: engine.save_model(dirs["stream"], model))
    g_time, g_peak = measured(lambda: gather_then_save(engine, model, dirs["gather"]))
    res.update(
        stream_s=round(s_time, 2),
        stream_peak_mib=round(s_peak, 1),
        gather_s=round(g_time, 2),
        gather_peak_mib=round(g_peak, 1),
    )
    ok = True
    if world.main:
        names = sorted(p.name for p in dirs["gather"].iterdir())
        same = names == sorted(p.name for p in dirs["stream"].iterdir()) and all(
            filecmp.cmp(dirs["gather"] / n, dirs["stream"] / n, shallow=False) for n in names
        )
        res.update(files=names, identical=same)
        ok = same or not args.check
        print(json.dumps(res), flush=True)
    distributed.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
