"""Entry point: check the command line, compose the config with Hydra, run the task named by
`mode`, nothing else. The check says a bad override or a used run folder in one line, before
Hydra writes anything (finetune.choices).

Heavy libraries (torch, lightning) are imported by the tasks, after composition, so that
`python -m finetune --help` and `--cfg job` answer at once.
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from finetune.choices import check_command_line
from finetune.errors import UserError
from finetune.tasks import run_task


def _config_dir() -> str:
    """The configs ship inside the package (finetune/conf); a source checkout has them at conf/."""
    packaged = Path(__file__).resolve().parent / "conf"
    repo = Path(__file__).resolve().parents[2] / "conf"
    return str(packaged if (packaged / "config.yaml").is_file() else repo)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path=_config_dir(), config_name="config", version_base="1.3")
def _run(cfg: DictConfig) -> None:
    try:
        run_task(cfg)
    except UserError as error:
        _fail(str(error))


def main() -> None:
    """`python -m finetune [overrides]` and the `finetune` console script."""
    try:
        check_command_line(sys.argv[1:], Path(_config_dir()))
    except UserError as error:
        _fail(str(error))
    try:
        _run()
    except BrokenPipeError:  # `python -m finetune --help | head`: the reader left early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(1)


if __name__ == "__main__":
    main()
