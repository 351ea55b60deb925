"""Evaluate a checkpoint on an eval suite, from the cache where it can, and register the result.

    ladder eval runs/tiny-sft-reverse/checkpoints/step_000150 [eval=cpu]      # the CLI verb
    python -m evals.runner CKPT --eval-config suite.yaml --out result.json    # a background job

Each task's result is looked up in the eval cache by the checkpoint's content hash, the task
and its version, its settings and the eval code version (evals/store/cache.py). Only the tasks that
miss are computed, and the model is loaded only if a built-in task misses (lm-eval loads its
own from the checkpoint directory): a fully cached suite never touches the weights, and the
log says so ("answered from the cache; no model loaded"). The checkpoint is checked against its
COMPLETE manifest first: every file's size always, and the SHA-256 of the files a model load
reads (weights, config, tokenizer) when a task needs the model. Every result lands in the registry
(evals/store/registry.py) and, for the suite, in <checkpoint>/eval/<suite>.json: per-task scores, the
generation settings and prompt formats, and every example's output.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from evals.store.cache import EVAL_CODE_VERSION, EvalCache, TaskSpec, lm_limit, task_specs
from evals.store.checkpoint_ref import CheckpointRef, read_ref, resolve_checkpoint
from evals.store.registry import Registry, registry_path, run_root_of
from evals.tasks.builtin import BUILTIN_TASKS
from training.common.checkpoint_hash import PATTERNS
from training.common.safe_files import write_atomic
from training.run.checkpoint import check_checkpoint

log = logging.getLogger("ladder.eval")


def result_path(ckpt: Path, suite: str) -> Path:
    return Path(ckpt) / "eval" / f"{suite}.json"


def resolve_device(eval_cfg: DictConfig) -> str:
    if eval_cfg.device != "auto":
        return eval_cfg.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(ckpt: Path, device: str):
    """The one place a checkpoint's weights are loaded for the built-in tasks."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("loading model from %s on %s", ckpt, device)
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    from training.model import lora

    if lora.is_adapter_checkpoint(ckpt):  # base plus adapter, nothing merged on disk
        config = read_ref(ckpt).config  # the base it adapts, checked against ladder_base.json
        return lora.load_adapter_checkpoint(ckpt, config, tokenizer, device, dtype), tokenizer
    if device == "cuda":
        # accelerate's big-model inference: the layers are placed over every visible GPU, then host
        # memory, so a checkpoint larger than one GPU (70B in bf16 is 140 GB) still evaluates; one
        # that fits lands whole on the first GPU, as .to("cuda") would put it.
        model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=dtype, device_map="auto")
    else:
        model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=dtype).to(device)
    return model, tokenizer


def run_builtin(spec: TaskSpec, model, tokenizer, eval_cfg: DictConfig, generator=None) -> dict:
    return BUILTIN_TASKS[spec.name].score(model, tokenizer, eval_cfg, generator)


def generation_backend(eval_cfg: DictConfig, device: str) -> str:
    """hf or vllm, checked before anything is loaded: vllm asked for where it cannot run is an error."""
    from training.common.errors import ConfigError
    from training.rl.generator import resolve_backend
    from training.rl.rl_checks import eval_generator_problems

    name, kind = (
        eval_cfg.generator.name,
        "cuda" if device.startswith("cuda") else device,
    )  # cuda:1 is cuda
    if problems := eval_generator_problems(name, kind):
        raise ConfigError("; ".join(problems))
    return resolve_backend(name, kind)


def default_registry(ckpt: CheckpointRef | Path) -> Registry:
    """The registry a checkpoint's own run config names, else registry.db in its run root."""
    ref = ckpt if isinstance(ckpt, CheckpointRef) else read_ref(ckpt)
    url = ref.select("registry.url")
    timeout = ref.select("registry.busy_timeout_s") or 60.0
    run_root = ref.select("trainer.run_root") or "runs"
    return Registry(
        registry_path(url, ref.path, run_root), timeout, cache_root=run_root_of(ref.path, run_root)
    )


def evaluate_checkpoint(
    ckpt: str | Path | CheckpointRef, eval_cfg: DictConfig, registry: Registry | None = None
) -> dict:
    """Score `ckpt` on the suite; returns scores, per-task results and whether the model was loaded."""
    ref = resolve_checkpoint(
        ckpt
    )  # once: sizes checked (a missing or truncated file stops it here)
    ckpt = ref.path
    device = resolve_device(eval_cfg)
    backend = generation_backend(eval_cfg, device)
    specs = task_specs(eval_cfg)
    t0 = time.time()
    content_hash = ref.content_hash
    registry = registry or default_registry(ref)
    cache = EvalCache(registry.cache_dir)
    keys = {s.name: s.key(content_hash) for s in specs}
    tasks: dict[str, dict] = {}
    for s in specs:
        hit = cache.get(keys[s.name])
        if hit is not None:
            tasks[s.name] = {**hit, "cached": True, "examples_path": str(cache.path(keys[s.name]))}
    missing = [s for s in specs if s.name not in tasks]
    model_loaded = False
    builtin = [s for s in missing if s.kind == "builtin"]
    harness = [s for s in missing if s.kind == "lm_eval"]
    if builtin or harness:
        # The weights are about to be read: check them against COMPLETE's hashes first, so a
        # damaged file is named instead of loaded (or failing deep inside safetensors).
        check_checkpoint(ckpt, hashes=PATTERNS)
    row = registry.register_checkpoint(ref)  # once it is known to be whole
    if builtin:
        from training.rl.generator import eval_generator

        model, tokenizer = load_model(
            ckpt, device
        )  # the reverse task's held-out loss needs it, whatever generates
        model_loaded = True
        generator = eval_generator(
            backend, tokenizer, ckpt, device, eval_cfg.generator.gpu_memory_utilization
        )
        for s in builtin:
            t = time.time()
            tasks[s.name] = {
                **run_builtin(s, model, tokenizer, eval_cfg, generator),
                "seconds": round(time.time() - t, 2),
            }
        del model, generator  # lm-eval loads its own copy next: free this one first
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
    if harness:
        from evals.tasks.lm_harness import run_lm_eval

        t = time.time()
        out = run_lm_eval(
            ckpt, eval_cfg.lm_eval, [s.name for s in harness], lm_limit(eval_cfg), device
        )
        model_loaded = True
        for s in harness:
            tasks[s.name] = {**out[s.name], "seconds": round((time.time() - t) / len(harness), 2)}
    for s in specs:
        res = tasks[s.name]
        res.update(cache_key=keys[s.name], settings=s.settings)
        if not res.get("cached"):
            res["cached"] = False
            res["examples_path"] = str(
                cache.put(keys[s.name], {k: v for k, v in res.items() if k != "cached"})
            )
        registry.record_result(
            keys[s.name],
            content_hash,
            s,
            res,
            Path(res["examples_path"]),
            eval_cfg.name,
            replace=not res["cached"],
        )
    tasks = {s.name: tasks[s.name] for s in specs}  # suite order, whichever came from the cache
    cached = [s.name for s in specs if tasks[s.name]["cached"]]
    if len(cached) == len(specs):
        log.info(
            "eval of %s: all %d task(s) answered from the cache; no model loaded", ckpt, len(specs)
        )
    elif cached:
        log.info("eval of %s: %s answered from the cache", ckpt, ", ".join(cached))
    result = {
        "checkpoint": str(ckpt.resolve()),
        "content_hash": content_hash,
        "step": row["step"],
        "run_name": row["run_name"],
        "adapter": ref.adapter,  # {method, r, alpha} of an adapter checkpoint, else None
        "suite": eval_cfg.name,
        "eval_code_version": EVAL_CODE_VERSION,
        "device": device,
        "generator": backend,
        "seconds": round(time.time() - t0, 2),
        "model_loaded": model_loaded,
        "cached_tasks": cached,
        "registry": str(registry.path),
        "scores": {f"{name}/{r['metric']}": r["score"] for name, r in tasks.items()},
        "tasks": tasks,
    }
    out = result_path(ckpt, eval_cfg.name)
    try:
        out.parent.mkdir(exist_ok=True)
        write_atomic(
            out, json.dumps(result, indent=1) + "\n"
        )  # a temporary name of its own, renamed: never through a planted link (training/common/safe_files.py)
        result["path"] = str(out)
    except OSError:  # a read-only checkpoint: the cache and the registry still hold everything
        result["path"] = tasks[specs[0].name]["examples_path"]
    return result


def main(argv: list[str] | None = None) -> int:
    """A background evaluation (evals/async_eval.py): one checkpoint, one suite, a JSON result."""
    from training.common.errors import EXIT_USER_ERROR, LadderError
    from training.config.schema import EvalConfig

    p = argparse.ArgumentParser(
        prog="python -m evals.runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint")
    p.add_argument(
        "--eval-config", required=True, help="a YAML file holding the eval node (an EvalConfig)"
    )
    p.add_argument(
        "--registry",
        default=None,
        help="registry path or sqlite:/// URL (default: beside the runs)",
    )
    p.add_argument(
        "--out", default=None, help="write the result (without per-example rows) here as JSON"
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="lower this process's CPU priority (beside a training run)",
    )
    args = p.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        eval_cfg = OmegaConf.merge(
            OmegaConf.structured(EvalConfig), OmegaConf.load(args.eval_config)
        )
        registry = Registry(registry_path(args.registry)) if args.registry else None
        result = evaluate_checkpoint(args.checkpoint, eval_cfg, registry)
    except LadderError as e:
        print(f"evals.runner: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    slim = {
        **result,
        "tasks": {
            k: {f: v for f, v in t.items() if f != "examples"} for k, t in result["tasks"].items()
        },
    }
    if args.out:
        write_atomic(args.out, json.dumps(slim, indent=1) + "\n")
    print(json.dumps(slim["scores"]))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
