"""Which steps a run checkpoints on schedule, and which of them trainer.average_last averages.

    scheduled_steps(cfg)        # [50, 100, 150] for save_every=50, max_steps=150
    averaged_steps(cfg)         # trainer.average_last=2: [100, 150]; 0: []
    average_last_problems(cfg)  # one line per problem, naming trainer.average_last

The schedule is a function of the config alone: a save forced by a preemption (SIGTERM at step 73)
or a Ctrl-C is not on it, so a run that was stopped and resumed averages the very steps that an
uninterrupted run would. Step 0 (trainer.save_initial, the untrained model) is not on it either:
averaging random weights into a trained model is never what is meant.
"""

from __future__ import annotations

from omegaconf import DictConfig


def scheduled_steps(cfg: DictConfig) -> list[int]:
    t = cfg.trainer
    if t.max_steps <= 0 or t.save_every <= 0:
        return []
    return sorted({*range(t.save_every, t.max_steps + 1, t.save_every), t.max_steps})


def averaged_steps(cfg: DictConfig) -> list[int]:
    k = cfg.trainer.average_last
    return scheduled_steps(cfg)[-k:] if k > 0 else []


def average_name(k: int, last_step: int) -> str:
    """The averaged checkpoint's directory under checkpoints/: it says what it is, and it is not
    named step_N, so resume, keep_last and `ladder eval RUN_DIR` never take it for a saved step."""
    return f"avg_last{k}_step_{last_step:06d}"


def average_last_problems(cfg: DictConfig) -> list[str]:
    t = cfg.trainer
    k = t.average_last
    if k <= 0:  # 0: off; below 0 is RANGES' to refuse (training/config/validate.py), in one line
        return []
    if k == 1:
        return [
            "trainer.average_last=1: an average needs at least 2 checkpoints (the last one is "
            "already saved); set 2 or more, or 0 for none"
        ]
    n = len(scheduled_steps(cfg))
    if k > n:
        return [
            f"trainer.average_last={k} exceeds the {n} checkpoint(s) the run saves "
            f"(trainer.max_steps={t.max_steps}, trainer.save_every={t.save_every}; step 0 is not "
            "averaged): lower it, or save more often"
        ]
    if k > t.keep_last:
        return [
            f"trainer.average_last={k} exceeds trainer.keep_last={t.keep_last}: the run keeps "
            f"only its last {t.keep_last} checkpoints; raise trainer.keep_last to {k} or more"
        ]
    from training.model.lora import enabled as lora_enabled

    if lora_enabled(cfg):
        return [
            "trainer.average_last averages full weights; with model.lora.enabled=true a checkpoint "
            "holds an adapter: set trainer.average_last=0 (average the merged weights with "
            "`ladder average`)"
        ]
    return []
