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
