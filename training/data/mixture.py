"""The data a recipe trains on: plain data or a mixture of sources, packed into micro-batches.

    ladder train data=reverse_mix                          # the shipped mixture
    ladder launch -m data.sources.arith.weight=0.1,0.3     # a sweep over one source's weight
    stream, truncated = build_stream(cfg, tokenizer, micro_batch_tokens, seed, fmt="messages")

Plain data (data.train_files or data.hub_name) packs exactly as before into a PackedStream.
A mixture (data.sources; the rules are in training/data/mixture_config.py) packs into a MixtureStream:
round r takes `count` documents from each source and packs them greedily. Sampling is a function
of (seed, source, index) only: source s's k-th draw is position k of its own stream of shuffled
passes, pass e being a permutation seeded by (seed, s, e); a round's documents are then shuffled
by (seed, r). Nothing depends on the rank or the world size (the trainer addresses micro-batches
by a global index), so resume and a change of world size see the same data, and changing one
source's weight leaves the order of every other source's draws as it was.

A mixture's batches say which source each document came from; the recipes sum each source's loss
and trained tokens on the device (source_sums) and the trainer reports them once per step as
`data/<source>/tokens` (trained tokens of the step) and `data/<source>/loss` (mean loss per loss
unit: per token for SFT, per pair for DPO): one extra host transfer per step.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from training.common.errors import DataError
from training.common.seeds import seed_of
from training.data.mixture_config import count_problems, is_mixture, round_counts, source_specs
from training.data.packing import PackedStream, collate, pack_greedy
from training.data.token_cache import SourceDocs, load_source

SOURCE_STATS = "data/per_source"  # the stats key of the per-source sums a recipe returns
log = logging.getLogger("ladder.data")


def token_cache_dir(cfg) -> Path:
    """The run root's token cache, or LADDER_TOKEN_CACHE: one folder for many run roots (the test
    suite's, where each test's own root would tokenise the same 20,000 rows again, ~4 s a run).
    Entries are keyed by content and checked on read (training/data/token_cache.py)."""
    shared = os.environ.get("LADDER_TOKEN_CACHE")
    return Path(shared) if shared else Path(cfg.trainer.run_root) / "cache" / "tokens"


class MixtureStream(PackedStream):
    """A PackedStream whose epochs are mixture rounds (see the module doc)."""

    def __init__(
        self,
        sources: list[SourceDocs],
        counts: list[int],
        micro_batch_tokens: int,
        seed: int,
        shuffle: bool,
        length,
        collate_fn,
    ):
        self.sources = sources
        self.source_names = [s.spec.name for s in sources]
        self.counts = counts
        self.offsets, self.source_of = [], []
        docs = []
        for i, s in enumerate(sources):
            self.offsets.append(len(docs))
            docs.extend(s.docs)
            self.source_of.extend([i] * len(s.docs))
        self._perms: dict[tuple[int, int], list[int]] = {}
        super().__init__(
            docs,
            micro_batch_tokens,
            seed,
            shuffle,
            length=length,
            collate_fn=lambda items, idx: collate_fn(items, idx, self),
        )

    def _perm(self, s: int, e: int) -> list[int]:
        """Pass e over source s: a permutation of its documents seeded by (seed, name, e)."""
        if (s, e) not in self._perms:
            n = len(self.sources[s].docs)
            if len(self._perms) > 4 * len(
                self.sources
            ):  # rounds move forward: keep only recent passes
                self._perms.clear()
            g = torch.Generator().manual_seed(seed_of(self.seed, self.source_names[s], e))
            self._perms[(s, e)] = (
                torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
            )
        return self._perms[(s, e)]

    def round_documents(self, r: int) -> list[int]:
        """Global document indices of round r, before the round's shuffle."""
        out = []
        for s, (off, c) in enumerate(zip(self.offsets, self.counts)):
            n = len(self.sources[s].docs)
            for k in range(r * c, (r + 1) * c):
                e, j = divmod(k, n)
                out.append(off + self._perm(s, e)[j])
        return out

    def _plan_epoch(self, r: int) -> list[list[int]]:
        order = self.round_documents(r)
        if self.shuffle:
            g = torch.Generator().manual_seed(seed_of(self.seed, "round", r))
            order = [order[i] for i in torch.randperm(len(order), generator=g).tolist()]
        return pack_greedy(order, lambda i: self.length(self.docs[i]), self.micro_batch_tokens)

    def sources_of(self, indices: list[int]) -> list[int]:
        return [self.source_of[i] for i in indices]


def collate_sft(items: list, indices: list[int], stream: MixtureStream) -> dict:
    b = collate(items)
    lens = torch.tensor(b["doc_lens"], dtype=torch.long)
    b["token_sources"] = torch.repeat_interleave(
        torch.tensor(stream.sources_of(indices), dtype=torch.long), lens
    )
    b["n_sources"] = len(stream.sources)
    return b


def collate_dpo(items: list, indices: list[int], stream: MixtureStream) -> dict:
    from training.data.preference import collate_pairs

    b = collate_pairs(items, indices)
    b["pair_sources"] = torch.tensor(stream.sources_of(indices), dtype=torch.long)
    b["n_sources"] = len(stream.sources)
    return b


def source_sums(
    loss: torch.Tensor, units: torch.Tensor, tokens: torch.Tensor, sources: torch.Tensor, n: int
) -> torch.Tensor:
    """[n, 3] per source: summed loss, loss units, trained tokens. Stays on the device (no sync)."""
    out = torch.zeros(n, 3, dtype=torch.float32, device=loss.device)
    vals = torch.stack([loss.detach().float(), units.float(), tokens.float()], dim=1)
    return out.index_add_(0, sources, vals)


def source_metrics(sums: list[float], names: list[str]) -> dict:
    """The step's per-source metrics from the [n, 3] sums of source_sums, summed over the micro-batches
    and ranks (the trainer reduces them with its other statistics) and flattened."""
    out = {}
    for i, name in enumerate(names):
        loss, units, tokens = sums[3 * i : 3 * i + 3]
        out[f"data/{name}/tokens"] = round(tokens)
        out[f"data/{name}/loss"] = (
            loss / units if units else None
        )  # None: no document of it this step
    return out


def load_sources(cfg, tokenizer, fmt: str, cache: bool = True) -> list[SourceDocs]:
    """Every source's documents, through the token cache. A mixture drops documents left with no
    trained token by truncation and refuses a source left with no rows."""
    mixture = is_mixture(cfg.data)
    out = []
    for spec in source_specs(cfg.data):
        prefix = f"data.sources.{spec.name}: " if mixture else ""
        src = load_source(
            spec,
            tokenizer,
            cfg.data.max_seq_len,
            fmt,
            token_cache_dir(cfg) if cache else None,
            drop_untrained=mixture,
            prefix=prefix,
        )
        if mixture and not src.docs:
            raise DataError(
                f"data.sources.{spec.name}: no rows left after filtering ({src.rows} read, {src.dropped} "
                f"with no trained token after truncation to data.max_seq_len={cfg.data.max_seq_len})"
            )
        out.append(src)
    return out


def make_stream(
    cfg, sources: list[SourceDocs], micro_batch_tokens: int, seed: int, fmt: str
) -> PackedStream:
    from training.data.preference import collate_pairs, pair_length

    length = (lambda d: len(d[0])) if fmt == "messages" else pair_length
    if not is_mixture(cfg.data):  # plain data: the packing every run used before mixtures
        docs = sources[0].docs
        if fmt == "messages":
            return PackedStream(docs, micro_batch_tokens, seed, cfg.data.shuffle)
        return PackedStream(
            docs,
            micro_batch_tokens,
            seed,
            cfg.data.shuffle,
            length=pair_length,
            collate_fn=collate_pairs,
        )
    specs = [s.spec for s in sources]
    counts = round_counts(specs, [len(s.docs) for s in sources])
    problems = count_problems(specs, [len(s.docs) for s in sources], counts)
    if problems:
        raise DataError("; ".join(problems))
    return MixtureStream(
        sources,
        counts,
        micro_batch_tokens,
        seed,
        cfg.data.shuffle,
        length,
        collate_sft if fmt == "messages" else collate_dpo,
    )


def build_stream(
    cfg, tokenizer, micro_batch_tokens: int, seed: int, fmt: str
) -> tuple[PackedStream, int]:
    """The recipe's stream and how many documents were truncated."""
    sources = load_sources(cfg, tokenizer, fmt)
    stream = make_stream(cfg, sources, micro_batch_tokens, seed, fmt)
    if is_mixture(cfg.data):
        log.info(
            "mixture %s: %s documents per round",
            cfg.data.name,
            ", ".join(
                f"{s.spec.name} {c} of {len(s.docs)}" for s, c in zip(sources, stream.counts)
            ),
        )
    return stream, sum(s.truncated for s in sources)
