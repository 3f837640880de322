"""The training callbacks: the best epoch (monitored), the last epoch (always, for resuming),
staged unfreezing, early stopping, the learning rate, the progress bar."""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import (
    BaseFinetuning,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)
from omegaconf import DictConfig
from torch.optim import Optimizer

from finetune.errors import UserError
from finetune.io import atomic_write
from finetune.optim import join_param_group

log = logging.getLogger(__name__)


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


class StagedUnfreezing(BaseFinetuning):
    """model.unfreeze_at_epoch=N: epochs 0..N-1 train the head alone, on a frozen backbone kept
    in eval mode (see ImageClassifier.train), then the backbone joins as a param group named
    "backbone" at optimizer.backbone_lr_mult times the head's learning rate. BaseFinetuning
    saves the param groups in the checkpoint, so a run resumed after epoch N gets its backbone
    group back; this callback then only makes the backbone trainable again."""

    def __init__(self, unfreeze_at_epoch: int) -> None:
        super().__init__()
        self.unfreeze_at_epoch = unfreeze_at_epoch

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """torch's DistributedDataParallel syncs the gradients of the parameters that required
        them when it wrapped the model: a backbone unfrozen later would train apart on each
        process, so several processes are refused."""
        if trainer.world_size > 1:
            raise UserError(
                f"model.unfreeze_at_epoch={self.unfreeze_at_epoch} needs a single process "
                f"(this run has {trainer.world_size}): use optimizer.backbone_lr_mult alone, "
                "or train on one device"
            )
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(pl_module.backbone_modules(), train_bn=False)

    def finetune_function(
        self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        if epoch < self.unfreeze_at_epoch or not pl_module.backbone_frozen():
            return
        backbone = pl_module.backbone_modules()
        self.make_trainable(backbone)
        if any(group.get("name") == "backbone" for group in optimizer.param_groups):
            return  # resumed after the backbone joined: BaseFinetuning restored its group
        schedulers = [
            config.scheduler
            for config in pl_module.trainer.lr_scheduler_configs
            if config.scheduler.optimizer is optimizer
        ]
        lr_mult = pl_module.hparams.optimizer.get("backbone_lr_mult", 1.0)
        params = list(self.filter_params(backbone))
        join_param_group(optimizer, schedulers, "backbone", params, lr_mult)
        log.info("epoch %d: the backbone joins the training (lr x %g)", epoch, lr_mult)


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


def training_callbacks(cfg: DictConfig, run_dir: Path, logged: bool) -> TrainingCallbacks:
    """What `cfg` asks of a training run, each callback once; the learning rate only when the
    run has a logger to write it to (`logged`; Lightning refuses the monitor without one)."""
    checkpoints = run_dir / "checkpoints"
    others: list[Callback] = [LastCheckpoint(checkpoints)]
    unfreeze_at_epoch = cfg.model.unfreeze_at_epoch
    if unfreeze_at_epoch is not None:
        max_epochs = cfg.trainer.get("max_epochs")
        if isinstance(max_epochs, int) and 0 <= max_epochs <= unfreeze_at_epoch:
            log.warning(
                "model.unfreeze_at_epoch=%d >= trainer.max_epochs=%d: only the head trains in "
                "this run (resume it with more epochs to train the backbone)",
                unfreeze_at_epoch,
                max_epochs,
            )
        others.append(StagedUnfreezing(unfreeze_at_epoch))  # before the LR monitor reads groups
    if cfg.early_stopping.patience is not None:
        others.append(
            EarlyStopping(
                cfg.monitor,
                patience=cfg.early_stopping.patience,
                mode=cfg.monitor_mode,
                verbose=True,
            )
        )
    if logged:
        others.append(LearningRateMonitor(logging_interval="epoch"))
    return TrainingCallbacks(
        best=BestCheckpoint(checkpoints, cfg.monitor, cfg.monitor_mode),
        progress=[RichProgressBar()] if cfg.trainer.enable_progress_bar else [],
        others=others,
    )
