"""RLVR prompts in open-instruct's row format, loaded and checked row by row.

    ladder train recipe=grpo                      # data=grpo/tiny -> data=reverse_rlvr
    ladder data inspect recipe=grpo data=rlvr_mix # rows, prompt lengths, verifiers per source
    prompts = load_prompts(cfg.data, tokenizer, max_new_tokens=16)

A row is {"messages": [...the prompt...], "ground_truth": ..., "dataset": "<verifier>"}
(allenai/RLVR-GSM-MATH-IF-Mixed-Constraints and the shipped data=reverse_rlvr alike). The prompt is
the messages up to the last non-assistant turn: a trailing assistant turn (a reference answer some
RLVR sets carry) is not part of what the policy sees. Every problem is reported with the row's
place (file:line, or hub name[split] row i): a missing ground truth, a verifier that does not exist,
a ground truth the verifier cannot read, and a prompt that leaves no room for the answer in
data.max_seq_len.

A mixture (data.sources, the shape SFT mixtures use: training/data/mixture_config.py) makes the prompt
set one mixture round: every source's rows are read and checked, then source s contributes
count_s prompts (round_counts: its weight's share of all the sources' rows, or epochs x its rows),
positions 0 .. count_s - 1 of its own stream of passes, pass e a permutation seeded by
(seed, source name, e) as in training/data/mixture.py. So a weight above a source's natural share
repeats some of its rows, one below it keeps a seeded subset, and changing one source's weight
leaves the other sources' draws as they were. The GRPO batch source then orders the set by its
own seed, epoch by epoch, as it orders plain data; each Prompt names its source.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from training.common.errors import DataError
from training.common.seeds import hash64
from training.data.chat_data import check_messages, iter_jsonl
from training.data.mixture_config import (
    count_problems,
    is_mixture,
    round_counts,
    source_specs,
)
from training.rl.verifiers.registry import check_row_verifier


@dataclass(frozen=True)
class Prompt:
    index: int  # position in the prompt set: with the seed and the step, it seeds this prompt's samples
    key: str  # the row's id, or its place
    where: str  # file:line, for errors raised later (a verifier failing mid-run)
    prompt_ids: list[int]
    ground_truth: object
    verifier: str
    source: str = ""  # the mixture source it came from (data.name for plain data)


def prompt_messages(row: dict, where: str) -> list[dict]:
    msgs = row["messages"]
    end = max((i for i, m in enumerate(msgs) if m["role"] != "assistant"), default=-1)
    if end < 0:
        raise DataError(f"{where}: no user message to prompt with")
    return msgs[: end + 1]


def check_rlvr_row(row: object, where: str) -> None:
    if isinstance(row, dict) and isinstance(row.get("messages"), list):
        # an RLVR row may hold only the prompt: no assistant turn is required
        check_messages(
            {**row, "messages": row["messages"] + [{"role": "assistant", "content": ""}]}, where
        )
    else:
        check_messages(row, where)
    if row.get("ground_truth") in (None, "", []):
        raise DataError(
            f"{where}: no 'ground_truth': an RLVR row needs the answer its verifier checks"
        )
    if not isinstance(row.get("dataset"), str) or not row["dataset"]:
        raise DataError(
            f"{where}: no 'dataset': an RLVR row names its verifier there (e.g. 'gsm8k')"
        )
    check_row_verifier(row["dataset"], row["ground_truth"], where)


def iter_rows(data_cfg):
    """(where, row) for every row: local files line by line, or a hub dataset by name. data_cfg is
    the data node or one mixture source (a SourceSpec has the same attribute names)."""
    if data_cfg.train_files:
        for path in data_cfg.train_files:
            for lineno, row in iter_jsonl(path):
                yield f"{path}:{lineno}", row
    else:
        import datasets

        ds = datasets.load_dataset(data_cfg.hub_name, split=data_cfg.hub_split)
        for i, row in enumerate(ds):
            yield f"{data_cfg.hub_name}[{data_cfg.hub_split}] row {i}", row


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def load_source(spec, tokenizer, max_new_tokens: int, max_seq_len: int, what: str) -> list[Prompt]:
    """Every row of one source (its first spec.max_samples), checked and encoded; index is the
    position within the source until the set is assembled."""
    prompts = []
    for where, row in iter_rows(spec):
        if spec.max_samples is not None and len(prompts) >= spec.max_samples:
            break
        check_rlvr_row(row, where)
        ids = encode_prompt(tokenizer, prompt_messages(row, where))
        if len(ids) + max_new_tokens > max_seq_len:
            raise DataError(
                f"{where}: the prompt is {len(ids)} tokens; with generator.max_new_tokens="
                f"{max_new_tokens} it does not fit in data.max_seq_len={max_seq_len}. "
                "Raise data.max_seq_len, lower generator.max_new_tokens, or drop the row"
            )
        prompts.append(
            Prompt(
                len(prompts),
                str(row.get("id", where)),
                where,
                ids,
                row["ground_truth"],
                check_row_verifier(row["dataset"], row["ground_truth"], where),
                spec.name,
            )
        )
    if not prompts:
        raise DataError(f"no RLVR prompts in {what} ({spec.describe()})")
    return prompts


def load_sources(data_cfg, tokenizer, max_new_tokens: int) -> list[list[Prompt]]:
    """Each source's prompts, in config order (plain data is one source named data.name). Every
    source is read and checked before any is mixed, so a bad row anywhere is found at load time."""
    mixture = is_mixture(data_cfg)
    return [
        load_source(
            spec,
            tokenizer,
            max_new_tokens,
            data_cfg.max_seq_len,
            f"data.sources.{spec.name}" if mixture else f"data={data_cfg.name}",
        )
        for spec in source_specs(data_cfg)
    ]


def _pass(seed: int, name: str, e: int, n: int) -> list[int]:
    """Pass e over a source of n rows: a permutation seeded by (seed, source name, pass), so one
    source's draws do not move when another source changes."""
    order = list(range(n))
    random.Random(hash64(seed, name, e)).shuffle(order)
    return order


def mix(data_cfg, sources: list[list[Prompt]], seed: int = 0) -> list[Prompt]:
    """The prompt set: plain data as read; a mixture as one round (see the module doc)."""
    if not is_mixture(data_cfg):
        return sources[0]
    specs = source_specs(data_cfg)
    rows = [len(s) for s in sources]
    counts = round_counts(specs, rows)
    problems = count_problems(specs, rows, counts)
    if problems:
        raise DataError("; ".join(problems))
    drawn = []
    for spec, prompts, count in zip(specs, sources, counts):
        n = len(prompts)
        for e in range(-(-count // n)):  # the passes the source's count reaches into
            order = _pass(seed, spec.name, e, n) if data_cfg.shuffle else range(n)
            drawn.extend(prompts[j] for j in list(order)[: count - e * n])
    return [
        Prompt(i, p.key, p.where, p.prompt_ids, p.ground_truth, p.verifier, p.source)
        for i, p in enumerate(drawn)
    ]


def load_prompts(data_cfg, tokenizer, max_new_tokens: int, seed: int = 0) -> list[Prompt]:
    """The GRPO prompt set. seed picks a mixture's draws (plain data does not use it)."""
    return mix(data_cfg, load_sources(data_cfg, tokenizer, max_new_tokens), seed)
