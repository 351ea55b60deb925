"""generator=vllm: vLLM colocated on the training GPUs, its weights refreshed after each update.

    ladder train recipe=grpo generator=vllm rung.device=cuda      # needs a GPU and `pip install vllm`
    ladder eval CKPT eval.generator.name=vllm                     # the eval tasks, through the same class
    python -m pytest -q -m gpu tests/test_grpo_gpu.py

One class, two uses. In training (recipe=grpo) every rank holds its own engine (tensor parallel 1,
vLLM's `external_launcher` backend, so it joins the torch.distributed world the trainer started and
starts no processes of its own), loaded once from model.name_or_path for the architecture, then
given the trainer's weights before each rollout batch: parameter by parameter, each gathered first
when the engine shards it (an FSDP2 DTensor's full_tensor(), ZeRO-3's GatheredParameters), which is
collective, so every rank walks the same parameters in the same order. In `ladder eval` the engine
loads the checkpoint directory itself and nothing is pushed.

On a CPU, or without vllm installed, a run is refused at start-up (training/config/validate.py) with the
reason. Sampling uses vLLM's per-request seed, derived from the same (seed, step, prompt, sample)
key as generator=hf, so a resumed run redraws the same rollouts (vLLM's and transformers' samples
differ from each other: different kernels, different noise); keys=None decodes greedily.
"""

from __future__ import annotations

import os
import time

import torch

from training.common.errors import ConfigError
from training.rl.rl_checks import vllm_problem

# The prefixes wrappers add to parameter names, which a Hugging Face checkpoint (vLLM's load_weights
# reads those names) does not have: activation checkpointing's wrapper and a DDP / DeepSpeed module.
_WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_fsdp_wrapped_module.", "_orig_mod.")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def vllm_name(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name.removeprefix("module.")


def full_parameters(model):
    """(name, whole tensor) for each parameter, gathered one at a time when the engine shards it.
    Collective under FSDP2 and ZeRO-3: every rank must run the whole loop."""
    from torch.distributed.tensor import DTensor

    for name, param in model.named_parameters():
        if isinstance(param, DTensor):  # FSDP2
            yield vllm_name(name), param.full_tensor()
        elif hasattr(param, "ds_id"):  # DeepSpeed ZeRO-3: the local shard is empty until gathered
            import deepspeed

            with deepspeed.zero.GatheredParameters([param]):
                yield vllm_name(name), param.data
        else:
            yield vllm_name(name), param.data


class VLLMGenerator:
    name = "vllm"

    def __init__(
        self,
        cfg,
        tokenizer,
        model_path: str | None = None,
        max_model_len: int | None = None,
        colocated: bool = False,
    ):
        """cfg: temperature, top_p, max_new_tokens, gpu_memory_utilization. model_path: what the
        engine loads (eval: the checkpoint; training: model.name_or_path, then pushed weights).
        colocated (training): the engine runs inside this process, so its weights can be pushed."""
        if p := vllm_problem("cuda"):
            raise ConfigError(p)
        self.cfg, self.tokenizer, self.llm = cfg, tokenizer, None
        self.model_path, self.max_model_len, self.colocated = model_path, max_model_len, colocated
        self.eos = tokenizer.eos_token_id
        self.pushed_version = None

    def _engine(self, model):
        from vllm import LLM

        if self.llm is None:
            path = self.model_path or (
                model is not None
                and (getattr(model, "name_or_path", None) or model.config._name_or_path)
            )
            if not path:
                raise ConfigError(
                    "generator=vllm builds its engine from a checkpoint directory, and the model was "
                    "built from config; set model.name_or_path to a checkpoint (e.g. the SFT one)"
                )
            kwargs = {}
            if self.colocated:
                # Each rank's engine lives in the trainer's process (no engine-core process, so its
                # model can be reached to push weights) and joins the trainer's process group, or
                # makes a one-process group, from the rank variables torchrun sets.
                kwargs["distributed_executor_backend"] = "external_launcher"
                os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
                for var, default in (
                    ("RANK", "0"),
                    ("LOCAL_RANK", "0"),
                    ("WORLD_SIZE", "1"),
                    ("MASTER_ADDR", "localhost"),
                    ("MASTER_PORT", str(_free_port())),
                ):
                    os.environ.setdefault(var, default)
            self.llm = LLM(
                model=str(path),
                gpu_memory_utilization=self.cfg.gpu_memory_utilization,
                max_model_len=self.max_model_len,
                dtype="bfloat16",
                seed=0,
                tensor_parallel_size=1,
                **kwargs,
            )
        return self.llm

    def push_weights(self, model, version=None) -> None:
        """Copy the trainer's current weights into the colocated engine. version: the policy version
        (optimizer updates so far); a version already pushed is not pushed again."""
        if version is not None and version == self.pushed_version:
            return
        llm = self._engine(model)
        runner = llm.llm_engine.model_executor.driver_worker.model_runner.model
        for name, tensor in full_parameters(model):
            runner.load_weights([(name, tensor)])
        llm.reset_prefix_cache()  # cached prompt prefixes hold the old weights' keys and values
        self.pushed_version = version

    @torch.no_grad()
    def sample(
        self,
        model,
        prompts: list[list[int]],
        keys: list[int] | None,
        max_new_tokens: int | None = None,
        version=None,
    ) -> tuple[list[list[int]], float]:
        """As HFGenerator.sample. model=None (eval) generates from the engine's own checkpoint."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        t0 = time.perf_counter()
        if model is not None:
            self.push_weights(model, version)
        n = max_new_tokens or self.cfg.max_new_tokens
        params = [
            SamplingParams(
                max_tokens=n,
                temperature=self.cfg.temperature if keys else 0.0,
                top_p=self.cfg.top_p if keys else 1.0,
                seed=k if keys else None,
                stop_token_ids=[self.eos],
            )
            for k in (keys or [None] * len(prompts))
        ]
        outs = self._engine(model).generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False
        )
        completions = []
        for (
            o
        ) in outs:  # as HFGenerator: an answer that stopped ends with EOS, a truncated one does not
            ids = list(o.outputs[0].token_ids)
            if o.outputs[0].finish_reason == "stop" and (not ids or ids[-1] != self.eos):
                ids.append(self.eos)  # vLLM leaves a special stop token out of the output
            completions.append(ids)
        return completions, time.perf_counter() - t0
