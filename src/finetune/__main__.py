"""Entry point: check the command line, compose the config with Hydra, run the task named by
`mode`, nothing else. The check says a bad override or a used run folder in one line, before
Hydra writes anything (finetune.choices).

Heavy libraries (torch, lightning) are imported by the tasks, after composition, so that
`python -m finetune --help` and `--cfg job` answer at once.
"""

import gc
import logging
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from finetune.api import check_before_running, config_dir
from finetune.console import FILE_ONLY, quiet_console
from finetune.errors import UserError
from finetune.io import user_path
from finetune.sweep import summarize_interrupted_sweep
from finetune.tasks import run_task

log = logging.getLogger("finetune")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _log_file() -> str | None:
    """The run's log file (Hydra's job logging writes it; finetune.log by default), or None
    where there is none (hydra/job_logging=disabled)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return user_path(Path(handler.baseFilename))
    return None


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _run(cfg: DictConfig) -> float | None:
    """One run. Returns the monitored value of a training run: what a sweeper such as Optuna
    optimises (None for the other modes, and for a run of a sweep that stopped with an error or
    crashed: Optuna records such a trial as failed)."""
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    quiet_console()  # on the handlers Hydra has just made: FILE_ONLY keeps lines off the console
    try:
        results = run_task(cfg)
    except UserError as error:  # run_task wrote why into the run's finetune.log
        if not sweeping:
            _fail(str(error))
        # One run of a sweep: say why it stopped and let the others run; the sweep summary
        # lists it as failed and the sweep ends with status 2.
        print(f"error: {error}", file=sys.stderr)
        return None
    except KeyboardInterrupt as interrupt:  # Ctrl-C, said in finetune.log (main exits 130)
        print(f"interrupted: {interrupt}", file=sys.stderr)
        raise
    except Exception as error:
        if not sweeping:
            raise  # a bug: Hydra shows its traceback, to report
        # A bug in one run of a sweep: like a user error, the other runs go on and the summary
        # lists it as failed (Hydra's sweepers would re-raise it after the last run, before the
        # summary); its traceback goes to the run's log file.
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        number = HydraConfig.get().job.num
        log_file = _log_file()
        if log_file is None:  # no log file to keep the traceback: it goes to the console
            traceback.print_exc()
        else:
            log.error("crashed:", exc_info=True, extra=FILE_ONLY)
        where = f"traceback in {log_file}" if log_file else "traceback above"
        print(f"error: run {number} crashed: {reason} ({where})", file=sys.stderr)
        return None
    return float(results["monitor"]["value"]) if cfg.mode == "train" else None


def main() -> None:
    """`python -m finetune [overrides]` and the `finetune` console script."""
    try:
        check_before_running(sys.argv[1:])
    except UserError as error:
        _fail(str(error))
    quiet_console()  # before Hydra: a sweeper plugin's imports log too (optuna -> alembic)
    try:
        _run()
    except KeyboardInterrupt:  # Ctrl-C: _run said where the run stopped
        summarize_interrupted_sweep()  # the runs of a sweep that had started, if one was running
        sys.exit(130)  # the shell's status for a command ended by SIGINT
    except BrokenPipeError:  # `python -m finetune --help | head`: the reader left early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(1)
    finally:
        # The run is over and has closed its files. Freezing the ~500k objects that torch and
        # Lightning leave spares the interpreter's exit its collector walks over them: ~1.2 s
        # of every run's exit. Exit handlers (logging, loggers, data-loader workers) still run.
        gc.freeze()


if __name__ == "__main__":
    main()
