"""Chat data in the `messages` format: load, validate row by row, tokenize with loss masks.

    from training.data.chat_data import load_documents
    docs = load_documents(cfg.data, tokenizer)   # list of (input_ids, labels)

Local jsonl files are checked line by line before `datasets` loads them, so a malformed
row is reported as `file:line: what is wrong`. Hub datasets load by name with `datasets`
and are checked the same way, named by dataset, split and row index.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import datasets
from omegaconf import DictConfig

from training.common.errors import DataError

ROLES = {"system", "user", "assistant"}
IGNORE = -100


def check_messages(row: object, where: str) -> None:
    if not isinstance(row, dict):
        raise DataError(
            f"{where}: expected a JSON object with a 'messages' list, got {type(row).__name__}"
        )
    msgs = row.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise DataError(
            f"{where}: 'messages' must be a non-empty list of {{role, content}} objects"
        )
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or set(m) - {"role", "content"} - {"name"}:
            raise DataError(f"{where}: messages[{i}] must be an object with 'role' and 'content'")
        if m.get("role") not in ROLES:
            raise DataError(
                f"{where}: messages[{i}].role={m.get('role')!r}; expected one of {sorted(ROLES)}"
            )
        if not isinstance(m.get("content"), str):
            raise DataError(f"{where}: messages[{i}].content must be a string")
    if not any(m["role"] == "assistant" for m in msgs):
        raise DataError(f"{where}: no assistant message, so nothing to train on")


def iter_jsonl(path: str):
    """Yield (line number, row) for each non-blank line; a line that is not JSON is named by
    file and line. Every jsonl reader of the project goes through here."""
    try:
        f = open(path, encoding="utf-8-sig")  # -sig: a byte-order mark is not JSON's column 1
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})"
                ) from None


def check_jsonl(path: str, check=None) -> int:
    """Validate every line of a local jsonl file with `check(row, where)` (chat messages by
    default); return the number of rows."""
    check = check or check_messages
    n = 0
    for lineno, row in iter_jsonl(path):
        check(row, f"{path}:{lineno}")
        n += 1
    if n == 0:
        raise DataError(f"{path}: no rows")
    return n


def load_rows(data_cfg: DictConfig, check=None) -> datasets.Dataset:
    """Local jsonl files (checked line by line first) or a hub dataset (checked row by row),
    with `check(row, where)`: chat messages by default, preference pairs for DPO."""
    check = check or check_messages
    if data_cfg.train_files:
        files = list(data_cfg.train_files)
        for path in files:
            check_jsonl(path, check)
        ds = datasets.load_dataset("json", data_files=files, split="train")
    else:
        ds = datasets.load_dataset(data_cfg.hub_name, split=data_cfg.hub_split)
        for i, row in enumerate(ds):
            check(row, f"{data_cfg.hub_name}[{data_cfg.hub_split}] row {i}")
    if data_cfg.max_samples is not None:
        ds = ds.select(range(min(data_cfg.max_samples, len(ds))))
    return ds


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Render the conversation; return its text and the character spans of assistant turns.

    Each span runs from the end of the generation prompt to the end of the rendered turn,
    so it includes the end-of-turn token: the model learns to stop. Works with any chat
    template that renders a prefix of the conversation as a prefix of the text.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(
            messages[:i], tokenize=False, add_generation_prompt=True
        )
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (through.startswith(before) and text.startswith(through)):
            raise DataError(
                "the chat template does not render a prefix of a conversation as a prefix "
                "of its text, so assistant tokens cannot be located"
            )
        spans.append((len(before), len(through)))
    return text, spans


def encode_chat(
    tokenizer, messages: list[dict], max_len: int, last_turn_only: bool = False
) -> tuple[list[int], list[int]]:
    """Token ids and next-token labels; labels are IGNORE except where the target is an assistant
    token (of the last assistant turn only, with last_turn_only: preference pairs)."""
    text, spans = assistant_spans(tokenizer, messages)
    if last_turn_only:
        spans = spans[-1:]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"][:max_len]
    trained = [
        any(a <= start < b for a, b in spans) for start, _ in enc["offset_mapping"][:max_len]
    ]
    labels = [ids[j + 1] if trained[j + 1] else IGNORE for j in range(len(ids) - 1)] + [IGNORE]
    return ids, labels


def encode_all(
    tokenizer, rows: Iterable[dict], max_len: int
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Encode every row; return the documents and how many were truncated to max_len."""
    docs, truncated = [], 0
    for row in rows:
        ids, labels = encode_chat(tokenizer, row["messages"], max_len)
        if len(ids) == max_len:
            truncated += 1
        docs.append((ids, labels))
    return docs, truncated


def load_documents(
    data_cfg: DictConfig, tokenizer
) -> tuple[list[tuple[list[int], list[int]]], int]:
    return encode_all(tokenizer, load_rows(data_cfg), data_cfg.max_seq_len)
