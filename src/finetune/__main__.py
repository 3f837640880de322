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

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from finetune.api import config_dir
from finetune.choices import check_command_line
from finetune.errors import UserError
from finetune.tasks import FILE_ONLY, quiet_console, run_task

log = logging.getLogger("finetune")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _run(cfg: DictConfig) -> float | None:
    """One run. Returns the monitored value of a training run: what a sweeper such as Optuna
    optimises (None for the other modes, and for a run of a sweep that stopped with an error)."""
    try:
        results = run_task(cfg)
    except UserError as error:
        quiet_console()  # (again: idempotent) so that FILE_ONLY keeps the line off the console
        log.error("stopped: %s", error, extra=FILE_ONLY)  # the run's finetune.log says why
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            _fail(str(error))
        # One run of a sweep: say why it stopped and let the others run; the sweep summary
        # lists it as failed and the sweep ends with status 2.
        print(f"error: {error}", file=sys.stderr)
        return None
    return float(results["monitor"]["value"]) if cfg.mode == "train" else None


def main() -> None:
    """`python -m finetune [overrides]` and the `finetune` console script."""
    try:
        check_command_line(sys.argv[1:], config_dir())
    except UserError as error:
        _fail(str(error))
    quiet_console()  # before Hydra: a sweeper plugin's imports log too (optuna -> alembic)
    try:
        _run()
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
