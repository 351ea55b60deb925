"""Errors a user can fix. The CLI prints them as one clear message, without a traceback."""


class LadderError(Exception):
    """Base class: bad config, bad data, a missing checkpoint."""


class ConfigError(LadderError):
    pass


class DataError(LadderError):
    pass


class CheckpointError(LadderError):
    pass


class TrainingError(LadderError):
    """The run cannot go on (e.g. a non-finite loss); the last good checkpoint is intact."""


class BudgetError(LadderError):
    """A launch would exceed its team's GPU-hour allocation (ladder launch --override-budget to go on)."""


class EvalError(LadderError):
    """Nothing to evaluate or compare: a sweep with no checkpoints, results that cannot be paired."""


class Preempted(Exception):
    """SIGTERM or SIGUSR1 arrived; the run checkpointed and should be requeued (exit status 75)."""


class Interrupted(Exception):
    """Ctrl-C (SIGINT): the run stopped, checkpointed unless it was a second Ctrl-C (exit status
    130, as a shell reports SIGINT). resumable: the same command continues it (not after a
    completed run's wait for evaluations)."""

    def __init__(self, message: str, resumable: bool = True):
        super().__init__(message)
        self.resumable = resumable


EXIT_USER_ERROR = 2
EXIT_REQUEUE = 75  # EX_TEMPFAIL: the launcher requeues the job; it resumes from its checkpoint
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_HUNG = 124  # a step exceeded trainer.step_timeout_s
