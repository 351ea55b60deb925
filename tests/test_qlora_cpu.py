"""QLoRA's code path with real bitsandbytes, on its CPU backend (runs where bitsandbytes imports).

    pip install bitsandbytes && python -m pytest -q tests/test_qlora_cpu.py

Ladder refuses model.quantize=nf4 on a CPU (training/model/lora.py, nf4_problems: a 4-bit base
saves GPU memory, and bitsandbytes' CPU layers dequantize every weight at every matmul). With no
GPU lent, this is how QLoRA's own code is exercised: the same trainer, with that one refusal
lifted for the test. It loads a saved tiny base as NF4 through transformers' BitsAndBytesConfig
(lora.base_load_kwargs), wraps it with peft, trains, checkpoints peft's adapter files, resumes a
preempted run to the uninterrupted losses, and plain peft reloads the adapter on a 4-bit base with
the trainer's logits. What it cannot show is CUDA: the kernels' speed and the memory the plan
counts (bench/RESULTS.md lists that as unmeasured). CI does not install bitsandbytes (not a
dependency of Ladder: imported only for nf4), so there it is skipped.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST, losses

from training.config.compose import compose
from training.model import lora
from training.model.modeling import build_model, load_tokenizer

pytest.importorskip("bitsandbytes")


@pytest.fixture
def cpu_nf4_allowed(monkeypatch):
    """Only the CPU refusal is lifted: every other nf4 check (engine, name_or_path, save_merged,
    bitsandbytes importable) still runs."""
    checks = lora.nf4_problems
    monkeypatch.setattr(
        lora,
        "nf4_problems",
        lambda cfg, here: [p for p in checks(cfg, here) if "on rung.device=cpu" not in p],
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("qlora")
    cfg = compose(["rung=tiny"])
    tok = load_tokenizer(cfg.model)
    build_model(cfg.model, tok, seed=0).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    return root


def qlora_run(root, name: str, callbacks=(), extra=()):
    from training.run.trainer import Trainer

    cfg = compose(
        [
            *FAST,
            "model.lora.enabled=true",
            "model.lora.r=4",
            "model.quantize=nf4",
            "trainer.save_merged=none",
            f"model.name_or_path={root / 'base'}",
            f"trainer.run_root={root}",
            f"trainer.run_name={name}",
            "trainer.max_steps=5",
            "trainer.save_every=2",
            *extra,
        ]
    )
    t = Trainer(cfg, callbacks=list(callbacks))
    t.run()
    return t


def test_qlora_trains_checkpoints_resumes_and_reloads_in_plain_peft(base, cpu_nf4_allowed):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from training.common.errors import Preempted
    from training.run.callbacks import Callback

    whole = qlora_run(base, "whole")
    from bitsandbytes.nn import Linear4bit

    four_bit = [m for m in whole.model.modules() if isinstance(m, Linear4bit)]
    assert len(four_bit) == 4 * 7, "every attention and MLP projection of the 4 layers is NF4"
    assert not any(p.requires_grad for m in four_bit for p in m.parameters())
    got = losses(whole.run_dir)
    assert len(got) == 5 and got[-1] < got[0] - 0.3, got  # it learns
    ckpt = whole.run_dir / "checkpoints" / "step_000005"
    adapter = json.loads((ckpt / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 4

    class Stop(Callback):  # preempted after step 3, as SIGUSR1 would: checkpoint, then stop
        def on_step_end(self, step: int, metrics: dict) -> None:
            if step == 3:
                self.trainer.stop_signal = "SIGUSR1"

    with pytest.raises(Preempted):
        qlora_run(base, "cut", callbacks=[Stop()])
    resumed = qlora_run(base, "cut", extra=["trainer.resume=auto"])
    assert resumed.start_step == 3
    assert losses(resumed.run_dir) == pytest.approx(got, abs=1e-6, rel=0)

    # plain peft on a base quantized the same way gives the trainer's logits
    nf4 = AutoModelForCausalLM.from_pretrained(
        base / "base", dtype=torch.bfloat16, **lora.base_load_kwargs(whole.cfg)
    )
    plain = PeftModel.from_pretrained(nf4, str(ckpt)).eval()
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    whole.model.eval()
    with torch.no_grad():
        mine, theirs = whole.model(input_ids=ids).logits, plain(input_ids=ids).logits
        with plain.disable_adapter():
            untouched = plain(input_ids=ids).logits
    assert torch.allclose(mine.float(), theirs.float(), atol=1e-3)
    assert (theirs.float() - untouched.float()).abs().max() > 0.01, "the adapter is applied"
