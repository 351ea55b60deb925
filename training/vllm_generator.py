"""generator=vllm: vLLM colocated on the training GPU, its weights refreshed after each update.

    ladder train recipe=grpo generator=vllm rung.device=cuda      # needs a GPU and `pip install vllm`
    python -m pytest -q -m gpu tests/test_grpo_gpu.py

On a CPU, or without vllm installed, the run is refused at start-up (training/validate.py) with
the reason. Sampling uses vLLM's per-request seed, derived from the same (seed, step, prompt,
sample) key as generator=hf, so a resumed run redraws the same rollouts (vLLM's and transformers'
samples differ from each other: different kernels, different noise). Single-engine only for now:
under sharded engines the weights to push must first be gathered (not yet wired).
"""

from __future__ import annotations

import importlib.util
import time

import torch

from training.errors import ConfigError


def vllm_problem(device: str) -> str | None:
    if device != "cuda" or not torch.cuda.is_available():
        return ("generator=vllm runs vLLM on the training GPUs, and this run has none "
                f"(rung.device={device}); use generator=hf on a CPU")
    if importlib.util.find_spec("vllm") is None:
        return "generator=vllm needs the vllm package (pip install vllm); generator=hf needs nothing"
    return None


class VLLMGenerator:
    name = "vllm"

    def __init__(self, cfg, tokenizer):
        if (p := vllm_problem("cuda")):
            raise ConfigError(p)
        self.cfg, self.tokenizer, self.llm, self.version = cfg, tokenizer, None, None
        self.eos = tokenizer.eos_token_id

    def _engine(self, model):
        from vllm import LLM
        if self.llm is None:
            path = getattr(model, "name_or_path", None) or model.config._name_or_path
            if not path:
                raise ConfigError("generator=vllm loads the starting weights from model.name_or_path; "
                                  "set it to a checkpoint directory")
            self.llm = LLM(model=path, gpu_memory_utilization=self.cfg.gpu_memory_utilization,
                           enable_sleep_mode=False, dtype="bfloat16", seed=0)
        return self.llm

    def push_weights(self, model) -> None:
        """Copy the trainer's current weights into the colocated engine (after each update)."""
        llm = self._engine(model)
        runner = llm.llm_engine.model_executor.driver_worker.model_runner.model
        runner.load_weights(((k, v) for k, v in model.state_dict().items()))

    @torch.no_grad()
    def sample(self, model, prompts: list[list[int]], keys: list[int] | None,
               max_new_tokens: int | None = None) -> tuple[list[list[int]], float]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        t0 = time.perf_counter()
        self.push_weights(model)
        n = max_new_tokens or self.cfg.max_new_tokens
        params = [SamplingParams(max_tokens=n, temperature=self.cfg.temperature if keys else 0.0,
                                 top_p=self.cfg.top_p if keys else 1.0, seed=k if keys else None,
                                 stop_token_ids=[self.eos]) for k in (keys or [None] * len(prompts))]
        outs = self._engine(model).generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                            use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs], time.perf_counter() - t0
