"""Preference data in the common chosen/rejected format: load, validate, encode, pack.

    pairs = load_pairs(cfg.data, tokenizer)     # list of (ids_c, labels_c, ids_r, labels_r)

A row is {"chosen": [messages], "rejected": [messages]}: the same conversation up to a final
assistant turn, which differs. Only that final turn is scored. A malformed row is reported as
`file:line: what is wrong`. A pair is packed whole into one micro-batch (chosen, then
rejected), padding-free like SFT documents.
"""

from __future__ import annotations

import datasets
import torch
from omegaconf import DictConfig

from training.common.errors import DataError
from training.data.chat_data import check_jsonl, check_messages, encode_chat, load_rows
from training.model.lm_loss import token_logps


def check_pair(row: object, where: str) -> None:
    if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
        raise DataError(f"{where}: expected an object with 'chosen' and 'rejected' message lists")
    for side in ("chosen", "rejected"):
        check_messages({"messages": row[side]}, f"{where}: {side}")
        if row[side][-1]["role"] != "assistant":
            raise DataError(f"{where}: {side} must end with an assistant turn")
    if row["chosen"][:-1] != row["rejected"][:-1]:
        raise DataError(
            f"{where}: chosen and rejected must share the conversation before the last turn"
        )


def check_pairs_jsonl(path: str) -> int:
    return check_jsonl(path, check_pair)


def load_pair_rows(data_cfg: DictConfig) -> datasets.Dataset:
    return load_rows(data_cfg, check_pair)


def load_pairs(data_cfg: DictConfig, tokenizer) -> list[tuple]:
    pairs = []
    for row in load_pair_rows(data_cfg):
        c = encode_chat(tokenizer, row["chosen"], data_cfg.max_seq_len, last_turn_only=True)
        r = encode_chat(tokenizer, row["rejected"], data_cfg.max_seq_len, last_turn_only=True)
        pairs.append((*c, *r))
    return pairs


def pair_length(pair: tuple) -> int:
    return len(pair[0]) + len(pair[2])


def collate_pairs(pairs: list[tuple], indices: list[int]) -> dict:
    """One packed row: chosen_0, rejected_0, chosen_1, ... with position ids restarting per document."""
    docs = [d for p in pairs for d in ((p[0], p[1]), (p[2], p[3]))]
    ids = [t for d in docs for t in d[0]]
    labels = [t for d in docs for t in d[1]]
    pos = [i for d in docs for i in range(len(d[0]))]
    lens = [len(d[0]) for d in docs]
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "position_ids": torch.tensor([pos], dtype=torch.long),
        "doc_lens": lens,
        "pair_ids": torch.tensor(indices, dtype=torch.long),
    }


def sequence_logps(
    model, batch: dict, chunk_tokens: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs and trained lengths per document, in packing order (chosen, rejected, ...):
    DPO's policy terms and the reference pass's (training/recipes/reference.py) both come from here."""
    logp, mask = token_logps(model, batch, chunk_tokens)
    lens = torch.tensor(batch["doc_lens"], device=logp.device)
    doc = torch.repeat_interleave(torch.arange(len(lens), device=logp.device), lens)
    sums = torch.zeros(len(lens), device=logp.device, dtype=logp.dtype).index_add_(0, doc, logp)
    counts = torch.zeros(len(lens), device=logp.device, dtype=logp.dtype).index_add_(
        0, doc, mask.to(logp.dtype)
    )
    return sums, counts
