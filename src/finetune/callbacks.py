"""The training callbacks: the best epoch (monitored), the last epoch (always, for resuming),
the learning rate, the progress bar."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig

from finetune.io import atomic_write


class BestCheckpoint(ModelCheckpoint):
    """Keeps the best epoch by `monitor`. Resumed from another run's checkpoint, it copies that
    run's best into this run's folder and goes on comparing against it (Lightning alone would
    forget the earlier best score when the folder changes)."""

    def __init__(self, dirpath: Path, monitor: str, mode: str) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="epoch{epoch:03d}",
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            auto_insert_metric_name=False,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        earlier_dir, earlier_best = state_dict.get("dirpath"), state_dict.get("best_model_path")
        moved = earlier_dir and self.dirpath and Path(earlier_dir) != Path(self.dirpath)
        if moved and earlier_best and Path(earlier_best).is_file():
            copy = Path(self.dirpath) / Path(earlier_best).name
            source = Path(earlier_best).read_bytes()
            atomic_write(copy, lambda tmp: tmp.write_bytes(source), overwrite=True)
            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,
                "best_model_path": str(copy),
                "kth_best_model_path": str(copy),
                "best_k_models": {str(copy): state_dict["best_model_score"]},
                "last_model_path": "",
            }
        super().load_state_dict(state_dict)


class LastCheckpoint(ModelCheckpoint):
    """last.ckpt after every epoch, whatever the monitored metric did (Lightning's save_last
    only refreshes it on epochs where a top-k checkpoint was saved)."""

    def __init__(self, dirpath: Path) -> None:
        super().__init__(
            dirpath=dirpath, filename="last", save_top_k=1, enable_version_counter=False
        )

    @property
    def state_key(self) -> str:
        return "LastCheckpoint"

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resumed into a new run folder, there is nothing to carry over: the earlier run's
        last.ckpt stays where it is (and Lightning's warning that it is not reloaded is noise)."""
        if Path(state_dict.get("dirpath") or self.dirpath) == Path(self.dirpath):
            super().load_state_dict(state_dict)


@dataclass
class TrainingCallbacks:
    """The callbacks of one training run; `best` selects the epoch, `progress` is reused by the
    trainer that measures the selected epoch again."""

    best: "BestCheckpoint"
    progress: list[Callback]
    others: list[Callback] = field(default_factory=list)

    @property
    def all(self) -> list[Callback]:
        return [self.best, *self.others, *self.progress]


def training_callbacks(cfg: DictConfig, run_dir: Path) -> TrainingCallbacks:
    """What `cfg` asks of a training run, each callback once."""
    checkpoints = run_dir / "checkpoints"
    return TrainingCallbacks(
        best=BestCheckpoint(checkpoints, cfg.monitor, cfg.monitor_mode),
        progress=[RichProgressBar()] if cfg.trainer.enable_progress_bar else [],
        others=[LastCheckpoint(checkpoints), LearningRateMonitor(logging_interval="epoch")],
    )
