"""Tasks through lm-evaluation-harness: its Hugging Face model on the checkpoint directory.

    ladder eval CHECKPOINT eval=cpu          # ladder_reverse_mc, a local YAML + jsonl task, offline
    ladder eval CHECKPOINT eval=tulu3_dev    # MMLU, GSM8K, IFEval, BBH, MATH, HumanEval (clusters)
    results = run_lm_eval(ckpt, eval_cfg.lm_eval, ["ladder_reverse_mc"], limit=20, device="cpu")

Each task's result has the same shape as a built-in task's: a headline metric and score
(0-100), the per-example scores (for paired bootstraps), the task version, the generation
settings and the prompt format lm-eval used. A task that is a group (mmlu, bbh_*) scores as
lm-eval aggregates it, and its examples are those of all its subtasks.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import re
from pathlib import Path

from training.common.errors import ConfigError

log = logging.getLogger("ladder.eval")
_SKIP = ("alias", "name", "sample_len", "samples")


def lm_eval_version() -> str:
    return importlib.metadata.version("lm_eval")


def include_dir_digest(include_path: str | None) -> str | None:
    """A digest of the local task files: editing a YAML or its data changes the cache key."""
    if not include_path:
        return None
    h = hashlib.sha256()
    for p in sorted(Path(include_path).rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(include_path)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def _task_names_in(directory: Path) -> set[str]:
    """Task, group and tag names declared in the YAMLs under a directory, read as text (fast:
    lm-eval's own TaskManager indexes its 14,000 tasks in about half a minute)."""
    names: set[str] = set()
    pat = re.compile(
        r"^(?:task|group|tag):\s*['\"]?([\w.\-]+)['\"]?\s*$|^\s+-\s+([\w.\-]+)\s*$", re.M
    )
    for p in directory.rglob("*.yaml"):
        text = p.read_text(errors="ignore")
        for m in pat.finditer(text):
            names.add(m.group(1) or m.group(2))
    return names


def check_lm_eval_tasks(tasks: list[str], include_path: str | None) -> None:
    """Raise ConfigError naming any task that neither the include path nor lm-eval defines."""
    if not tasks:
        return
    if include_path and not Path(include_path).is_dir():
        raise ConfigError(f"eval.lm_eval.include_path={include_path}: not a directory")
    known = _task_names_in(Path(include_path)) if include_path else set()
    missing = [t for t in tasks if t not in known]
    if missing:
        import lm_eval

        known |= _task_names_in(Path(lm_eval.__file__).parent / "tasks")
        unknown = [t for t in missing if t not in known]
        if unknown:
            raise ConfigError(
                f"eval.lm_eval.tasks: unknown lm-eval task(s) {unknown}; name tasks from "
                "lm-eval's task list (`lm_eval ls tasks`) or a YAML under eval.lm_eval.include_path"
            )


def _headline_metric(task_results: dict) -> tuple[str, str]:
    """The first metric lm-eval reports for a task, e.g. ('acc', 'none') or ('exact_match', 'strict-match')."""
    for key, value in task_results.items():
        if (
            key in _SKIP
            or "_stderr" in key
            or "," not in key
            or not isinstance(value, (int, float))
        ):
            continue
        metric, _, filt = key.partition(",")
        return metric, filt
    raise ConfigError(f"lm-eval reported no numeric metric: {sorted(task_results)}")


def _leaves(name: str, group_subtasks: dict) -> list[str]:
    subs = group_subtasks.get(name)
    if not subs:
        return [name]
    return [leaf for s in subs for leaf in _leaves(s, group_subtasks)]


def run_lm_eval(
    ckpt: Path, lm_cfg, tasks: list[str], limit: int | None, device: str
) -> dict[str, dict]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    check_lm_eval_tasks(tasks, lm_cfg.include_path)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)  # its per-request INFO lines drown ours
    local = _task_names_in(Path(lm_cfg.include_path)) if lm_cfg.include_path else set()
    # Indexing lm-eval's own tasks takes ~30 s on a CPU; skip it when every task is local.
    tm = TaskManager(include_path=lm_cfg.include_path, include_defaults=not set(tasks) <= local)
    model_args = {"pretrained": str(ckpt), "dtype": "float32" if device == "cpu" else "bfloat16"}
    log.info("lm-eval %s: tasks %s on %s (%s)", lm_eval_version(), tasks, ckpt, device)
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args,
        tasks=list(tasks),
        task_manager=tm,
        num_fewshot=lm_cfg.num_fewshot,
        batch_size=lm_cfg.batch_size,
        device=device,
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
        apply_chat_template=lm_cfg.apply_chat_template,
        confirm_run_unsafe_code=lm_cfg.confirm_run_unsafe_code,
    )
    results = {}
    for name in tasks:
        metric, filt = _headline_metric(out["results"][name])
        examples = []
        for leaf in _leaves(name, out.get("group_subtasks", {})):
            for s in out["samples"].get(leaf, []):
                if s.get("filter", "none") != filt or metric not in s:
                    continue
                doc = s.get("doc") or {}
                ex_id = (
                    str(doc.get("id", s["doc_id"])) if isinstance(doc, dict) else str(s["doc_id"])
                )
                examples.append(
                    {
                        "id": ex_id if leaf == name else f"{leaf}/{ex_id}",
                        "score": float(s[metric]),
                        "target": str(s.get("target")),
                        "output": _short(s.get("filtered_resps")),
                    }
                )
        cfg = out["configs"].get(name) or out["configs"].get(
            _leaves(name, out.get("group_subtasks", {}))[0], {}
        )
        results[name] = {
            "metric": metric if filt == "none" else f"{metric}_{filt}",
            "score": 100.0 * float(out["results"][name][f"{metric},{filt}"]),
            "n": len(examples),
            "task_version": f"{out['versions'].get(name, 'group')}/lm_eval-{lm_eval_version()}",
            "generation": {
                "output_type": cfg.get("output_type"),
                "do_sample": False,
                **(cfg.get("generation_kwargs") or {}),
            },
            "prompt_format": {
                "harness": "lm-evaluation-harness",
                "apply_chat_template": lm_cfg.apply_chat_template,
                "num_fewshot": out["n-shot"].get(name, cfg.get("num_fewshot")),
                "doc_to_text": str(cfg.get("doc_to_text")),
                "target_delimiter": cfg.get("target_delimiter"),
                "fewshot_delimiter": cfg.get("fewshot_delimiter"),
            },
            "examples": examples,
        }
    return results


def _short(resps) -> str:
    text = str(resps)
    return text if len(text) <= 300 else text[:297] + "..."
