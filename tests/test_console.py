"""A quiet console: no advertising, no library deprecation noise, the config in the log file
only; each filtered where it starts, so that every other warning and log line still shows."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from finetune.console import QUIET_LOG_LINES, QUIET_WARNINGS, quiet_console

from conftest import TINY, cli_env, run_cli

NOISE = ("Tip", "litlogger", "litmodels", "DeprecationWarning", "FutureWarning", "deprecat")


def noise_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(word in line for word in NOISE)]


def test_train_and_eval_print_no_tips_no_deprecations_and_keep_real_warnings(tmp_path, scene_root):
    trained = run_cli(
        f"data.root={scene_root}",
        "data.split.test=12",
        "data.split.val=12",
        "model.weights=none",
        "trainer.max_epochs=1",
        "train_eval_images=8",
        f"hydra.run.dir={tmp_path / 'train'}",
        *TINY,
        cwd=tmp_path,
    )
    console = trained.stdout + trained.stderr
    assert trained.returncode == 0, console[-3000:]
    assert noise_lines(console) == [], console
    for line in ("Seed set to", "TPU available", "Be aware that when using `ckpt_path`"):
        assert line not in console, console
    assert console.count("GPU available: False, used: False") == 1, console
    # a genuine warning of Lightning's still shows: 36 training images / 8 = 5 batches < 10
    assert "smaller than the logging interval Trainer(log_every_n_steps=10)" in console
    # the full config is written to the log file, not to the screen
    assert "train_crop_scale" not in console
    log_file = (tmp_path / "train" / "finetune.log").read_text()
    assert "train_crop_scale" in log_file and noise_lines(log_file) == []

    evaluated = run_cli(
        "mode=eval",
        f"ckpt={tmp_path / 'train' / 'best_model.pt'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        *TINY,
        cwd=tmp_path,
    )
    console = evaluated.stdout + evaluated.stderr
    assert evaluated.returncode == 0, console[-3000:]
    assert noise_lines(console) == [], console
    assert "mean class-wise accuracy" in console


@pytest.fixture
def fresh_filters():
    """No warning filters at the start, and afterwards all warning filters and the filters of
    Lightning's loggers as they were."""
    before = {name: list(logging.getLogger(name).filters) for name in QUIET_LOG_LINES}
    with warnings.catch_warnings():
        warnings.filters[:] = []
        yield
    for name, filters in before.items():
        logging.getLogger(name).filters[:] = filters


def test_warning_filters_are_specific_and_other_warnings_still_show(fresh_filters):
    quiet_console()
    assert len(warnings.filters) == len(QUIET_WARNINGS)
    for action, message, category, module, _ in warnings.filters:
        # never a blanket ignore: each names a message, a category narrower than Warning and
        # the one module that warns
        assert action == "ignore" and message is not None and module is not None
        assert category is not Warning and message.pattern and module.pattern.endswith(r"\Z")
    leafspec = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(...)` instead."
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("a genuine warning from elsewhere", UserWarning, stacklevel=1)
        warnings.warn_explicit(leafspec, FutureWarning, "_pytree.py", 21, "lightning.pytorch.x")
        warnings.warn_explicit(
            leafspec, FutureWarning, "_pytree.py", 21, "lightning.pytorch.utilities._pytree"
        )
    shown = [(str(warning.message), warning.category) for warning in caught]
    assert shown == [
        ("a genuine warning from elsewhere", UserWarning),
        (leafspec, FutureWarning),  # the same words from another module are not hidden
    ]


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_log_filters_drop_only_the_named_lines_of_the_named_loggers(fresh_filters):
    quiet_console()
    lightning_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    other_log = logging.getLogger("finetune.test_console")
    collect = Collect()
    for logger in (lightning_log, other_log):
        logger.addHandler(collect)
        logger.setLevel(logging.INFO)
    try:
        lightning_log.info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
        lightning_log.info("💡 Tip: For seamless cloud uploads, try installing [litmodels]")
        lightning_log.info("TPU available: False, using: 0 TPU cores")
        lightning_log.info("GPU available: False, used: False")
        lightning_log.info("GPU available: False, used: False")  # the judge Trainer's
        lightning_log.info("`Trainer.fit` stopped: `max_epochs=4` reached.")
        lightning_log.info("`Trainer.fit` stopped: `max_steps=5` reached.")
        lightning_log.info("Restored all states from the checkpoint at /run/last.ckpt")
        other_log.info("💡 Tip: from another logger")
    finally:
        for logger in (lightning_log, other_log):
            logger.removeHandler(collect)
    assert collect.messages == [
        "GPU available: False, used: False",
        "`Trainer.fit` stopped: `max_steps=5` reached.",
        "Restored all states from the checkpoint at /run/last.ckpt",
        "💡 Tip: from another logger",
    ]
    quiet_console()  # a second run (a sweep's next job) says its devices again
    lightning_log.addHandler(collect)
    try:
        lightning_log.info("GPU available: False, used: False")
    finally:
        lightning_log.removeHandler(collect)
    assert collect.messages[-1] == "GPU available: False, used: False"


def test_ranks_other_than_zero_say_only_warnings(fresh_filters, monkeypatch):
    """Under DDP every rank runs the whole command: the progress lines are said by rank 0 only,
    on the console and in finetune.log; a warning of any rank is said."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    root, collect = logging.getLogger(), Collect()
    root.addHandler(collect)
    said, lightning = (
        logging.getLogger("finetune.precision"),
        logging.getLogger("lightning.pytorch"),
    )
    for logger in (said, lightning):
        monkeypatch.setattr(logger, "level", logging.INFO)
    try:
        quiet_console()
        for rank in (0, 1):
            monkeypatch.setattr(rank_zero_only, "rank", rank)
            said.info("numerics on rank %d", rank)
            said.warning("a warning on rank %d", rank)
            lightning.info("Initializing distributed: GLOBAL_RANK: %d", rank)
    finally:
        root.removeHandler(collect)
    assert collect.messages == [
        "numerics on rank 0",
        "a warning on rank 0",
        "Initializing distributed: GLOBAL_RANK: 0",
        "a warning on rank 1",
        "Initializing distributed: GLOBAL_RANK: 1",  # Lightning's lines are as Lightning logs
    ]


def test_help_into_a_closed_pipe_ends_without_a_traceback(tmp_path):
    """`python -m finetune --help | head -2`: the reader may leave before the help is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "finetune", "--help"],
            cwd=tmp_path,
            env=cli_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1 and result.stderr == "", result.stderr
    assert not Path(tmp_path / "outputs").exists()


def test_lightning_imported_first_still_logs_into_the_run_log(trained_run, tmp_path, monkeypatch):
    """A notebook that imports lightning before any logging is set up leaves Lightning's loggers
    with a console handler of their own and no propagation (lightning/pytorch/__init__.py); a
    run then still writes Lightning's lines into its finetune.log, and prints them once, and
    gives the notebook its Lightning loggers back as they were."""
    from conftest import run_in_process

    notebooks = {}
    for name in ("lightning.pytorch", "lightning.fabric"):  # the state that import leaves
        lightning_logger = logging.getLogger(name)
        notebooks[name] = [logging.StreamHandler()]
        monkeypatch.setattr(lightning_logger, "handlers", notebooks[name])
        monkeypatch.setattr(lightning_logger, "propagate", False)
    run_dir = tmp_path / "eval"
    run_in_process(
        "mode=eval", f"ckpt={trained_run / 'best_model.pt'}", f"hydra.run.dir={run_dir}", *TINY
    )
    assert "GPU available: " in (run_dir / "finetune.log").read_text()
    for name, handlers in notebooks.items():
        assert logging.getLogger(name).handlers == handlers
        assert not logging.getLogger(name).propagate
