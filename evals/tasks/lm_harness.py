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

import functools
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


def local_task_index(include_path: str | None) -> dict:
    """The tasks, groups and tags the include path defines, as lm-eval's TaskManager indexes them
    (name -> its Entry: kind and config), without lm-eval's own catalogue: a name listed inside a
    local group is not thereby a local task."""
    if not include_path:
        return {}
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    return TaskManager(include_path=include_path, include_defaults=False).task_index


def members(entry) -> list:
    """The direct members of a group (names or inline task configs) or a tag (names); [] for a task."""
    from lm_eval.tasks._index import Kind

    if entry is None:
        return []
    if entry.kind == Kind.GROUP:
        listed = (entry.cfg or {}).get("task") or []
        return list(listed) if isinstance(listed, list) else [listed]
    if entry.kind == Kind.TAG:
        return sorted(entry.tags)
    return []


def missing_names(tasks, index: dict) -> set[str]:
    """The names the tasks need, themselves or as members of their groups, that `index` lacks."""
    missing: set[str] = set()
    todo, seen = list(tasks), set()
    while todo:
        item = todo.pop()
        if isinstance(item, dict):  # an inline member: its own members, if it is a group
            listed = item.get("task") if "group" in item else None
            todo += listed if isinstance(listed, list) else []
            continue
        if item in seen:
            continue
        seen.add(item)
        if item not in index:
            missing.add(item)
        else:
            todo += members(index[item])
    return missing


@functools.cache
def catalogue_folders() -> dict[str, frozenset[Path]]:
    """Name -> the folders of lm-eval's catalogue (lm_eval/tasks/<folder>) whose YAMLs name it, read
    as text: a fast filter (under a second) that lets a TaskManager index only those folders, where
    the whole catalogue (14,000 entries) takes 15-30 s. A name only listed (`- name`) maps to the
    folders that list it. lm-eval's own index of those folders is what decides and loads."""
    import lm_eval

    root = Path(lm_eval.__file__).parent / "tasks"
    pat = re.compile(
        r"^(?:task|group|tag):\s*['\"]?([\w.\-]+)['\"]?\s*$|^\s+-\s+([\w.\-]+)\s*$", re.M
    )
    defined: dict[str, set[Path]] = {}
    listed: dict[str, set[Path]] = {}
    for p in root.rglob("*.yaml"):
        folder = root / p.relative_to(root).parts[0]
        for m in pat.finditer(p.read_text(errors="ignore")):
            (defined if m.group(1) else listed).setdefault(m.group(1) or m.group(2), set()).add(
                folder
            )
    return {n: frozenset(defined.get(n) or listed[n]) for n in defined.keys() | listed.keys()}


def check_lm_eval_tasks(tasks: list[str], include_path: str | None) -> None:
    """Raise ConfigError naming any task that neither the include path nor lm-eval defines."""
    if not tasks:
        return
    if include_path and not Path(include_path).is_dir():
        raise ConfigError(f"eval.lm_eval.include_path={include_path}: not a directory")
    local = local_task_index(include_path)
    unknown = [t for t in tasks if t not in local and t not in catalogue_folders()]
    if unknown:
        raise ConfigError(
            f"eval.lm_eval.tasks: unknown lm-eval task(s) {unknown}; name tasks from "
            "lm-eval's task list (`lm_eval ls tasks`) or a YAML under eval.lm_eval.include_path"
        )


def task_manager_for(tasks: list[str], include_path: str | None, whole_catalogue: bool = False):
    """A TaskManager that can load `tasks` and every member of their groups: the include path alone
    when it defines them all; else with the catalogue folders that name what it lacks (or, with
    whole_catalogue, all of lm-eval's tasks). The include path comes last, so it overrides."""
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    local = local_task_index(include_path)
    if not missing_names(tasks, local):
        return TaskManager(include_path=include_path, include_defaults=False)
    if whole_catalogue:
        return TaskManager(include_path=include_path, include_defaults=True)
    folders: set[Path] = set()
    while (
        True
    ):  # add the folders of what is still missing, until nothing is or nothing new names it
        paths = sorted(folders) + ([Path(include_path)] if include_path else [])
        tm = TaskManager(include_path=paths, include_defaults=False)
        more = set().union(
            *(catalogue_folders().get(n, ()) for n in missing_names(tasks, tm.task_index))
        )
        if more <= folders:
            return tm
        folders |= more


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

    check_lm_eval_tasks(tasks, lm_cfg.include_path)
    # Indexing lm-eval's own tasks takes ~30 s on a CPU; skipped when the include path defines every
    # task and every member of its groups (a local group may list catalogue tasks: issue #22).
    tm = task_manager_for(list(tasks), lm_cfg.include_path, whole_catalogue=True)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)  # its per-request INFO lines drown ours
    model_args = {"pretrained": str(ckpt), "dtype": "float32" if device == "cpu" else "bfloat16"}
    log.info("lm-eval %s: tasks %s on %s (%s)", lm_eval_version(), tasks, ckpt, device)
    out = lm_eval.simple_evaluate(
        model=adapter_lm(ckpt, lm_cfg, device) or "hf",
        model_args=model_args,  # ignored with an adapter's model, which is built already
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


def adapter_lm(ckpt: Path, lm_cfg, device: str):
    """lm-eval's HF model on a LoRA adapter checkpoint, else None (lm-eval loads the directory).
    An adapter checkpoint holds no base weights, so lm-eval's loader fails on it (no config.json),
    and its peft= argument would load whatever base the adapter_config names, unchecked. Here the
    base is the one `ladder eval` loads (evals/runner.py: load_model), checked against the
    checkpoint's ladder_base.json, with peft's adapter on top: nothing is merged on disk."""
    from training.model import lora

    if not lora.is_adapter_checkpoint(ckpt):
        return None
    from lm_eval.models.huggingface import HFLM

    from evals.runner import load_model  # the one loader of checkpoints for evaluation

    model, tokenizer = load_model(ckpt, device)
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=lm_cfg.batch_size)


def _short(resps) -> str:
    text = str(resps)
    return text if len(text) <= 300 else text[:297] + "..."
