"""Entry point: compose the config with Hydra, run the task named by `mode`, nothing else.

Heavy libraries (torch, lightning) are imported by the tasks, after composition, so that
`python -m finetune --help` and `--cfg job` answer at once.
"""

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from finetune.errors import UserError
from finetune.tasks import run_task

log = logging.getLogger("finetune")


def _config_dir() -> str:
    """The configs ship inside the package (finetune/conf); a source checkout has them at conf/."""
    packaged = Path(__file__).resolve().parent / "conf"
    repo = Path(__file__).resolve().parents[2] / "conf"
    return str(packaged if (packaged / "config.yaml").is_file() else repo)


@hydra.main(config_path=_config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run_task(cfg)
    except UserError as error:
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
