"""`ladder data inspect` for RLVR prompts (data.format=rlvr, the GRPO recipes), without training.

    ladder data inspect recipe=grpo                     # data=grpo/tiny -> data=reverse_rlvr
    ladder data inspect recipe=grpo data=rlvr_mix --json
    report = inspect_rlvr(compose(["recipe=grpo"]))     # the same numbers as a dict

It loads the prompt set exactly as the GRPO batch source does (training/rl/rlvr_data.py load_prompts:
the same checks, so a bad row fails here with its file:line) and reports, per source and in all:
rows read, prompts in the set (a mixture's weights decide how many each source gets), prompt
tokens after the chat template (min / mean / max, against the limit data.max_seq_len -
generator.max_new_tokens that the loader enforces), and prompts per verifier (the rows' `dataset`).
Over the run: prompts drawn (rollout batches x recipe.prompts_per_step) and the epochs of the set.

The document lengths it saves for `ladder plan` (launch/planning/doc_lengths.py) are prompt +
generator.max_new_tokens per prompt of the set: an upper bound on each sampled sequence, since
an answer stops at EOS or at max_new_tokens.
"""

from __future__ import annotations

import math
from collections import Counter

from omegaconf import DictConfig

from launch.planning.doc_lengths import summarize


def _tokens(lengths: list[int]) -> dict:
    return {
        "min": min(lengths, default=0),
        "mean": sum(lengths) / len(lengths) if lengths else 0.0,
        "max": max(lengths, default=0),
    }


def inspect_rlvr(cfg: DictConfig) -> dict:
    from training.config.validate import validate
    from training.data.mixture_config import is_mixture, source_specs
    from training.model.modeling import load_tokenizer
    from training.rl.rlvr_data import load_sources, mix

    validate(cfg, trains=False)  # the data only: where the weights come from does not matter
    max_new = cfg.generator.max_new_tokens
    tokenizer = load_tokenizer(cfg.model)
    sources = load_sources(cfg.data, tokenizer, max_new)
    prompts = mix(
        cfg.data, sources, cfg.trainer.seed
    )  # the set the GRPO batch source draws (its seed)
    in_set = Counter(p.source for p in prompts)
    rows = []
    for spec, src in zip(source_specs(cfg.data), sources):
        lengths = [len(p.prompt_ids) for p in src]
        longest = max(src, key=lambda p: len(p.prompt_ids))
        rows.append(
            {
                "source": spec.name,
                "data": spec.describe(),
                "weight": spec.weight,
                "epochs": spec.epochs,
                "max_samples": spec.max_samples,
                "rows": len(src),
                "prompts": in_set[spec.name],
                "share": in_set[spec.name] / len(prompts),
                "prompt_tokens": _tokens(lengths),
                "longest": longest.where,
                "verifiers": dict(sorted(Counter(p.verifier for p in src).items())),
            }
        )
    batches = math.ceil(cfg.trainer.max_steps / cfg.recipe.ppo_epochs)
    drawn = batches * cfg.recipe.prompts_per_step
    return {
        "data": cfg.data.name,
        "recipe": cfg.recipe.name,
        "format": "rlvr",
        "mixture": is_mixture(cfg.data),
        "max_seq_len": cfg.data.max_seq_len,
        "max_new_tokens": max_new,
        "prompt_limit": cfg.data.max_seq_len - max_new,
        "seed": cfg.trainer.seed,
        "steps": cfg.trainer.max_steps,
        "prompts": len(prompts),
        "prompts_per_step": cfg.recipe.prompts_per_step,
        "num_generations": cfg.recipe.num_generations,
        "ppo_epochs": cfg.recipe.ppo_epochs,
        "prompts_drawn": drawn,
        "epochs_seen": drawn / len(prompts),
        "prompt_tokens": _tokens([len(p.prompt_ids) for p in prompts]),
        "verifiers": dict(sorted(Counter(p.verifier for p in prompts).items())),
        "sources": rows,
        "doc_lengths": summarize([len(p.prompt_ids) + max_new for p in prompts]),
    }


def print_rlvr_report(report: dict) -> None:
    from rich.table import Table

    from launch.console import make_console, num

    console = make_console()
    kind = "mixture" if report["mixture"] else "single-source data"
    table = Table(
        title=f"data={report['data']} ({kind}, rlvr, recipe={report['recipe']}): {report['prompts']:,} "
        f"prompts; a prompt may take {report['prompt_limit']} tokens (data.max_seq_len "
        f"{report['max_seq_len']} - generator.max_new_tokens {report['max_new_tokens']})"
    )
    for col, right in (
        ("source", False),
        ("weight", True),
        ("rows", True),
        ("prompts", True),
        ("share", True),
        ("prompt tokens min/mean/max", True),
        ("verifiers (rows)", False),
        ("longest", False),
    ):
        table.add_column(col, justify="right" if right else "left")
    for r in report["sources"]:
        how = (
            num(r["weight"], 2)
            if r["weight"] is not None
            else f"{num(r['epochs'], 2)} ep"
            if r["epochs"] is not None
            else "-"
        )
        t = r["prompt_tokens"]
        table.add_row(
            r["source"],
            how,
            f"{r['rows']:,}",
            f"{r['prompts']:,}",
            f"{100 * r['share']:.1f}%",
            f"{t['min']} / {t['mean']:.1f} / {t['max']}",
            ", ".join(f"{v} {n:,}" for v, n in r["verifiers"].items()),
            r["longest"].rsplit("/", 1)[-1],
        )  # file:line; --json has the full path
    console.print(table)
    t = report["prompt_tokens"]
    console.print(
        f"prompt set: {report['prompts']:,} prompts, tokens {t['min']} / {t['mean']:.1f} / {t['max']} "
        f"(limit {report['prompt_limit']}); per verifier: "
        + ", ".join(f"{v} {n:,}" for v, n in report["verifiers"].items())
    )
    console.print(
        f"the run's {report['steps']} steps draw {report['prompts_drawn']:,} prompts "
        f"({report['prompts_per_step']} per rollout batch, {report['num_generations']} answers each, "
        f"{report['ppo_epochs']} step(s) per batch): {num(report['epochs_seen'], 3)} epochs of the set."
    )
    console.print(
        "rows: read from the source; prompts: its places in the prompt set (a mixture's weights share "
        "them out); share: of the set; longest: the row of its longest prompt."
    )
