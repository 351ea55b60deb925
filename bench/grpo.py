"""GRPO speed on this machine: where a step's time goes, Ladder against TRL, and separate ranks.

    .venv/bin/python bench/grpo.py [--steps 8] [--warmup 2] [--prompts 16] [--generations 8] [--new-tokens 16]
    .venv/bin/python bench/grpo.py --vs-trl                 # (a) TRL's GRPOTrainer, same run
    .venv/bin/python bench/grpo.py --vs-trl --micro-answers 16   # (a) at the tiny rung's micro-batch
    .venv/bin/python bench/grpo.py --separate               # (b) 1 generator + 2 learners vs colocated
    python bench/grpo.py --device cuda --impl eager,static_compiled,continuous --shape 1b \
        --new-tokens 256 --json runs/bench_grpo.json        # (c) on a GPU; ladder bench import it

Default (where the time goes): recipe=grpo on the tiny rung from a random init, saved as a
checkpoint each mode starts from (the split does not
depend on what the model knows, only on how many tokens it samples and trains on) with
ppo_epochs=2 and kl_beta>0, so both log-prob passes run on every rollout batch. It prints the mean
seconds per step of each phase, the generation share, and generated tokens per second, all from
the run's own metrics.jsonl (the same numbers W&B gets). The first --warmup steps are left out.

--vs-trl: Ladder (loss grpo, ppo_epochs=1, no KL) and TRL's GRPOTrainer (loss_type grpo, beta 0,
num_iterations 1) train the same saved checkpoint on the same prompts, rewarded by the same
verifiers, with the same G, max_new_tokens, batch (prompts x G answers per step) and learning
rate, one after the other in this process, and the same micro-batch: --micro-answers answers per
forward/backward pass on both sides (default: every answer of the step in one pass, TRL's
per_device_train_batch_size = the generation batch; Ladder's rung.micro_batch_tokens is set to
micro-answers x data.max_seq_len, TRL's gradient_accumulation_steps to answers / micro-answers).
Step time: Ladder's step_time_s; TRL's, a callback
around each optimizer step. Generated tokens/s: sampled tokens over the time inside generate
(Ladder's gen_time_s; TRL's _generate_single_turn, timed by a subclass).

--separate: the same GRPO run (ppo_epochs=1, no KL) on 3 CPU processes under torchrun (gloo,
one thread each), generator.placement=separate with 1 generator rank and 2 learners at
recipe.max_policy_lag=1, against 2 colocated ddp learners (the same learners, generating
themselves). Learner busy fraction = 1 - learner_wait_s / step_time_s; tokens/s trained and
generated, per the job.

--device cuda: each --impl in turn (generator.impl), generation share and generated tokens/s per
impl; --shape 1b runs Llama 3.2 1B's shape (random weights, the tiny tokenizer); --json writes a
bench/gpu.py-format file whose "generate" rows carry the decoding MFU (2N FLOPs per generated
token over the GPU's datasheet peak), which `ladder bench import` puts in bench_rates for
`ladder plan recipe=grpo` (launch/planning/rl_split.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Llama 3.2 1B's shape (hidden, MLP, layers, heads, KV heads, vocabulary, tied embeddings)
SHAPES = {
    "tiny": [],
    "1b": [
        "model.hidden_size=2048",
        "model.intermediate_size=8192",
        "model.num_layers=16",
        "model.num_heads=32",
        "model.num_kv_heads=8",
        "model.vocab_size=128256",
        "model.tie_word_embeddings=true",
        "model.max_position_embeddings=2048",
        "data.max_seq_len=1024",
    ],
}


def base(a, root: str, name: str, extra=()) -> list[str]:
    return [
        "recipe=grpo",
        "rung=tiny",
        "tracker.mode=disabled",
        "trainer.eval_on_save=false",
        "trainer.save_initial=false",
        f"trainer.max_steps={a.steps}",
        f"trainer.save_every={a.steps}",
        f"trainer.run_root={root}",
        f"trainer.run_name={name}",
        f"recipe.prompts_per_step={a.prompts}",
        f"recipe.num_generations={a.generations}",
        f"generator.max_new_tokens={a.new_tokens}",
        f"rung.device={a.device}",
        "trainer.log_every=1000",
        *SHAPES[a.shape],
        *extra,
    ]


def summary(rows: list[dict]) -> dict:
    gen_rows = [r for r in rows if r["gen_time_s"] > 0]  # ppo_epochs=2: every other step generates
    mean = lambda key, rs=rows: sum(r[key] for r in rs) / len(rs)
    step, gen, lp = mean("step_time_s"), mean("gen_time_s"), mean("logprob_time_s")
    train_s = mean("fwd_bwd_time_s") + mean("optim_time_s")
    return {
        "steps_timed": len(rows),
        "step_time_s": step,
        "gen_time_s_per_step": gen,
        "logprob_time_s_per_step": lp,
        "train_time_s_per_step": train_s,
        "generation_share": gen / step,
        "logprob_share": lp / step,
        "train_share": train_s / step,
        "gen_tokens_per_s": mean("gen_tokens_per_s", gen_rows),
        "train_tokens_per_s": mean("tokens_per_s"),
        "response_len_mean": mean("response_len_mean"),
        "learner_busy": 1 - mean("learner_wait_s") / step,
    }


def ladder_run(a, overrides: list[str], name: str, root: str) -> dict:
    from training.config.compose import compose
    from training.run.metrics import read_metrics
    from training.run.trainer import train

    train(compose(base(a, root, name, overrides)))
    return summary(read_metrics(Path(root) / name / "metrics.jsonl")[a.warmup :])


def save_checkpoint(a, root: str) -> str:
    """The tiny model's seed-0 init, saved, so Ladder and TRL start from the same weights."""
    from training.config.compose import compose
    from training.model.modeling import build_model, load_tokenizer

    cfg = compose(base(a, root, "init"))
    tok = load_tokenizer(cfg.model)
    path = Path(root) / "init"
    build_model(cfg.model, tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def trl_run(a, ckpt: str, root: str) -> dict:
    """TRL's GRPOTrainer on the checkpoint, the same prompts, rewards and batch as Ladder's run."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from training.config.compose import compose
    from training.config.validate import effective_lr
    from training.rl.rlvr_data import load_prompts
    from training.rl.verifiers.registry import verify

    cfg = compose(base(a, root, "trl", [f"model.name_or_path={ckpt}"]))
    tok = AutoTokenizer.from_pretrained(ckpt)
    prompts = load_prompts(cfg.data, tok, a.new_tokens)
    text = {tok.decode(p.prompt_ids): p for p in prompts}
    data = Dataset.from_dict({"prompt": list(text)})

    def reward(prompts, completions, **_):
        return [
            verify(text[p].verifier, c, text[p].ground_truth) for p, c in zip(prompts, completions)
        ]

    timing = {"gen_s": 0.0, "gen_tokens": 0, "steps": []}

    class Timed(GRPOTrainer):
        def _generate_single_turn(self, *args, **kw):
            t0 = time.perf_counter()
            out = super()._generate_single_turn(*args, **kw)
            if self.state.global_step >= a.warmup:
                timing["gen_s"] += time.perf_counter() - t0
                timing["gen_tokens"] += sum(len(c) for c in out[0])
            return out

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            timing["steps"].append(time.perf_counter() - self.t0)

    n = a.prompts * a.generations
    args = GRPOConfig(
        output_dir=str(Path(root) / "trl"),
        max_steps=a.steps,
        per_device_train_batch_size=micro_answers(a),
        gradient_accumulation_steps=n // micro_answers(a),
        generation_batch_size=n,
        num_generations=a.generations,
        max_completion_length=a.new_tokens,
        temperature=cfg.generator.temperature,
        top_p=cfg.generator.top_p,
        loss_type="grpo",
        beta=0.0,
        num_iterations=1,
        learning_rate=effective_lr(cfg),
        lr_scheduler_type="constant",
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        use_cpu=a.device == "cpu",
        bf16=False,
        seed=0,
        shuffle_dataset=True,
    )
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    trainer = Timed(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=data,
        processing_class=tok,
        callbacks=[StepClock()],
    )
    trainer.train()
    steps = timing["steps"][a.warmup :]
    return {
        "steps_timed": len(steps),
        "step_time_s": sum(steps) / len(steps),
        "gen_tokens_per_s": timing["gen_tokens"] / timing["gen_s"],
    }


def micro_answers(a) -> int:
    n = a.prompts * a.generations
    m = a.micro_answers or n
    if n % m:
        raise SystemExit(f"--micro-answers {m} must divide the step's {n} answers")
    return m


def vs_trl(a) -> dict:
    from training.config.compose import compose

    with tempfile.TemporaryDirectory() as root:
        ckpt = save_checkpoint(a, root)
        seq = compose(base(a, root, "seq")).data.max_seq_len
        same = [f"model.name_or_path={ckpt}", "recipe.ppo_epochs=1", "recipe.kl_beta=0"]
        same += ["recipe.loss=grpo", "optim.schedule=constant", "optim.warmup_ratio=0"]
        same += [f"rung.micro_batch_tokens={micro_answers(a) * seq}"]  # TRL's micro-batch
        # --impl: Ladder once per generator.impl; --rounds R: R alternating rounds (the Ladder
        # runs, then TRL, again), since one side's time moves between back-to-back runs
        impls = a.impl.split(",") if a.impl else [None]
        rounds: list[dict] = []
        for r in range(a.rounds):
            got = {
                impl or "default": ladder_run(
                    a,
                    [*same, *([f"generator.impl={impl}"] if impl else [])],
                    f"ladder_{impl or 'default'}_{r}",
                    root,
                )
                for impl in impls
            }
            got["trl"] = trl_run(a, ckpt, root)
            rounds.append(got)
    out = {"micro_batches_per_step": a.prompts * a.generations // micro_answers(a)}
    for name in rounds[0]:
        key = "trl" if name == "trl" else ("ladder" if len(impls) == 1 else f"ladder_{name}")
        out[key] = rounds[0][name] if a.rounds == 1 else [g[name] for g in rounds]
        if name == "trl":
            continue
        step = [g["trl"]["step_time_s"] / g[name]["step_time_s"] for g in rounds]
        tok = [g[name]["gen_tokens_per_s"] / g["trl"]["gen_tokens_per_s"] for g in rounds]
        out[f"{key}_step_throughput_vs_trl"] = step[0] if a.rounds == 1 else step
        out[f"{key}_gen_tokens_per_s_vs_trl"] = tok[0] if a.rounds == 1 else tok
        if a.rounds > 1:
            out[f"{key}_median_step_throughput_vs_trl"] = statistics.median(step)
            out[f"{key}_median_gen_tokens_per_s_vs_trl"] = statistics.median(tok)
    return out


def torchrun(a, nproc: int, overrides: list[str]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", str(nproc), "-m", "launch.train", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one thread per rank: no oversubscription
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed:\n{proc.stderr[-3000:]}")


def separate(a) -> dict:
    from training.run.metrics import read_metrics

    out = {}
    with tempfile.TemporaryDirectory() as root:
        ckpt = save_checkpoint(a, root)
        same = [f"model.name_or_path={ckpt}", "recipe.ppo_epochs=1", "recipe.kl_beta=0"]
        same += ["rung.engine=ddp", "trainer.step_timeout_s=600"]
        runs = {
            "colocated_2_learners": (2, ["rung.gpus_per_node=2"]),
            "separate_1_generator_2_learners_k1": (
                3,
                [
                    "rung.gpus_per_node=3",
                    "generator.placement=separate",
                    "generator.ranks=1",
                    "recipe.max_policy_lag=1",
                ],
            ),
        }
        for name, (nproc, extra) in runs.items():
            t0 = time.perf_counter()
            torchrun(a, nproc, base(a, root, name, [*same, *extra]))
            rows = read_metrics(Path(root) / name / "metrics.jsonl")[a.warmup :]
            s = summary(rows)
            out[name] = {
                "processes": nproc,
                "wall_s": time.perf_counter() - t0,
                "step_time_s": s["step_time_s"],
                "learner_busy": s["learner_busy"],
                "train_tokens_per_s": s["train_tokens_per_s"],
                "gen_tokens_per_s": s["gen_tokens_per_s"],
            }
    return out


def gpu_impls(a) -> dict:
    import torch

    from bench.gpu import PEAKS
    from training.config.compose import compose
    from training.model.flops import model_matmul_params
    from training.model.modeling import load_tokenizer

    out = {}
    with tempfile.TemporaryDirectory() as root:
        ckpt = save_checkpoint(a, root)
        for impl in a.impl.split(","):
            extra = [f"model.name_or_path={ckpt}", f"generator.impl={impl}"]
            extra += ["recipe.ppo_epochs=2", "recipe.kl_beta=0.01"]
            try:
                out[impl] = ladder_run(a, extra, f"impl_{impl}", root)
            except Exception as e:  # one impl failing on this image still reports the others
                out[impl] = {"error": f"{type(e).__name__}: {e}"}
        cfg = compose(base(a, root, "shape"))
    tok = load_tokenizer(cfg.model)
    m = cfg.model
    vocab = m.vocab_size or len(tok)
    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    peak = next((v for k, v in PEAKS.items() if k in name), None)
    n = model_matmul_params(m, vocab)
    if a.json:
        cases = []
        for impl, r in out.items():
            mfu = 2 * n * r["gen_tokens_per_s"] / peak if peak and "error" not in r else None
            r["decode_mfu"] = mfu
            cases.append(
                {
                    "name": f"grpo generate {impl}",
                    "harness": "ladder",
                    "recipe": "generate",
                    "attn": str(m.attn_implementation),
                    "compile": impl == "static_compiled",
                    "ckpt": False,
                    "chunk_tokens": 0,
                    "result": {
                        **r,
                        "mfu": mfu,
                        "tokens_per_s": r.get("gen_tokens_per_s"),
                        "hidden": m.hidden_size,
                        "intermediate": m.intermediate_size,
                        "heads": m.num_heads,
                        "kv_heads": m.num_kv_heads,
                        "vocab": vocab,
                    },
                }
            )
        data = {"device": name, "date": time.strftime("%Y-%m-%d"), "cases": cases}
        Path(a.json).write_text(json.dumps(data, indent=1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vs-trl", action="store_true", help="(a) TRL's GRPOTrainer in the same run")
    ap.add_argument(
        "--micro-answers", type=int, help="with --vs-trl: answers per micro-batch (default: all)"
    )
    ap.add_argument("--rounds", type=int, default=1, help="with --vs-trl: alternating rounds")
    ap.add_argument("--separate", action="store_true", help="(b) 3 processes against colocated")
    ap.add_argument(
        "--impl",
        help="(c) comma-separated generator.impl values to compare; with --vs-trl, each against TRL",
    )
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--json", help="with --impl: write a file for `ladder bench import`")
    a = ap.parse_args()
    load_before = os.getloadavg()  # a shared machine: the figures mean little without it
    if a.vs_trl:
        out = vs_trl(a)
    elif a.separate:
        out = separate(a)
    elif a.impl:
        out = gpu_impls(a)
    else:
        with tempfile.TemporaryDirectory() as root:
            extra = [f"model.name_or_path={save_checkpoint(a, root)}"]
            out = ladder_run(
                a, [*extra, "recipe.ppo_epochs=2", "recipe.kl_beta=0.01"], "bench", root
            )
        out["answers_per_rollout_batch"] = a.prompts * a.generations
    out["load_average_1min_before_after"] = [load_before[0], os.getloadavg()[0]]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
