"""Padding-free packing: documents are concatenated into one row per micro-batch.

    stream = PackedStream(docs, micro_batch_tokens=1024, seed=0)
    batch = stream.micro_batch(7)   # input_ids, labels, position_ids [1, T]; doc_lens

Position ids restart at 0 at each document. Given position ids and no attention mask,
transformers builds a block-diagonal causal mask (SDPA, eager) or varlen cu_seqlens
(FlashAttention 2), so no token attends across documents.

collate_rows puts each document in a row of its own instead, right-padded to the longest: under
SDPA or eager attention the packed row's block-diagonal mask is quadratic in the micro-batch's
length (T x T over all its documents), where rows cost each document its own L x L, causal only
(a padded key always sits after every real query of its row, so no mask is built at all).
RL micro-batches of many short answers use it on those kernels (training/rl/rollouts.py).

The order of micro-batches is a function of (seed, global micro-batch index) only, never
of the rank or the world size: step s of any run uses micro-batches
[s * M, (s + 1) * M) where M = micro-batches per step across all ranks.
"""

from __future__ import annotations

from bisect import bisect_right

import torch

from training.common.seeds import data_order_seed

IGNORE = -100  # the label of tokens that are not trained (training.data.chat_data.IGNORE)


class PackedStream:
    source_names: tuple[str, ...] | list[str] = ()  # a mixture's sources (training/data/mixture.py)

    def __init__(
        self,
        docs: list,
        micro_batch_tokens: int,
        seed: int,
        shuffle: bool = True,
        length=lambda item: len(item[0]),
        collate_fn=None,
    ):
        """`docs` are SFT documents (input_ids, labels) by default; a recipe with another batch
        format (DPO pairs) passes its own item `length` and `collate_fn(items, indices)`."""
        if not docs:
            raise ValueError("no documents to pack")
        self.docs = docs
        self.length = length
        self.collate_fn = collate_fn or (lambda items, _indices: collate(items))
        self.micro_batch_tokens = micro_batch_tokens
        self.seed = seed
        self.shuffle = shuffle
        self._epochs: list[list[list[int]]] = []  # per epoch: doc indices of each micro-batch
        self._starts: list[int] = []  # global index of each epoch's first micro-batch

    def _plan_epoch(self, epoch: int) -> list[list[int]]:
        n = len(self.docs)
        if self.shuffle:
            g = torch.Generator().manual_seed(data_order_seed(self.seed, epoch))
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        return pack_greedy(order, lambda i: self.length(self.docs[i]), self.micro_batch_tokens)

    def _locate(self, index: int) -> list[int]:
        while not self._starts or index >= self._starts[-1] + len(self._epochs[-1]):
            start = self._starts[-1] + len(self._epochs[-1]) if self._starts else 0
            self._epochs.append(self._plan_epoch(len(self._epochs)))
            self._starts.append(start)
        e = bisect_right(self._starts, index) - 1
        return self._epochs[e][index - self._starts[e]]

    def epoch_of(self, index: int) -> int:
        self._locate(index)
        return bisect_right(self._starts, index) - 1

    def micro_batch(self, index: int) -> dict:
        indices = self._locate(index)
        return self.collate_fn([self.docs[i] for i in indices], indices)

    def step_metrics(self, step: int) -> dict:
        """No metrics of its own: packed documents cost nothing to make (a BatchSource,
        training/recipes/protocol.py)."""
        return {}


def pack_greedy(order: list[int], length, max_tokens: int) -> list[list[int]]:
    """Group item indices, in the given order, into micro-batches of at most max_tokens
    (greedy and in order, so the grouping is a pure function of the order)."""
    plan, cur, used = [], [], 0
    for i in order:
        n = length(i)
        if cur and used + n > max_tokens:
            plan.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        plan.append(cur)
    return plan


def collate(docs: list[tuple[list[int], list[int]]]) -> dict:
    ids = [t for d in docs for t in d[0]]
    labels = [t for d in docs for t in d[1]]
    pos = [p for d in docs for p in range(len(d[0]))]
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "position_ids": torch.tensor([pos], dtype=torch.long),
        "doc_lens": [len(d[0]) for d in docs],
    }


def collate_rows(docs: list[tuple[list[int], list[int]]], pad_id: int = 0) -> dict:
    """One document per row, right-padded: input_ids, labels, position_ids [n, L], doc_lens and
    `real` [n, L] (the documents' own tokens, row after row: the packed row's order).
    Padding is never labelled, and under causal attention no real token sees it."""
    width = max(len(d[0]) for d in docs)
    ids = torch.full((len(docs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(docs), width), IGNORE, dtype=torch.long)
    for i, (x, y) in enumerate(docs):
        ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        labels[i, : len(y)] = torch.tensor(y, dtype=torch.long)
    lens = [len(d[0]) for d in docs]
    return {
        "input_ids": ids,
        "labels": labels,
        "position_ids": torch.arange(width).expand(len(docs), width).contiguous(),
        "doc_lens": lens,
        "real": torch.arange(width)[None, :] < torch.tensor(lens)[:, None],
    }
