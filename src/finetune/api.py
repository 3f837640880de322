"""The Python API, for notebooks and scripts: `run(overrides)` is `python -m finetune OVERRIDES`.

The same checks (one-line errors), the same config (Hydra's compose API over the same conf/),
the same run folder (`hydra.run.dir`, or the one `hydra.run.dir=` names, with its .hydra/ files
and finetune.log), and the same task; its results come back as a dict with `run_dir` added.
A user mistake raises UserError carrying the line the command line prints after `error:`.
"""

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import run_job
from hydra.types import HydraContext, RunMode

from finetune.choices import check_command_line
from finetune.errors import UserError
from finetune.tasks import check_config, run_task


def config_dir() -> Path:
    """The configs ship inside the package (finetune/conf); a source checkout has them at conf/."""
    packaged = Path(__file__).resolve().parent / "conf"
    repo = Path(__file__).resolve().parents[2] / "conf"
    return packaged if (packaged / "config.yaml").is_file() else repo


def check_before_running(argv: Sequence[str]) -> None:
    """What is said before Hydra makes a run folder, in one UserError line: the command line
    (finetune.choices) and the mode, values and ckpt of the run it makes (of a sweep, its first
    run)."""
    composed = check_command_line(argv, config_dir())
    if composed is not None:
        check_config(composed)


def run(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose the config for `overrides`, run its task in a fresh run folder, return its
    results (`run_dir` included).

    >>> from finetune import run
    >>> results = run(["experiment=demo", "trainer.max_epochs=1"])
    >>> results["run_dir"], results["val"]["val/acc_mean"]
    """
    if isinstance(overrides, str):  # run("mode=eval ckpt=x") would compose letter by letter
        raise TypeError("overrides must be a list of strings, e.g. ['mode=eval', 'ckpt=...']")
    overrides = list(overrides)
    flags = [item for item in overrides if isinstance(item, str) and item.startswith("-")]
    if flags:  # Hydra would parse "-m" as an override and fail in its own words
        raise UserError(
            f"run() takes overrides, not flags ({' '.join(flags)}): sweeps and flags are for the "
            f"command line, as in python -m finetune {' '.join(overrides)}"
        )
    check_before_running(overrides)
    conf = config_dir()
    GlobalHydra.instance().clear()
    with (
        _logging_restored(),
        initialize_config_dir(config_dir=str(conf), version_base="1.3", job_name="finetune"),
    ):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        context = HydraContext(
            config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks(cfg)
        )
        cfg.hydra.mode = RunMode.RUN
        job = run_job(
            task_function=_task_or_user_error,
            config=cfg,
            job_dir_key="hydra.run.dir",
            job_subdir_key=None,
            hydra_context=context,
        )
    results = job.return_value  # a bug in the task re-raises here, as under the CLI
    if isinstance(results, UserError):
        raise results
    return {"run_dir": str(job.hydra_cfg.hydra.runtime.output_dir), **(results or {})}


@contextmanager
def _logging_restored() -> Iterator[None]:
    """The root logger as it was: the run's handlers (its console and finetune.log, set up by
    Hydra for the job) are closed when it ends, so that the notebook's own logging afterwards
    does not go on into the last run's log file."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def _task_or_user_error(cfg: Any) -> dict[str, Any] | UserError:
    """The task's results, or the user's mistake it stopped at: returned, not raised, so that
    Hydra does not print its "Error executing job" banner over the one-line message."""
    try:
        return run_task(cfg)
    except UserError as error:
        return error
