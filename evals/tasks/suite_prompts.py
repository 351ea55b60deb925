"""The prompts of an eval suite that decontamination checks training data against, and what it cannot.

    prompts, unchecked = suite_prompts(cfg.eval)     # evals/tasks/decontaminate.py calls this

Built-in tasks: the held-out file of `reverse` (each row's messages up to the answer) and the prompts
of `ifeval_lite`. lm-eval tasks (eval.lm_eval.tasks), local or from lm-eval's catalogue: each is
loaded by lm-eval's TaskManager (evals/tasks/lm_harness.py, task_manager_for) and every document of
its eval split is rendered by its own doc_to_text; a group is its leaf tasks. A task whose documents
cannot be loaded here (the hub unreachable or HF_DATASETS_OFFLINE set, and neither the datasets
cache nor a local copy holds them) is returned in `unchecked` with the reason, a group member at a
time, so what can be loaded still is. Nothing is passed as clean that was not read.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from training.data.chat_data import iter_jsonl

Prompt = tuple[str, str, str]  # (task, example id, prompt text)


def suite_prompts(eval_cfg: DictConfig) -> tuple[list[Prompt], list[dict]]:
    """(task, example id, prompt text) for every prompt of the suite, and [{"task", "reason"}] for
    every task whose prompts could not be read."""
    prompts: list[Prompt] = []
    unchecked: list[dict] = []
    for task in eval_cfg.tasks:
        if task == "reverse":
            for line, row in iter_jsonl(eval_cfg.heldout_file):
                text = "\n".join(m["content"] for m in row["messages"] if m["role"] != "assistant")
                prompts.append((task, str(row.get("id", f"line {line}")), text))
        elif task == "ifeval_lite":
            for line, row in iter_jsonl(eval_cfg.instructions_file):
                prompts.append((task, str(row.get("id", f"line {line}")), row["prompt"]))
        else:
            unchecked.append({"task": task, "reason": "no prompt reader for this built-in task"})
    lm = eval_cfg.lm_eval
    if lm.tasks:
        from evals.tasks.lm_harness import check_lm_eval_tasks, task_manager_for

        check_lm_eval_tasks(list(lm.tasks), lm.include_path)  # an unknown name is a config error
        tm = task_manager_for(list(lm.tasks), lm.include_path)
        for name in lm.tasks:
            for leaf, docs, reason in _leaf_prompts(tm, name):
                if docs is None:
                    unchecked.append({"task": leaf, "reason": reason})
                else:
                    prompts += [(leaf, ex_id, text) for ex_id, text in docs]
    return prompts, unchecked


def _reason(e: Exception) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"its documents cannot be loaded here ({type(e).__name__}: {first[:200]})"


def _leaf_prompts(tm, spec, seen: set | None = None):
    """(leaf task, [(id, text)] or None, reason) for a task, group or tag: a group that does not
    load whole is tried member by member, so one member not on this machine leaves the rest checked."""
    from evals.tasks.lm_harness import members

    seen = set() if seen is None else seen
    name = spec if isinstance(spec, str) else str(spec.get("task") or spec.get("group"))
    if name in seen:
        return
    seen.add(name)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    try:
        tasks = tm.load([spec])["tasks"]
    except Exception as e:  # noqa: BLE001 (datasets and lm-eval raise many kinds)
        parts = members(tm.task_index.get(name)) if isinstance(spec, str) else []
        if isinstance(spec, dict) and "group" in spec:
            parts = spec.get("task") or []
        if not parts:
            yield name, None, _reason(e)
        for part in parts:
            yield from _leaf_prompts(tm, part, seen)
        return
    for leaf, task in tasks.items():
        try:
            docs = []
            for i, doc in enumerate(task.eval_docs):
                ex_id = doc.get("id", i) if isinstance(doc, dict) else i
                docs.append((str(ex_id), str(task.doc_to_text(doc))))
        except Exception as e:  # noqa: BLE001
            yield leaf, None, _reason(e)
        else:
            yield leaf, docs, None
