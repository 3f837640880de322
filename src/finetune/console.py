"""A quiet console for every run: one set of handlers (Hydra's console and finetune.log), no
advertising and no library deprecation noise, each filtered where it starts (by logger and
message, or by warning message, category and module), so that every other warning and log line
still shows; `extra=FILE_ONLY` puts a record in the log file only.
"""

import logging
import re
import sys
import warnings

# `extra=` of a record that belongs in the run's log file but not on the console.
FILE_ONLY = {"console": False}

# Lightning's INFO lines that tell a user of this package nothing, by the logger that emits them
# (rank_zero_info logs through the pytorch or the fabric logger, whichever was imported last).
_RANK_ZERO_NOISE = (
    # advertising for litlogger / litmodels: no flag or environment variable turns it off
    # (lightning/pytorch/trainer/connectors/logger_connector and callback_connector)
    r"💡 Tip: ",
    r"TPU available: False",  # printed by every Trainer on machines without a TPU
    # the normal end of a run; the other reasons (max_steps, max_time, no batches) stay
    r"`Trainer\.fit` stopped: `max_epochs=\d+` reached",
    # train's validation and test of the best epoch reloading it (resuming says "Restored all
    # states from the checkpoint at ...", which stays)
    r"Restoring states from the checkpoint path at ",
    r"Loaded model weights from the checkpoint at ",
)
QUIET_LOG_LINES: dict[str, tuple[str, ...]] = {
    "lightning.pytorch.utilities.rank_zero": _RANK_ZERO_NOISE,
    "lightning.fabric.utilities.rank_zero": _RANK_ZERO_NOISE,
    "lightning.fabric.utilities.seed": (r"Seed set to ",),  # the seed is in the config
    # early stopping (verbose) says every improvement; "did not improve ... stop" stays
    "lightning.pytorch.callbacks.early_stopping": (r"Metric .* improved\. New best score",),
    # optuna imports alembic, whose plugins announce themselves at import (hydra-optuna-sweeper)
    "alembic.runtime.plugins": (r"setup plugin ",),
}
# Said once per run, though every Trainer says it (train builds two).
ONCE_LOG_LINES: dict[str, str] = {
    "lightning.pytorch.utilities.rank_zero": r"GPU available: ",
    "lightning.fabric.utilities.rank_zero": r"GPU available: ",
}

# (message, category, module) of library warnings that are noise here; each is matched at the
# start of the message and on the whole name of the module that warns.
QUIET_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # torch 2.14 deprecates LeafSpec, which Lightning 2.6 still builds: nothing a user can change
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"lightning\.pytorch\.utilities\._pytree\Z",
    ),
    # a Trainer that only validates or tests a checkpoint (train's best epoch) has no checkpoint
    # callbacks to restore, and needs none; a resumed fit always has LastCheckpoint, so a
    # callback genuinely missing there is still said
    (
        r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to"
        r" be provided during `Trainer` instantiation\. Please add the following callbacks: "
        r"\[.*'LastCheckpoint'",
        UserWarning,
        r"lightning\.pytorch\.trainer\.call\Z",
    ),
    # PIL warns (a DecompressionBombWarning) about an image of more than MAX_IMAGE_PIXELS, which
    # it still reads (a 96 MP photo), and refuses one of more than twice that: the refusal is
    # said as the reason the file is skipped, and a photo it reads is used without alarm
    (
        r"Image size \(\d+ pixels\) exceeds limit of \d+ pixels, could be decompression bomb",
        RuntimeWarning,
        r"PIL\.Image\Z",
    ),
)


class _DropMessages(logging.Filter):
    """Drops the records whose message starts with one of `patterns`."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{pattern})" for pattern in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


class _OncePerRun(logging.Filter):
    """Lets each distinct message that starts with `pattern` through once per run."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not self.pattern.match(message):
            return True
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


class _NotOnConsole(logging.Filter):
    """Keeps records logged with `extra=FILE_ONLY` off the console handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


class _RankZeroInfo(logging.Filter):
    """Under DDP every rank runs the whole command (Lightning starts the others as copies of
    it): on the ranks other than 0 this package says only warnings and errors, as Lightning's
    rank_zero_info does, not its progress lines once per rank. Lightning's own lines are as
    Lightning logs them (each rank says it joined: "GLOBAL_RANK: 1, MEMBER: 2/2")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or not record.name.startswith("finetune"):
            return True
        # no DDP without Lightning: a task that has not imported it (mode=report) is rank 0
        rank_zero = sys.modules.get("lightning.fabric.utilities.rank_zero")
        return rank_zero is None or getattr(rank_zero.rank_zero_only, "rank", 0) == 0


# `lightning` always gets a console handler of its own when imported; `lightning.pytorch` and
# `lightning.fabric` too, and stop propagating to the root handlers, when imported before logging
# is configured (a notebook's `import lightning` first).
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
_LOG_FILTERS = {name: _DropMessages(patterns) for name, patterns in QUIET_LOG_LINES.items()}
_ONCE_FILTERS = {name: _OncePerRun(pattern) for name, pattern in ONCE_LOG_LINES.items()}
_NOT_ON_CONSOLE = _NotOnConsole()
_RANK_ZERO_INFO = _RankZeroInfo()


def quiet_console() -> None:
    """One console: Lightning's own handler goes (Hydra's root handlers already print and write
    finetune.log). No advertising, no library deprecation noise: each filtered where it starts,
    by logger and message or by warning message, category and module; every other warning and
    log line stays. A file name that is not UTF-8 is logged with its odd bytes escaped, not lost
    in a "Logging error". Safe to call again (each filter is added once)."""
    for name in _LIGHTNING_LOGGERS:
        lightning_logger = logging.getLogger(name)
        for handler in list(lightning_logger.handlers):
            lightning_logger.removeHandler(handler)
        lightning_logger.propagate = True  # to finetune.log too
    for name, log_filter in _LOG_FILTERS.items():
        logging.getLogger(name).addFilter(log_filter)
    for name, once in _ONCE_FILTERS.items():
        once.seen.clear()
        logging.getLogger(name).addFilter(once)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RANK_ZERO_INFO)  # finetune.log too: the ranks share the run folder
        stream = getattr(handler, "stream", None)
        if hasattr(stream, "reconfigure") and not stream.closed:
            stream.reconfigure(errors="backslashreplace")
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            handler.addFilter(_NOT_ON_CONSOLE)
    for message, category, module in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
