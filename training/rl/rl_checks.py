"""The start-up checks of RL and generation settings, free of torch and transformers.

    from training.rl.rl_checks import grpo_problems, placement_problems, generator_problems
    problems = placement_problems(cfg, world_size) + grpo_problems(cfg, layout)

training/config/validate.py runs them for every command that validates a config (`ladder config`,
`plan`, `launch`, `train`), so they live apart from the modules that generate and train
(generator.py, grpo.py, policy_lag.py, vllm_generator.py import torch): a config error is then
reported without loading torch. They raise nothing and never fix a value; each returns messages
naming the key to change. Only here=True (the process that runs the job) looks at the machine.
"""

from __future__ import annotations

import importlib.util

FULL_REPLICA_ENGINES = {"single", "ddp"}  # engines whose every rank holds the whole model
SEPARATE_ENGINES = {"ddp", "fsdp2"}  # engines whose data parallelism runs over the learner group


def placement_problems(cfg, world_size: int | None = None, here: bool = False) -> list[str]:
    """Start-up checks of generator.placement / generator.ranks and recipe.max_policy_lag
    (training/config/validate.py calls this for every recipe); they never fix a value."""
    from training.recipes.losses import is_rl

    g, r, rc = cfg.generator, cfg.rung, cfg.recipe
    world = world_size if world_size is not None else r.nodes * r.gpus_per_node
    problems = []
    rl = is_rl(rc.loss)
    if g.placement == "colocated":
        if g.ranks != 0:
            problems.append(
                f"generator.ranks={g.ranks} applies only to generator.placement=separate; "
                "set generator.ranks=0, or generator.placement=separate"
            )
    else:
        if not rl:
            problems.append(
                f"generator.placement=separate needs recipe=grpo (recipe.loss={rc.loss} "
                "generates nothing); set generator.placement=colocated"
            )
        if not 1 <= g.ranks < world:
            problems.append(
                f"generator.placement=separate with generator.ranks={g.ranks} on a job of {world} "
                "rank(s): at least 1 generator rank and at least 1 learner rank are needed "
                f"(1 <= generator.ranks < {world})"
            )
        if r.engine.value not in SEPARATE_ENGINES:
            problems.append(
                f"generator.placement=separate trains on the learner ranks with rung.engine=ddp or "
                f"fsdp2 (it is {r.engine.value}): DeepSpeed's groups are not limited to the learners yet"
            )
        if g.name != "hf":
            problems.append(
                f"generator.placement=separate generates with generator=hf (it is {g.name})"
            )
        if rl and rc.ppo_epochs != 1:
            problems.append(
                f"generator.placement=separate needs recipe.ppo_epochs=1 (it is {rc.ppo_epochs}): "
                "the generators make one rollout batch per update"
            )
        if rl and rc.kl_beta > 0:
            problems.append(
                f"generator.placement=separate with recipe.kl_beta={rc.kl_beta}: the generator "
                "ranks hold no reference model yet; use kl_beta=0 or placement=colocated"
            )
    if rl and rc.max_policy_lag > 0:
        if rc.ppo_epochs != 1:
            problems.append(
                f"recipe.max_policy_lag={rc.max_policy_lag} needs recipe.ppo_epochs=1 (it is "
                f"{rc.ppo_epochs}): a lagged batch's behaviour policy is a version, one batch per update"
            )
        if g.placement == "colocated" and r.engine.value not in FULL_REPLICA_ENGINES:
            problems.append(
                f"recipe.max_policy_lag={rc.max_policy_lag} with generator.placement=colocated keeps "
                f"whole copies of past weights, which rung.engine={r.engine.value} shards; use single "
                "or ddp"
            )
        if g.placement == "colocated" and g.name != "hf":
            problems.append(
                f"recipe.max_policy_lag={rc.max_policy_lag} with generator.placement=colocated "
                f"generates past versions with generator=hf (it is {g.name})"
            )
    elif not rl and rc.get("max_policy_lag", 0) != 0:
        problems.append(
            f"recipe.max_policy_lag={rc.max_policy_lag} applies to recipe=grpo only; set it to 0"
        )
    return problems


def grpo_problems(cfg, layout=None, here: bool = False) -> list[str]:
    """Start-up checks of a GRPO config (training/config/validate.py calls this); they never fix a value."""
    r, problems = cfg.recipe, []
    if r.num_generations < 2:
        problems.append(
            f"recipe.num_generations={r.num_generations}: GRPO compares the answers within a "
            "prompt's group, so a group needs at least 2 (8 is usual)"
        )
    # prompts_per_step against the data-parallel size: training/config/validate.py, rl_batch_layout
    if r.ppo_epochs < 1:
        problems.append(f"recipe.ppo_epochs={r.ppo_epochs} must be at least 1")
    for key in ("clip_low", "clip_high"):
        if not 0 < r[key] < (1 if key == "clip_low" else float("inf")):
            problems.append(
                f"recipe.{key}={r[key]} must be in (0, {'1' if key == 'clip_low' else 'inf'})"
            )
    if not r.is_cap > 0:
        problems.append(f"recipe.is_cap={r.is_cap} must be positive (a cap on the IS weight)")
    if r.max_policy_lag < 0:
        problems.append(f"recipe.max_policy_lag={r.max_policy_lag} must be 0 (synchronous) or more")
    if not r.kl_beta >= 0:
        problems.append(f"recipe.kl_beta={r.kl_beta} must be 0 (off) or positive")
    if cfg.data.max_seq_len <= cfg.generator.max_new_tokens:
        problems.append(
            f"generator.max_new_tokens={cfg.generator.max_new_tokens} leaves no room for a prompt in "
            f"data.max_seq_len={cfg.data.max_seq_len}"
        )
    return problems + generator_problems(cfg, here)


def eval_generator_problems(name: str, device: str, here: bool = True) -> list[str]:
    """Start-up checks of eval.generator.name (the device already resolved: cuda or cpu); here:
    also check this machine (a GPU visible, vllm installed)."""
    if name not in {"auto", "hf", "vllm"}:
        return [f"eval.generator.name={name!r}: use auto, hf or vllm"]
    if name == "vllm":
        if p := vllm_problem(device, here):
            return [f"eval.generator.name=vllm: {p}"]
    return []


def impl_problems(cfg) -> list[str]:
    """generator.impl: the fast impls are generator=hf's, and continuous batching cannot keep a
    sharded engine's collective forwards in step (training/rl/continuous.py)."""
    g, r = cfg.generator, cfg.rung
    impl = g.get("impl", "auto")
    if impl in ("auto", "eager"):  # auto resolves per run (generator.resolve_impl)
        return []
    if g.name != "hf":
        return [f"generator.impl={impl} applies to generator=hf (it is {g.name}); use impl=eager"]
    world = r.nodes * r.gpus_per_node
    sharded = r.engine in {"fsdp2", "deepspeed_zero3"} and world > 1
    if impl == "continuous" and sharded and g.placement == "colocated":
        return [
            f"generator.impl=continuous with rung.engine={r.engine}: its decoding thread cannot "
            "keep the sharded weights' collective forwards in step across ranks; use "
            "impl=static_compiled (synced forwards), or generator.placement=separate (generator "
            "ranks hold a whole copy)"
        ]
    return []


def generator_problems(cfg, here: bool = False) -> list[str]:
    """Start-up checks (training/config/validate.py): a vLLM generator needs rung.device=cuda, and where
    the job runs (here=True) a GPU and vllm installed."""
    g = cfg.generator
    problems = []
    if g.name == "vllm":
        if p := vllm_problem(cfg.rung.device, here):
            problems.append(p)
    problems += impl_problems(cfg)
    if not 0 < g.top_p <= 1:
        problems.append(f"generator.top_p={g.top_p} must be in (0, 1]")
    if not g.temperature > 0:
        problems.append(f"generator.temperature={g.temperature} must be positive")
    if g.max_new_tokens < 1:
        problems.append(f"generator.max_new_tokens={g.max_new_tokens} must be at least 1")
    return problems


def vllm_problem(device: str, here: bool = True) -> str | None:
    """Why vLLM cannot generate for a run on `device`, or None. here=False checks the config only
    (`ladder plan` and `ladder launch` on a login node, which has no GPU and needs no vllm); the
    process that runs the job checks this machine too."""
    if device != "cuda":
        return (
            "generator=vllm runs vLLM on the GPUs, and this run has none "
            f"(device={device}); use generator=hf on a CPU"
        )
    if here and not _cuda_visible():
        return "generator=vllm runs vLLM on the GPUs, and this machine has none visible; use generator=hf"
    if here and importlib.util.find_spec("vllm") is None:
        return (
            "generator=vllm needs the vllm package (pip install vllm); generator=hf needs nothing"
        )
    return None


def _cuda_visible() -> bool:
    import torch  # here=True only: the job's own process, which loads torch anyway

    return torch.cuda.is_available()
