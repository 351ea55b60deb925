"""RLVR prompts in open-instruct's row format, loaded and checked row by row.

    ladder train recipe=grpo                      # data=grpo/tiny -> data=reverse_rlvr
    prompts = load_prompts(cfg.data, tokenizer, max_new_tokens=16)

A row is {"messages": [...the prompt...], "ground_truth": ..., "dataset": "<verifier>"}
(allenai/RLVR-GSM-MATH-IF-Mixed-Constraints and the shipped data=reverse_rlvr alike). The prompt is
the messages up to the last non-assistant turn: a trailing assistant turn (a reference answer some
RLVR sets carry) is not part of what the policy sees. Every problem is reported with the row's
place (file:line, or hub name[split] row i): a missing ground truth, a verifier that does not exist,
a ground truth the verifier cannot read, and a prompt that leaves no room for the answer in
data.max_seq_len.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.chat_data import check_messages, iter_jsonl
from training.errors import DataError
from training.verifiers import check_row_verifier


@dataclass(frozen=True)
class Prompt:
    index: int  # position in the prompt set: with the seed and the step, it seeds this prompt's samples
    key: str  # the row's id, or its place
    where: str  # file:line, for errors raised later (a verifier failing mid-run)
    prompt_ids: list[int]
    ground_truth: object
    verifier: str


def prompt_messages(row: dict, where: str) -> list[dict]:
    msgs = row["messages"]
    end = max((i for i, m in enumerate(msgs) if m["role"] != "assistant"), default=-1)
    if end < 0:
        raise DataError(f"{where}: no user message to prompt with")
    return msgs[:end + 1]


def check_rlvr_row(row: object, where: str) -> None:
    if isinstance(row, dict) and isinstance(row.get("messages"), list):
        # an RLVR row may hold only the prompt: no assistant turn is required
        check_messages({**row, "messages": row["messages"] + [{"role": "assistant", "content": ""}]}, where)
    else:
        check_messages(row, where)
    if row.get("ground_truth") in (None, "", []):
        raise DataError(f"{where}: no 'ground_truth': an RLVR row needs the answer its verifier checks")
    if not isinstance(row.get("dataset"), str) or not row["dataset"]:
        raise DataError(f"{where}: no 'dataset': an RLVR row names its verifier there (e.g. 'gsm8k')")
    check_row_verifier(row["dataset"], row["ground_truth"], where)


def iter_rows(data_cfg):
    """(where, row) for every row: local files line by line, or a hub dataset by name."""
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


def load_prompts(data_cfg, tokenizer, max_new_tokens: int) -> list[Prompt]:
    prompts = []
    for where, row in iter_rows(data_cfg):
        if data_cfg.max_samples is not None and len(prompts) >= data_cfg.max_samples:
            break
        check_rlvr_row(row, where)
        ids = encode_prompt(tokenizer, prompt_messages(row, where))
        if len(ids) + max_new_tokens > data_cfg.max_seq_len:
            raise DataError(f"{where}: the prompt is {len(ids)} tokens; with generator.max_new_tokens="
                            f"{max_new_tokens} it does not fit in data.max_seq_len={data_cfg.max_seq_len}. "
                            "Raise data.max_seq_len, lower generator.max_new_tokens, or drop the row")
        prompts.append(Prompt(len(prompts), str(row.get("id", where)), where, ids, row["ground_truth"],
                              check_row_verifier(row["dataset"], row["ground_truth"], where)))
    if not prompts:
        raise DataError(f"no RLVR prompts in {list(data_cfg.train_files) or data_cfg.hub_name}")
    return prompts
