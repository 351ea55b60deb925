"""A uniform average of several checkpoints' weights, written as an ordinary checkpoint.

    ladder average runs/a/checkpoints/step_000100 runs/a/checkpoints/step_000150 --out runs/a-avg
    out = average_checkpoints([ckpt_a, ckpt_b], Path("runs/a-avg"))
    ladder train trainer.average_last=3     # the same at the end of a run: average_last below

The last checkpoints of one run, or the same point's seeds (sweep.seeds), averaged as OLMo's
ladders do to cut the noise of a small run. The inputs are checked whole first (their manifests'
sizes and the weights' hashes), then their safetensors headers must agree: the same tensor names,
shapes and dtypes, or one error names the first tensor that differs. The weights are streamed one
tensor at a time (safetensors safe_open, never a pickle): each output tensor is the float32 sum
of the inputs' tensors divided by their number, cast back to its dtype, and appended to a file
planned from the shapes alone (training/engine/consolidate.py, as consolidation writes), so
peak memory is one tensor per input, not a model. The rest (config, tokenizer, ladder_config.yaml)
is copied from the first input; ladder_meta.json records the lineage (`averaged_from`: each
input's path, run, step and content hash), which the registry keeps (its lineage column), and
COMPLETE is written last, as for any checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from training.common.errors import CheckpointError
from training.run.checkpoint import (
    COMPLETE,
    MANIFEST_FORMAT,
    check_checkpoint,
    checkpoints_dir,
    hash_files,
    step_dir,
    step_of,
)

WEIGHTS = ("*.safetensors",)
SKIP = {COMPLETE, "ladder_meta.json", "trainer_state.pt", "model.safetensors.index.json"}


def tensor_specs(ckpt: Path) -> dict[str, tuple[tuple[int, ...], object, Path]]:
    """name -> (shape, dtype, file) from the safetensors headers (no tensor is read)."""
    from safetensors import safe_open

    specs = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            for name in st.keys():
                sl = st.get_slice(name)
                specs[name] = (tuple(sl.get_shape()), sl.get_dtype(), f)
    if not specs:
        raise CheckpointError(f"{ckpt}: no safetensors weights to average")
    return specs


def check_same(paths: list[Path], specs: list[dict]) -> None:
    first = specs[0]
    for p, s in zip(paths[1:], specs[1:]):
        for name in sorted(set(first) | set(s)):
            if name not in s or name not in first:
                where = paths[0] if name not in s else p
                raise CheckpointError(
                    f"cannot average {paths[0]} and {p}: tensor {name} is missing from {where} "
                    "(checkpoints of different models)"
                )
            if first[name][:2] != s[name][:2]:
                raise CheckpointError(
                    f"cannot average {paths[0]} and {p}: tensor {name} is {first[name][0]} "
                    f"{first[name][1]} in one and {s[name][0]} {s[name][1]} in the other"
                )


def average_checkpoints(paths: list[Path], out: Path) -> Path:
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    from training.engine.consolidate import write_streamed

    if len(paths) < 2:
        raise CheckpointError("ladder average: name at least two checkpoints to average")
    paths = [check_checkpoint(p, hashes=WEIGHTS) for p in paths]
    if len({p.resolve() for p in paths}) < len(paths):
        raise CheckpointError("ladder average: a checkpoint is named twice")
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise CheckpointError(f"--out {out}: already exists; name a new directory")
    specs = [tensor_specs(p) for p in paths]
    check_same(paths, specs)
    dtypes = {
        "F32": torch.float32,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "F64": torch.float64,
    }
    plan = {}
    for name, (shape, dtype, _) in specs[0].items():
        if dtype not in dtypes:
            raise CheckpointError(f"{paths[0]}: tensor {name} has dtype {dtype}, not a float")
        plan[name] = (shape, dtypes[dtype])
    tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        handles = [
            {f: safe_open(f, framework="pt") for f in {v[2] for v in s.values()}} for s in specs
        ]

        def fetch(name: str):
            total = None
            for s, h in zip(specs, handles):
                t = h[s[name][2]].get_tensor(name).to(torch.float32)
                total = t if total is None else total.add_(t)
            return total.div_(len(paths)).to(plan[name][1])

        config = AutoConfig.from_pretrained(paths[0])
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        n = sum(int(torch.Size(s).numel()) for s, _ in plan.values())
        write_streamed(tmp, model, plan, fetch, main=True, total_parameters=n)
        for f in sorted(paths[0].iterdir()):  # config, tokenizer, ladder_config.yaml: the first's
            if (
                f.is_file()
                and not f.is_symlink()
                and f.name not in SKIP
                and f.suffix != ".safetensors"
            ):
                if not (tmp / f.name).exists():
                    shutil.copyfile(f, tmp / f.name)
        lineage = [lineage_of(p) for p in paths]
        meta = {
            "step": max(x["step"] for x in lineage),
            "run_name": json.loads((paths[0] / "ladder_meta.json").read_text()).get("run_name")
            if (paths[0] / "ladder_meta.json").is_file()
            else None,
            "averaged_from": lineage,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / "ladder_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        files = [f for f in sorted(tmp.rglob("*")) if f.is_file()]
        manifest = {
            "format": MANIFEST_FORMAT,
            "token": f"{meta['saved_at']} {uuid.uuid4().hex}",
            "files": {
                f.relative_to(tmp).as_posix(): {"size": size, "sha256": digest}
                for f, (size, digest) in zip(files, hash_files(files, fsync=True))
            },
        }
        (tmp / COMPLETE).write_text(json.dumps(manifest, indent=1) + "\n")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def lineage_of(ckpt: Path) -> dict:
    """An input's path, run, step and content hash (as the eval cache keys it)."""
    from training.common.checkpoint_hash import checkpoint_hash

    try:
        meta = json.loads((ckpt / "ladder_meta.json").read_text())
    except (OSError, ValueError):
        meta = {}
    try:
        step = int(meta["step"])
    except (KeyError, TypeError, ValueError):
        step = step_of(ckpt)
    run = meta.get("run_name") if isinstance(meta, dict) else None
    return {
        "path": str(ckpt.resolve()),
        "run_name": run if isinstance(run, str) else None,
        "step": step,
        "content_hash": checkpoint_hash(ckpt),
    }


def average_last(run_dir: Path, cfg, fetch=None) -> Path:
    """trainer.average_last=K at the end of a run, on rank 0 (the one that commits checkpoints):
    the average of the last K scheduled checkpoints (training/config/checkpoint_schedule.py: not a
    preemption's extra save, so a resumed run averages the same steps) written beside them as
    checkpoints/avg_lastK_step_N. The trainer keeps those steps from trainer.keep_last. `fetch`
    (RemoteCheckpoints.fetch) brings back one that is only at trainer.checkpoint_url, as after a
    resume on another machine."""
    from training.config.checkpoint_schedule import average_name, averaged_steps

    steps = averaged_steps(cfg)
    root = checkpoints_dir(run_dir)
    paths = []
    for step in steps:
        path = step_dir(root, step)
        if not (path / COMPLETE).is_file() and fetch is not None:
            path = fetch(step, root)
        if not (path / COMPLETE).is_file():
            raise CheckpointError(
                f"trainer.average_last={len(steps)}: {path} is missing (deleted since it was "
                "saved?); the average of steps " + ", ".join(map(str, steps)) + " needs it"
            )
        paths.append(path)
    return average_checkpoints(paths, root / average_name(len(steps), steps[-1]))
