"""Logging for every ladder process: our own lines at INFO, third-party notices only with -v.

    from training.run.log_setup import setup_logging; setup_logging(verbose=False)

Used by the `ladder` command line (launch/cli.py) and by the trainer's own entry point
(training/run/entry.py, what launchers run on the nodes); it lives in training/ so that the
trainer never imports launch/ (launch depends on training, not the reverse).
"""

from __future__ import annotations

import logging
import os
import sys

# Third-party loggers whose notices are not about the user's run: DeepSpeed's "Setting
# accelerator to CPU", lm-eval's "Custom kwargs can be passed to --metadata", matplotlib's
# "building the font cache". Errors still show; `ladder -v VERB` shows everything.
QUIET = (
    "DeepSpeed",
    "lm_eval",
    "lm-eval",
    "matplotlib",
    "httpx",
    "urllib3",
    "datasets",
    "filelock",
    "wandb",
    "fsspec",
    "PIL",
)


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def setup_logging(verbose: bool = False) -> None:
    """Our own log lines at INFO; third-party notices only with -v (LADDER_VERBOSE=1 reaches the
    trainer and eval processes a verb starts)."""
    verbose = verbose or os.environ.get("LADDER_VERBOSE") == "1"
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for name in QUIET:
        logger = logging.getLogger(name)
        if verbose:
            logger.setLevel(logging.INFO)
            continue
        logger.setLevel(logging.ERROR)
        # DeepSpeed resets its logger's level to INFO when it is imported; a filter survives that.
        logger.addFilter(_ErrorsOnly())
    # Per-file progress bars from transformers, datasets and the hub drown the step log. Said
    # through the libraries' own environment switches, read when they are imported: importing them
    # here would cost a command that needs neither (`ladder config`) two seconds. Already imported
    # (a caller in this process got there first), they are told directly.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    level = "info" if verbose else "warning"
    if verbose or "TRANSFORMERS_VERBOSITY" not in os.environ:
        os.environ["TRANSFORMERS_VERBOSITY"] = level
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "transformers" in sys.modules:
        hf_logging = sys.modules["transformers"].utils.logging
        hf_logging.disable_progress_bar()
        if verbose:
            hf_logging.set_verbosity_info()
        else:
            hf_logging.set_verbosity_warning()
