"""GPU throughput of Ladder's training step at Llama 3 shapes, against TRL's SFTTrainer, in one run.

    make bench-gpu                          # python bench/gpu.py --out runs/bench_gpu.json
    python bench/gpu.py --smoke             # a tiny shape on the CPU, in seconds (tests/test_bench_gpu.py)
    ladder bench import runs/bench_gpu.json # the measured MFU into the ledger, for `ladder plan`

Trains in bf16 (fp32 master weights under autocast, as the single engine does) on packed
synthetic data: documents of seeded random lengths, a quarter of each a prompt that is not
trained, packed into rows of exactly --micro-batch tokens with position ids restarting per
document. Shapes: Llama 3.2 1B, and Llama 3 8B (hidden size, heads, vocabulary) cut to as many
layers as fit on the GPU. Each configuration varies one thing: the attention implementation,
torch.compile per layer, the chunked loss, activation checkpointing. TRL's SFTTrainer trains
the same model (same weights), the same documents and the same batch as the baseline, and one
DPO configuration runs through Ladder's DPO recipe. For each it prints useful (trained) tokens/s
per GPU, MFU by training/model/flops.py against the GPU's datasheet bf16 peak, and peak memory.
Timing leaves out set-up, compilation and the warm-up steps. Configurations run in order of
importance and stop at --budget-s, so the whole command fits its slot; skipped ones say so.

Runs on older images too (torch 2.11, transformers 5.17) with no deepspeed, flash_attn or network.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from training.model.flops import matmul_params, train_flops  # noqa: E402

# name: hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings
SHAPES = {
    "llama3_1b": (2048, 8192, 16, 32, 8, 128_256, True),  # Llama 3.2 1B
    "llama3_8b": (
        4096,
        14336,
        32,
        32,
        8,
        128_256,
        False,
    ),  # cut to the layers that fit (fit_layers)
    "smoke": (64, 128, 2, 4, 2, 512, False),
}
# Dense bf16 peak per GPU from the datasheets: the MFU denominator (rung.peak_flops_per_device).
PEAKS = {"H100": 989.0e12, "H200": 989.0e12, "A100": 312.0e12}


@dataclass
class Case:
    name: str
    shape: str = "llama3_1b"
    harness: str = "ladder"  # ladder | trl
    recipe: str = "sft"  # sft | dpo
    attn: str = "flex_attention"
    compile: bool = False
    chunk_tokens: int = 1024  # trainer.loss_chunk_tokens; 0: full logits
    ckpt: bool = False  # rung.activation_checkpointing
    layers: int | None = None  # None: the shape's (the 8B shape: as many as fit)
    result: dict = field(default_factory=dict)


def cases(smoke: bool, cuda: bool) -> list[Case]:
    if smoke:
        s = dict(shape="smoke", attn="sdpa", chunk_tokens=64)
        return [
            Case("ladder sdpa", **s),
            Case("ladder full logits", **{**s, "chunk_tokens": 0}),
            Case("ladder act-ckpt", **s, ckpt=True),
            Case("ladder dpo", **s, recipe="dpo"),
            Case("trl sdpa", **{**s, "chunk_tokens": 0}, harness="trl"),
        ]
    best = "flash_attention_2" if _has_flash() else "flex_attention"
    b8 = dict(shape="llama3_8b", attn=best, compile=True)
    out = [
        Case(f"ladder {best} compile", attn=best, compile=True),
        Case("trl sdpa", harness="trl", attn="sdpa", chunk_tokens=0),
        Case(f"trl {best}", harness="trl", attn=best, chunk_tokens=0),
        Case(f"ladder {best} compile full-logits", attn=best, compile=True, chunk_tokens=0),
        Case(f"ladder {best}", attn=best),
        Case("ladder sdpa", attn="sdpa"),
        Case(f"ladder {best} compile act-ckpt", attn=best, compile=True, ckpt=True),
        Case(f"8b-cut ladder {best} compile", **b8),
        Case(f"8b-cut ladder {best} compile full-logits", **b8, chunk_tokens=0),
        Case(f"8b-cut ladder dpo {best} compile", **b8, recipe="dpo"),
        Case(f"ladder dpo {best} compile", attn=best, compile=True, recipe="dpo"),
        Case(
            f"ladder dpo {best} compile full-logits",
            attn=best,
            compile=True,
            recipe="dpo",
            chunk_tokens=0,
        ),
        Case(f"8b-cut ladder {best} compile act-ckpt", **b8, ckpt=True),
        Case(f"ladder {best} full-logits", attn=best, chunk_tokens=0),
        Case(f"ladder {best} act-ckpt", attn=best, ckpt=True),
        Case("ladder eager", attn="eager"),
    ]
    if best != "flex_attention":
        out.insert(5, Case("ladder flex_attention", attn="flex_attention"))
    return out


def _has_flash() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


# ---- data ------------------------------------------------------------------------------------
def documents(
    n_tokens: int, vocab: int, max_len: int, seed: int = 0
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) documents of lognormal lengths (median ~600 tokens, as chat SFT data),
    the first quarter a prompt (label -100), labels shifted as training.data.chat_data does."""
    g = torch.Generator().manual_seed(seed)
    docs, total = [], 0
    while total < n_tokens:
        n = int(min(max_len, max(32, math.exp(6.4 + 0.8 * torch.randn(1, generator=g).item()))))
        ids = torch.randint(0, vocab, (n,), generator=g).tolist()
        labels = ids[1:] + [-100]
        labels[: n // 4] = [-100] * (n // 4)
        docs.append((ids, labels))
        total += n
    return docs


def pack_rows(docs, row_tokens: int) -> list[dict]:
    """Rows of exactly row_tokens (the last document of a row cut to fit), Ladder's packed format."""
    rows, cur = [], []
    used = 0
    for ids, labels in docs:
        take = min(len(ids), row_tokens - used)
        cur.append((ids[:take], labels[: take - 1] + [-100]))
        used += take
        if used == row_tokens:
            rows.append(_collate(cur))
            cur, used = [], 0
    return rows


def _collate(docs) -> dict:
    return {
        "input_ids": torch.tensor([[t for d, _ in docs for t in d]]),
        "labels": torch.tensor([[t for _, lab in docs for t in lab]]),
        "position_ids": torch.tensor([[i for d, _ in docs for i in range(len(d))]]),
        "doc_lens": [len(d) for d, _ in docs],
    }


def dpo_rows(docs, row_tokens: int) -> list[dict]:
    """Preference rows: consecutive documents as (chosen, rejected) sharing nothing but the packing."""
    from training.data.preference import collate_pairs

    rows, pairs, used, pid = [], [], 0, 0
    for a, b in zip(docs[0::2], docs[1::2]):
        n = len(a[0]) + len(b[0])
        if n > row_tokens:
            continue
        if used + n > row_tokens:
            rows.append(collate_pairs(pairs, list(range(pid - len(pairs), pid))))
            pairs, used = [], 0
        pairs.append((a[0], a[1], b[0], b[1]))
        used, pid = used + n, pid + 1
    return rows


# ---- models ----------------------------------------------------------------------------------
def llama(shape: str, layers: int | None, attn: str, device: str, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    h, inter, n_layers, heads, kv, vocab, tied = SHAPES[shape]
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=h,
        intermediate_size=inter,
        num_hidden_layers=layers or n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=8192,
        rope_theta=500_000.0,
        tie_word_embeddings=tied,
    )
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    with torch.device(device):  # initialised on the GPU: seconds, not minutes on the host
        model = LlamaForCausalLM(cfg)
    return model


def fit_layers(shape: str, micro_batch: int, budget_bytes: float) -> int:
    """As many decoder layers as fit: 16 bytes per parameter (fp32 weight, grad, Adam m and v),
    2 more for autocast's bf16 copy, and ~34 bytes per token per hidden unit of activations."""
    h, inter, n_layers, heads, kv, vocab, tied = SHAPES[shape]
    per_layer = matmul_params(h, inter, 1, heads, kv, 0) * 18 + 34 * micro_batch * h
    fixed = (
        vocab * h * (1 if tied else 2) * 18 + micro_batch * vocab * 6
    )  # + one chunk's logits, bounded
    return max(1, min(n_layers, int((budget_bytes - fixed) // per_layer)))


# ---- the two harnesses ---------------------------------------------------------------------------
def ladder_run(
    case: Case, rows: list[dict], warmup: int, steps: int, accum: int, device: str
) -> dict:
    """Ladder's step: the recipe's loss (training/recipes/registry.py, the chunked loss of training/model/lm_loss.py),
    the single engine's backward and step (autocast bf16, clipping, fused AdamW)."""
    from omegaconf import OmegaConf

    from training.engine.engines import EngineBackend
    from training.model.modeling import compile_layers
    from training.recipes.registry import make_recipe

    model = llama(case.shape, case.layers, case.attn, device)
    if case.ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if case.compile:
        compile_layers(model)
    loss = "sft" if case.recipe == "sft" else "dpo_sigmoid"
    cfg = OmegaConf.create(
        {
            "rung": {"device": device, "bf16": True},
            "trainer": {"loss_chunk_tokens": case.chunk_tokens},
            "recipe": {
                "loss": loss,
                "beta": 0.1,
                "label_smoothing": 0.0,
                "simpo_gamma": 0.0,
                "precompute_reference": True,
            },
        }
    )
    recipe = make_recipe(cfg)
    if (
        case.recipe == "dpo"
    ):  # the reference log-probs, as if precomputed (training/recipes/reference.py)
        recipe.ref_logps = torch.zeros(max(int(r["pair_ids"].max()) for r in rows) + 1, 2)

    def make_optimizer(params):
        return torch.optim.AdamW(
            params, lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0, fused=device == "cuda"
        )

    engine = EngineBackend(model, make_optimizer, None, cfg, None)

    def step(batches: list[dict]) -> torch.Tensor:
        units = sum(recipe.count(b) for b in batches)  # the loop's one normalisation rule
        total = 0.0
        for batch in batches:
            b = {
                k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
                for k, v in batch.items()
            }
            with engine.autocast():
                loss_sum, _ = recipe.loss_sum(engine.module, b)
            engine.backward(loss_sum / units)
            total = total + loss_sum.detach() / units
        engine.step(1.0)
        return total

    return timed(model, rows, step, warmup, steps, accum, device)


def trl_run(
    case: Case, docs, rows: list[dict], warmup: int, steps: int, accum: int, device: str
) -> dict:
    """TRL's SFTTrainer on the same model and weights, the same documents, one packed row of the same
    length per step, bf16, completion-only loss, padding-free."""
    import tempfile

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    model = llama(case.shape, case.layers, case.attn, device)
    n_docs = sum(len(r["doc_lens"]) for r in rows)  # the documents Ladder's rows hold
    ds = Dataset.from_list(
        [
            {
                "input_ids": ids,
                "completion_mask": [0] * (len(ids) // 4) + [1] * (len(ids) - len(ids) // 4),
            }
            for ids, _ in docs[:n_docs]
        ]
    )
    row = rows[0]["input_ids"].numel()
    state = {
        "t": 0.0,
        "seconds": 0.0,
        "batches": [],
    }  # (tokens, trained, doc lengths) per micro-batch, in order
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            max_steps=warmup + steps,
            per_device_train_batch_size=1,
            gradient_accumulation_steps=accum,
            learning_rate=1e-5,
            max_grad_norm=1.0,
            weight_decay=0.0,
            adam_beta2=0.95,
            gradient_checkpointing=False,
            packing=True,
            padding_free=True,
            max_length=row,
            completion_only_loss=True,
            bf16=device == "cuda",
            logging_steps=10_000,
            save_strategy="no",
            report_to="none",
            use_cpu=device == "cpu",
            dataloader_num_workers=0,
            seed=0,
            disable_tqdm=True,
            optim="adamw_torch_fused" if device == "cuda" else "adamw_torch",
        )
        # the data is tokenised already; TRL wants a tokenizer all the same (pad and end tokens): Ladder's own
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(
            Path(__file__).resolve().parent.parent / "training/assets/tokenizer"
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        collate = trainer.data_collator

        def counting(features):
            batch = collate(features)
            state["batches"].append(
                (
                    int(batch["input_ids"].numel()),
                    int((batch["labels"] != -100).sum()),
                    _doc_lens(batch),
                )
            )
            return batch

        trainer.data_collator = counting

        class Timer(TrainerCallback):
            def on_step_begin(self, args, st, control, **kw):
                _sync(device)
                state["t"] = time.perf_counter()

            def on_step_end(self, args, st, control, **kw):
                if st.global_step > warmup:
                    _sync(device)
                    state["seconds"] += time.perf_counter() - state["t"]

        trainer.add_callback(Timer())
        _reset_peak(device)
        trainer.train()
    # the timed steps' micro-batches, by their order of collation (a loader that fetches ahead changes
    # when the collator runs, never the order)
    timed_batches = state["batches"][warmup * accum : (warmup + steps) * accum]
    return _figures(
        model,
        sum(b[0] for b in timed_batches),
        sum(b[1] for b in timed_batches),
        [n for b in timed_batches for n in b[2]],
        state["seconds"],
        steps,
        device,
    )


def _doc_lens(batch) -> list[int]:
    pos = batch["position_ids"].view(-1).tolist()
    starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
    return [b - a for a, b in zip(starts, starts[1:])]


def timed(model, rows, step, warmup: int, steps: int, accum: int, device: str) -> dict:
    def rows_of(i: int) -> list[dict]:
        return [rows[(i * accum + j) % len(rows)] for j in range(accum)]

    first = [step(rows_of(i)) for i in range(warmup)][
        0
    ]  # the same first rows for every configuration
    _sync(device)
    _reset_peak(device)
    t0 = time.perf_counter()
    timed_rows = [r for i in range(warmup, warmup + steps) for r in rows_of(i)]
    for i in range(warmup, warmup + steps):
        step(rows_of(i))
    _sync(device)
    seconds = time.perf_counter() - t0
    tokens = sum(r["input_ids"].numel() for r in timed_rows)
    trained = sum(int((r["labels"] != -100).sum()) for r in timed_rows)
    out = _figures(
        model,
        tokens,
        trained,
        [n for r in timed_rows for n in r["doc_lens"]],
        seconds,
        steps,
        device,
    )
    return {**out, "first_loss": round(float(first), 5)}  # equal across attention and loss variants


def _figures(
    model, tokens: int, trained: int, doc_lens: list[int], seconds: float, steps: int, device: str
) -> dict:
    c = model.config
    n = matmul_params(
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.vocab_size,
    )
    flops = train_flops(n, c.num_hidden_layers, c.hidden_size, doc_lens)
    peak = _peak_flops(device)
    return {
        "layers": c.num_hidden_layers,
        "hidden": c.hidden_size,
        "intermediate": c.intermediate_size,
        "heads": c.num_attention_heads,
        "kv_heads": c.num_key_value_heads,
        "vocab": c.vocab_size,
        "matmul_params": n,
        "steps": steps,
        "seconds": round(seconds, 4),
        "tokens_per_s": tokens / seconds,
        "useful_tokens_per_s": trained / seconds,
        "mfu": flops / seconds / peak if peak else None,
        "peak_mem_gb": _peak_mem(device),
    }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_mem(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def _peak_flops(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAKS.items() if k in name), None)


# ---- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> list[Case]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="a tiny shape on the CPU, a few steps")
    p.add_argument(
        "--micro-batch", type=int, default=4096, help="tokens per packed row (one row per step)"
    )
    p.add_argument(
        "--accum",
        type=int,
        default=4,
        help="micro-batches per optimizer step (the optimizer's cost spread as in a real run)",
    )
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument(
        "--budget-s",
        type=float,
        default=400.0,
        help="start no configuration after this many seconds",
    )
    p.add_argument("--only", default=None, help="run the configurations whose name contains this")
    p.add_argument("--out", type=Path, default=None, help="write every figure to this JSON file")
    a = p.parse_args(argv)
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() and not a.smoke else "cpu"
    if a.smoke:
        a.micro_batch, a.warmup, a.steps, a.accum = min(a.micro_batch, 256), 1, 2, 2
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    todo = [c for c in cases(a.smoke, device == "cuda") if not a.only or a.only in c.name]
    hw = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"CPU x {torch.get_num_threads()} threads"
    )
    import transformers

    print(
        f"device: {hw}; torch {torch.__version__}, transformers {transformers.__version__}; "
        f"{a.micro_batch}-token packed rows, {a.accum} per step, {a.warmup} warm-up + {a.steps} timed steps",
        flush=True,
    )
    data: dict[tuple, tuple] = {}
    for c in todo:
        if time.perf_counter() - start > a.budget_s:
            c.result = {"skipped": f"over --budget-s {a.budget_s:g}"}
            continue
        if c.shape == "llama3_8b" and c.layers is None:
            free, _ = torch.cuda.mem_get_info()
            c.layers = fit_layers(c.shape, a.micro_batch, 0.8 * free)
        vocab = SHAPES[c.shape][5]
        if (vocab, c.recipe) not in data:
            docs = documents(
                a.micro_batch
                * (a.warmup + a.steps + 2)
                * a.accum
                * (2 if c.recipe == "dpo" else 1),
                vocab,
                a.micro_batch // 2,
            )
            data[(vocab, c.recipe)] = (
                docs,
                dpo_rows(docs, a.micro_batch)
                if c.recipe == "dpo"
                else pack_rows(docs, a.micro_batch),
            )
        docs, rows = data[(vocab, c.recipe)]
        t = time.perf_counter()
        try:
            if c.harness == "trl":
                c.result = trl_run(c, docs, rows, a.warmup, a.steps, a.accum, device)
            else:
                c.result = ladder_run(c, rows, a.warmup, a.steps, a.accum, device)
        except (
            Exception
        ) as e:  # one configuration failing (out of memory, a missing package) is a figure too
            c.result = {
                "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            }
            traceback.print_exc(limit=3)
        c.result["wall_s"] = round(time.perf_counter() - t, 1)
        print(f"  {c.name}: {json.dumps(c.result)}", flush=True)
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    report(todo, device)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(
            json.dumps(
                {
                    "device": hw,
                    "torch": torch.__version__,
                    "micro_batch_tokens": a.micro_batch,
                    "accum": a.accum,
                    "transformers": transformers.__version__,
                    "date": time.strftime("%Y-%m-%d"),
                    "cases": [asdict(c) for c in todo],
                },
                indent=1,
            )
        )
    return todo


def report(todo: list[Case], device: str) -> None:
    # the baseline: TRL with its default attention (SDPA) on the same shape, SFT only
    base = {
        c.shape: c.result.get("useful_tokens_per_s")
        for c in todo
        if c.harness == "trl" and c.attn == "sdpa"
    }
    print(
        f"\n{'configuration':34} {'layers':>6} {'tok/s/GPU':>10} {'useful/s':>10} {'MFU':>6} "
        f"{'peak GB':>8} {'vs TRL':>7}"
    )
    for c in todo:
        r = c.result
        if "useful_tokens_per_s" not in r:
            print(f"{c.name:34} {r.get('skipped') or r.get('error')}")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        mem = f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] is not None else "-"
        b = base.get(c.shape) if c.recipe == "sft" else None
        ratio = f"{r['useful_tokens_per_s'] / b:.2f}" if b else "-"
        print(
            f"{c.name:34} {r['layers']:>6} {r['tokens_per_s']:>10.0f} {r['useful_tokens_per_s']:>10.0f} {mfu:>6} "
            f"{mem:>8} {ratio:>7}"
        )
    print(
        f"({device}; MFU against the datasheet dense bf16 peak; 'vs TRL': useful tokens/s over TRL SFTTrainer's "
        "with SDPA on the same shape)"
    )


if __name__ == "__main__":
    main()
