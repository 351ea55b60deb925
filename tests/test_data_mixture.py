"""Data mixtures, `ladder data inspect` and the token cache.

.venv/bin/python -m pytest -q tests/test_data_mixture.py
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from conftest import FAST, ladder_cli, train_in_process

from training.common.errors import ConfigError, DataError
from training.config.compose import compose
from training.data.mixture_config import SourceSpec, round_counts
from training.model.modeling import load_tokenizer
from training.run.metrics import read_metrics


def chat_rows(prefix: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice("abcdefgh") for _ in range(rng.randint(2, 5))]
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"{prefix}: {' '.join(words)} {i}"},
                    {"role": "assistant", "content": " ".join(reversed(words))},
                ]
            }
        )
    return rows


def pref_rows(prefix: str, n: int, seed: int) -> list[dict]:
    out = []
    for r in chat_rows(prefix, n, seed):
        user, good = r["messages"]
        out.append(
            {"chosen": [user, good], "rejected": [user, {"role": "assistant", "content": "no"}]}
        )
    return out


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One run root for the module: its token cache is shared, so reverse_mix is tokenised once."""
    return tmp_path_factory.mktemp("mix")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Two small chat sources and two small preference sources."""
    d = tmp_path_factory.mktemp("small")
    return {
        "a": write(d / "a.jsonl", chat_rows("Echo", 300, 1)),
        "b": write(d / "b.jsonl", chat_rows("Flip", 100, 2)),
        "pa": write(d / "pa.jsonl", pref_rows("Echo", 60, 3)),
        "pb": write(d / "pb.jsonl", pref_rows("Flip", 30, 4)),
    }


def mix(small, root, *extra, a="a", b="b") -> list[str]:
    return [
        *FAST,
        "data=reverse_mix",
        f"trainer.run_root={root}",
        f"data.sources.reverse.train_files=[{small[a]}]",
        f"data.sources.arith.train_files=[{small[b]}]",
        *extra,
    ]


def stream_of(overrides: list[str]):
    from training.config.validate import validate
    from training.data.mixture import build_stream

    cfg = compose(overrides)
    layout = validate(cfg)
    stream, _ = build_stream(
        cfg, load_tokenizer(cfg.model), layout.micro_batch_tokens, cfg.trainer.seed, "messages"
    )
    return cfg, stream


def test_round_counts_follow_weights_or_epochs():
    w = [SourceSpec("r", weight=0.8), SourceSpec("a", weight=0.2)]
    assert round_counts(w, [20000, 2000]) == [17600, 4400]
    odd = [SourceSpec("x", weight=1), SourceSpec("y", weight=1), SourceSpec("z", weight=1)]
    assert round_counts(odd, [5, 3, 2]) == [
        4,
        3,
        3,
    ]  # largest remainders: the counts add up to the rows
    e = [SourceSpec("r"), SourceSpec("a", epochs=2.5), SourceSpec("c", epochs=0.5)]
    assert round_counts(e, [100, 10, 7]) == [100, 25, 4]


def test_same_seed_same_batches_and_every_world_size_sees_one_global_order(small, root):
    from training.engine.distributed import World
    from training.run.trainer import Trainer

    _, s1 = stream_of(mix(small, root))
    _, s2 = stream_of(mix(small, root))
    _, other = stream_of(mix(small, root, "trainer.seed=1"))
    for i in range(6):
        assert s1.micro_batch(i)["input_ids"].equal(s2.micro_batch(i)["input_ids"])
    assert not all(
        s1.micro_batch(i)["input_ids"].equal(other.micro_batch(i)["input_ids"]) for i in range(3)
    )
    # two ranks with accumulation 1 take, step by step, the micro-batches one rank with accumulation 2 takes
    one = Trainer(compose(mix(small, root)))
    one.stream = s1
    two = [
        Trainer(
            compose(mix(small, root, "rung.engine=ddp", "rung.gpus_per_node=2")), world=World(r, 2)
        )
        for r in range(2)
    ]
    assert one.layout.grad_accum == 2 and two[0].layout.grad_accum == 1
    for t in two:
        t.stream = s2
    for step in (1, 2, 40):  # step 40 lies in the second round of these small sources
        want = [b["input_ids"] for b in one.micro_batches(step)]
        got = [b["input_ids"] for t in two for b in t.micro_batches(step)]
        assert all(w.equal(g) for w, g in zip(want, got, strict=True))
    assert s1.epoch_of(39 * 2) >= 1


def test_a_sources_draws_do_not_move_when_another_sources_weight_does(small, root):
    _, heavy = stream_of(mix(small, root, "data.sources.arith.weight=0.5"))
    _, light = stream_of(mix(small, root, "data.sources.arith.weight=0.1"))
    n_a = len(heavy.sources[0].docs)
    draws = [
        [i for i in s.round_documents(0) + s.round_documents(1) if i < n_a] for s in (heavy, light)
    ]
    short, long = sorted(draws, key=len)
    assert (
        long[: len(short)] == short
    )  # source a's k-th draw is the same document under both weights
    assert heavy.counts != light.counts


def test_realized_shares_match_the_weights_and_inspect_reports_them(small, root):
    from launch.inspection.data_inspect import inspect_data

    for weight in (0.2, 0.5):
        cfg = compose(
            mix(
                small,
                root,
                "data.sources.reverse.weight=1",
                f"data.sources.arith.weight={weight}",
                "trainer.max_steps=60",
            )
        )
        rep = inspect_data(cfg)
        a, b = rep["sources"]
        assert b["document_share"] == pytest.approx(weight / (1 + weight), abs=0.02)
        assert a["document_share"] + b["document_share"] == pytest.approx(1.0)
        # epochs seen: documents drawn over documents the source has
        assert b["epochs_seen"] == pytest.approx(b["drawn_documents"] / b["documents"])
        assert (
            b["rows"] == 100
            and b["truncated"] == 0
            and b["per_round"] == round(400 * weight / (1 + weight))
        )
        assert 0 < b["trained_tokens"] < b["tokens"]


def test_a_mixture_trains_and_logs_each_sources_tokens_and_loss(root):
    # the shipped mixture, with 4,000 of the reverse rows to keep the tokenising short
    result = train_in_process(
        [
            *FAST,
            "data=reverse_mix",
            f"trainer.run_root={root}",
            "trainer.run_name=mix",
            "data.sources.reverse.max_samples=4000",
            "trainer.max_steps=3",
            "trainer.save_every=100",
        ]
    )
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    prev = 0
    for r in rows:
        tok = {s: r[f"data/{s}/tokens"] for s in ("reverse", "arith")}
        assert (
            sum(tok.values()) == r["tokens"] - prev
        )  # every trained token of the step belongs to one source
        prev = r["tokens"]
        mean = sum(r[f"data/{s}/loss"] * tok[s] for s in tok) / sum(tok.values())
        assert mean == pytest.approx(
            r["loss"], rel=1e-5
        )  # the per-source losses add up to the step's loss
        assert tok["arith"] > 0 and tok["reverse"] > tok["arith"]


def test_a_preference_mixture_trains_with_dpo(small, root):
    result = train_in_process(
        mix(
            small,
            root,
            "recipe=dpo",
            "model.from_scratch=true",
            "data.format=preference",
            "trainer.run_name=dpo-mix",
            "trainer.max_steps=2",
            "trainer.save_every=100",
            a="pa",
            b="pb",
        )
    )
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    prev = 0
    for r in rows:  # trained tokens of both sides of every pair, by source
        assert r["data/reverse/tokens"] + r["data/arith/tokens"] == r["tokens"] - prev
        prev = r["tokens"]
        assert all(math.isfinite(r[f"data/{s}/loss"]) for s in ("reverse", "arith"))
    ref = json.loads((result.run_dir / "reference_pass.json").read_text())
    assert ref["pairs"] == 90 and not ref["cached"]


def test_bad_mixtures_are_refused_with_a_clear_message(small, root, tmp_path):
    from training.config.validate import validate
    from training.data.mixture import build_stream

    with pytest.raises(
        ConfigError, match=r"data.sources.arith.weight=0.0 must be a finite number > 0"
    ):
        validate(compose(mix(small, root, "data.sources.arith.weight=0")))
    with pytest.raises(
        ConfigError,
        match=r"no source named 'arth' \(did you mean arith\?\); its sources are: "
        r"reverse, arith",
    ):
        compose(mix(small, root, "data.sources.arth.weight=0.3"))
    with pytest.raises(ConfigError, match="give every source a weight or none"):
        validate(compose(mix(small, root, "data.sources.arith.weight=null")))
    cfg = compose(mix(small, root, a="pa"))  # a preference source in an SFT mixture
    with pytest.raises(
        DataError,
        match=r"data.sources.reverse: .*pa.jsonl:1: a preference pair \(chosen/rejected\) "
        "in SFT data",
    ):
        build_stream(cfg, load_tokenizer(cfg.model), 1024, 0, "messages")
    long = write(
        tmp_path / "long.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "x " * 80},
                    {"role": "assistant", "content": "y"},
                ]
            }
        ]
        * 3,
    )
    cfg = compose([*mix(small, root), f"data.sources.arith.train_files=[{long}]"])
    with pytest.raises(
        DataError,
        match=r"data.sources.arith: no rows left after filtering \(3 read, 3 with no "
        "trained token",
    ):
        build_stream(cfg, load_tokenizer(cfg.model), 1024, 0, "messages")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(chat_rows("E", 1, 0)[0]) + "\n" + '{"messages": [}\n')
    cfg = compose([*mix(small, root), f"data.sources.arith.train_files=[{bad}]"])
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        build_stream(cfg, load_tokenizer(cfg.model), 1024, 0, "messages")


def test_the_cli_prints_one_error_and_exits_2(small, root):
    proc = ladder_cli("train", *mix(small, root, "data.sources.arith.weight=-1"))
    assert proc.returncode == 2, proc.stderr
    assert "ladder train: error: invalid config:" in proc.stderr and "Traceback" not in proc.stderr
    assert "data.sources.arith.weight=-1.0 must be a finite number > 0" in proc.stderr


def test_ladder_data_inspect_prints_each_source(small, root):
    proc = ladder_cli("data", "inspect", *mix(small, root))
    assert proc.returncode == 0, proc.stderr
    for text in ("data=reverse_mix (mixture", "reverse", "arith", "epochs seen", "tokens/step"):
        assert text in proc.stdout
    js = ladder_cli(
        "data", "inspect", "--json", *FAST, f"trainer.run_root={root}", "data.max_samples=50"
    )
    report = json.loads(js.stdout)
    assert report["mixture"] is False and [s["source"] for s in report["sources"]] == ["reverse"]
    assert report["sources"][0]["rows"] == 50 and report["sources"][0]["document_share"] == 1.0


def test_a_sweep_records_each_points_mixture_in_the_ledger(root):
    from launch.accounting.ledger import Ledger
    from launch.commands.launch_cmd import ledger_fields, prepare

    _, jobs = prepare(
        [
            *FAST,
            "data=reverse_mix",
            f"trainer.run_root={root}",
            "trainer.max_steps=2",
            "data.sources.arith.weight=0.1,0.3",
        ],
        multirun=True,
    )
    ledger = Ledger(root / "ledger-test.db")
    ids = [
        ledger.add_job(team="t", period="2026-11", planned_gpu_hours=0.1, **ledger_fields(j))
        for j in jobs
    ]
    got = [json.loads(ledger.job(i)["data_mixture"]) for i in ids]
    assert [g["sources"]["arith"]["weight"] for g in got] == [0.1, 0.3]
    assert got[0]["sources"]["reverse"] == {
        "files": [str(Path(jobs[0].cfg.data.sources.reverse.train_files[0]))],
        "weight": 0.8,
    }
    assert all(ledger.job(i)["allow_contamination"] == 0 for i in ids)


def test_the_token_cache_hits_and_recomputes_what_is_stale_or_corrupt(small, tmp_path, caplog):
    from training.data.token_cache import load_source, paths

    cfg = compose(FAST)
    tok = load_tokenizer(cfg.model)
    src = tmp_path / "src.jsonl"
    write(src, chat_rows("Echo", 40, 5))
    spec = SourceSpec("s", (str(src),))
    cache = tmp_path / "cache"
    first = load_source(spec, tok, 64, "messages", cache)
    again = load_source(spec, tok, 64, "messages", cache)
    assert not first.cached and again.cached and again.docs == first.docs and again.key == first.key
    assert not [
        p for p in cache.iterdir() if ".tmp" in p.name
    ]  # written under a temporary name, then renamed
    # what changes the tokens makes a new key: the file's content, max_seq_len, the chat template, the format
    assert not load_source(spec, tok, 32, "messages", cache).cached
    tok.chat_template = tok.chat_template.replace("<|im_start|>", "<|im_start|> ")
    assert not load_source(spec, tok, 64, "messages", cache).cached
    tok = load_tokenizer(cfg.model)
    write(src, chat_rows("Echo", 41, 5))
    changed = load_source(spec, tok, 64, "messages", cache)
    assert not changed.cached and len(changed.docs) == 41
    # a corrupt entry is recomputed (with a warning) and rewritten, never used
    data_path, meta_path = paths(cache, changed.key)
    raw = bytearray(data_path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data_path.write_bytes(bytes(raw))
    with caplog.at_level("WARNING", logger="ladder.token_cache"):
        fixed = load_source(spec, tok, 64, "messages", cache)
    assert not fixed.cached and fixed.docs == changed.docs and "corrupt or stale" in caplog.text
    assert load_source(spec, tok, 64, "messages", cache).cached
    meta_path.write_text(meta_path.read_text()[:20])  # a truncated sidecar
    assert not load_source(spec, tok, 64, "messages", cache).cached
    pairs = tmp_path / "pairs.jsonl"
    write(pairs, pref_rows("Echo", 12, 6))
    p1 = load_source(SourceSpec("p", (str(pairs),)), tok, 64, "preference", cache)
    p2 = load_source(SourceSpec("p", (str(pairs),)), tok, 64, "preference", cache)
    assert p2.cached and p2.docs == p1.docs and len(p2.docs[0]) == 4
