"""What a run's data will be, per source, without training: `ladder data inspect [overrides] [--json]`.

    ladder data inspect data=reverse_mix
    ladder data inspect data=reverse_mix data.sources.arith.weight=0.5 trainer.max_steps=2000 --json
    report = inspect_data(compose([...]))      # the same numbers as a dict

It builds exactly what the trainer builds (the tokenizer, each source's documents through the token
cache, the stream with the rung's micro-batch and the run's seed) and walks the micro-batches the
run's steps will use (step s uses micro-batches (s-1)*M .. s*M-1, M = accumulation x data-parallel
size). Per source: rows read, documents used (a mixture drops those left with no trained token),
tokens after the chat template, trained (assistant) tokens, documents cut at data.max_seq_len, the
documents each mixture round takes, and over the run: its share of a step's documents and tokens
and the epochs of it the run sees (documents drawn / documents it has). RLVR prompts
(data.format=rlvr: GRPO) are reported by launch/inspection/rlvr_inspect.py instead: prompt lengths against
the room max_new_tokens leaves, and prompts per verifier.
"""

from __future__ import annotations

from omegaconf import DictConfig

from launch.planning.doc_lengths import summarize
from training.data.chat_data import IGNORE
from training.recipes.losses import loss_spec


def _doc_stats(doc: tuple, fmt: str) -> tuple[int, int]:
    """(tokens, trained tokens) of one document (a preference pair: both sides)."""
    sides = [(doc[0], doc[1])] if fmt == "messages" else [(doc[0], doc[1]), (doc[2], doc[3])]
    return sum(len(i) for i, _ in sides), sum(
        sum(1 for t in lab if t != IGNORE) for _, lab in sides
    )


def inspect_data(cfg: DictConfig) -> dict:
    if cfg.data.format == "rlvr":  # prompts, not documents to pack: no stream to walk
        from launch.inspection.rlvr_inspect import inspect_rlvr

        return inspect_rlvr(cfg)
    from training.config.validate import validate
    from training.data.mixture import load_sources, make_stream
    from training.data.mixture_config import is_mixture
    from training.model.modeling import load_tokenizer

    layout = validate(cfg, trains=False)  # the data only: where the weights come from is moot
    fmt = loss_spec(cfg.recipe.loss).data_format  # messages or preference: rlvr data went above
    tokenizer = load_tokenizer(cfg.model)
    sources = load_sources(cfg, tokenizer, fmt)
    stream = make_stream(cfg, sources, layout.micro_batch_tokens, cfg.trainer.seed, fmt)
    mixture = is_mixture(cfg.data)
    counts = stream.counts if mixture else [len(sources[0].docs)]
    stats = [[_doc_stats(d, fmt) for d in s.docs] for s in sources]
    # which source each global document index belongs to (a plain stream has one source)
    owner = stream.source_of if mixture else [0] * len(stream.docs)
    local = []  # global index -> index within its source
    for s in sources:
        local.extend(range(len(s.docs)))
    n_mb = cfg.trainer.max_steps * layout.micro_batches_per_step
    drawn = [[0, 0, 0] for _ in sources]  # documents, tokens, trained tokens
    lengths = []  # of every packed document drawn (a pair's sides are two): `ladder plan`'s attention
    for index in range(n_mb):
        for i in stream._locate(index):
            s = owner[i]
            tok, trained = stats[s][local[i]]
            doc = sources[s].docs[local[i]]
            lengths.extend([len(doc[0])] if fmt == "messages" else [len(doc[0]), len(doc[2])])
            drawn[s][0] += 1
            drawn[s][1] += tok
            drawn[s][2] += trained
    tot_docs, tot_tok, tot_trained = (sum(d[k] for d in drawn) or 1 for k in range(3))
    rows = []
    for s, st, c, (d_docs, d_tok, d_trained) in zip(sources, stats, counts, drawn):
        spec = s.spec
        rows.append(
            {
                "source": spec.name,
                "data": spec.describe(),
                "weight": spec.weight,
                "epochs": spec.epochs,
                "max_samples": spec.max_samples,
                "rows": s.rows,
                "documents": len(s.docs),
                "dropped": s.dropped,
                "truncated": s.truncated,
                "truncated_share": s.truncated / s.rows if s.rows else 0.0,
                "tokens": sum(t for t, _ in st),
                "trained_tokens": sum(t for _, t in st),
                "per_round": c,
                "drawn_documents": d_docs,
                "drawn_tokens": d_tok,
                "drawn_trained_tokens": d_trained,
                "document_share": d_docs / tot_docs,
                "token_share": d_tok / tot_tok,
                "trained_token_share": d_trained / tot_trained,
                "epochs_seen": d_docs / len(s.docs),
                "from_cache": s.cached,
            }
        )
    stream._locate(0)  # plans the first round (an epoch for plain data)
    return {
        "data": cfg.data.name,
        "recipe": cfg.recipe.name,
        "format": fmt,
        "mixture": mixture,
        "max_seq_len": cfg.data.max_seq_len,
        "seed": cfg.trainer.seed,
        "steps": cfg.trainer.max_steps,
        "micro_batches_per_step": layout.micro_batches_per_step,
        "micro_batch_tokens": layout.micro_batch_tokens,
        "global_batch_tokens": layout.global_batch_tokens,
        "round_documents": sum(counts),
        "rounds_seen": stream.epoch_of(n_mb - 1) + 1 if n_mb else 0,
        "steps_per_round": len(stream._epochs[0]) / layout.micro_batches_per_step,
        "sources": rows,
        "doc_lengths": summarize(lengths),
    }


def print_report(report: dict) -> None:
    if report["format"] == "rlvr":
        from launch.inspection.rlvr_inspect import print_rlvr_report

        return print_rlvr_report(report)
    from rich.table import Table

    from launch.console import make_console, num, si

    console = make_console()
    kind = "mixture" if report["mixture"] else "single-source data"
    table = Table(
        title=f"data={report['data']} ({kind}, {report['format']}, max_seq_len {report['max_seq_len']}): "
        f"{report['steps']} steps of {report['micro_batches_per_step']} micro-batches of "
        f"{report['micro_batch_tokens']} tokens, seed {report['seed']}"
    )
    for col, right in (
        ("source", False),
        ("weight", True),
        ("rows", True),
        ("tokens", True),
        ("trained tokens", True),
        ("truncated", True),
        ("dropped", True),
        ("per round", True),
        ("docs/step", True),
        ("tokens/step", True),
        ("epochs seen", True),
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
        table.add_row(
            r["source"],
            how,
            f"{r['rows']:,}",
            si(r["tokens"]),
            si(r["trained_tokens"]),
            f"{r['truncated']:,} ({100 * r['truncated_share']:.1f}%)",
            f"{r['dropped']:,}",
            f"{r['per_round']:,}",
            f"{100 * r['document_share']:.1f}%",
            f"{100 * r['token_share']:.1f}%",
            num(r["epochs_seen"], 3),
        )
    console.print(table)
    console.print(
        "weight: relative share of a round's documents; per round: documents each round takes; docs/step "
        "and tokens/step: the source's share of a step over the run (tokens after the chat template); "
        "epochs seen: documents the run draws from it / documents it has."
    )
    if report["mixture"]:
        console.print(
            f"a round is {report['round_documents']:,} documents, about "
            f"{num(report['steps_per_round'], 1)} steps; the run's {report['steps']} steps draw from "
            f"{report['rounds_seen']} round(s)."
        )
