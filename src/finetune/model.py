"""The LightningModule: a torchvision network (model.arch) + cross-entropy + per-split
torchmetrics + optimizer config."""

from typing import Any

import lightning as L
import torch
from torch import nn

from finetune.metrics import ClassificationMetrics, flatten
from finetune.network import (
    DEFAULT_ARCH,
    backbone_modules,
    backbone_parameters,
    build_network,
    check_image_size,
    head_name,
)
from finetune.optim import build_optimizer, build_scheduler, constant_schedule

# validation dataloader index -> the name its metrics are logged under
VAL_LOADERS = ("val", "train_eval")
PROGRESS_BAR = {"train/loss", "val/loss", "val/acc_mean", "val/map"}
# The learning rate's tag, beside the other train/ curves (train/lr/head, train/lr/backbone with
# named param groups): Lightning's LearningRateMonitor logs a schedule under its config's name.
LR_TAG = "train/lr"


Batch = tuple[torch.Tensor, torch.Tensor]  # images, labels


class ImageClassifier(L.LightningModule):
    """Fine-tunes a torchvision network (ResNet18 by default) and logs loss, accuracy, class-wise
    accuracy and AP per epoch.

    Hyperparameters are plain containers, so Lightning checkpoints load with weights_only=True.
    """

    def __init__(
        self,
        class_names: list[str],
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        data: dict[str, Any],
        pretrained: bool = True,
    ) -> None:
        """`pretrained=False` builds the network without loading model.weights (still recorded
        in the hyperparameters): a resumed run's checkpoint replaces them."""
        super().__init__()
        self.save_hyperparameters(ignore=["pretrained"])
        self.class_names = list(class_names)
        arch = model.get("arch", DEFAULT_ARCH)
        self.net = build_network(
            len(class_names),
            model["weights"] if pretrained else "none",
            model["head_seed"],
            model["freeze_backbone"],
            model.get("weights_url"),  # absent from checkpoints written before the key existed
            arch,
        )
        self.head_name = head_name(self.net)
        if "image_size" in data:
            check_image_size(self.net, arch, data["image_size"], len(class_names))
        if model.get("channels_last"):
            self.net = self.net.to(memory_format=torch.channels_last)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=model["label_smoothing"])
        # keyed "<split>_metrics": a key "train" would clash with nn.Module.train
        self.metrics = nn.ModuleDict(
            {
                f"{split}_metrics": ClassificationMetrics(len(class_names))
                for split in ("train", *VAL_LOADERS, "test")
            }
        )
        if model.get("compile"):
            self.net.compile()  # in place: state-dict keys keep their names

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.model.get("channels_last"):
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def _step(self, batch: Batch, split: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        self.metrics[f"{split}_metrics"].update(logits, labels, loss)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        self.log("train/loss_step", loss, prog_bar=True, batch_size=batch[1].numel())
        return loss

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, VAL_LOADERS[dataloader_idx])

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def _log_epoch(self, splits: tuple[str, ...]) -> None:
        for split in splits:
            metrics = self.metrics[f"{split}_metrics"]
            if not metrics.loss.update_called:
                continue
            for name, value in flatten(metrics.compute(), self.class_names, split).items():
                self.log(
                    name,
                    value,
                    prog_bar=name in PROGRESS_BAR,
                    add_dataloader_idx=False,
                    sync_dist=True,  # already synced by torchmetrics: a mean of equal values
                )
            metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch(("train",))

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(VAL_LOADERS)

    def on_test_epoch_end(self) -> None:
        self._log_epoch(("test",))

    def backbone_modules(self) -> list[nn.Module]:
        """The network's modules outside its head that hold parameters."""
        return backbone_modules(self.net, self.head_name)

    def backbone_frozen(self) -> bool:
        """No backbone parameter trains: a linear probe (model.freeze_backbone), or the first
        stage of staged unfreezing (model.unfreeze_at_epoch)."""
        return not any(p.requires_grad for p in backbone_parameters(self.net, self.head_name))

    def train(self, mode: bool = True) -> "ImageClassifier":
        """While the backbone is frozen, training mode reaches the head only: the rest stays in
        eval mode, so its BatchNorm running statistics never change and its dropout is off (the
        head learns on the very features evaluation computes)."""
        super().train(mode)
        if mode and self.backbone_frozen():
            self.net.eval()
            self.net.get_submodule(self.head_name).train()
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning does not call train() when fit starts (only restores modes after validation)
        self.train()

    def param_groups(self) -> list[dict[str, Any]]:
        """One group of every trainable parameter; or, when the backbone learns at its own rate
        (optimizer.backbone_lr_mult != 1) or joins later (model.unfreeze_at_epoch), a "head" group
        and a "backbone" group (once it trains), named so that the logged learning rates say
        which is which (train/lr/head, train/lr/backbone)."""
        lr_mult = self.hparams.optimizer.get("backbone_lr_mult", 1.0)
        if lr_mult == 1 and self.hparams.model.get("unfreeze_at_epoch") is None:
            return [{"params": [p for p in self.net.parameters() if p.requires_grad]}]
        head = self.net.get_submodule(self.head_name).parameters()
        groups = [{"name": "head", "params": [p for p in head if p.requires_grad]}]
        backbone = [p for p in backbone_parameters(self.net, self.head_name) if p.requires_grad]
        if backbone:
            lr = self.hparams.optimizer["lr"] * lr_mult
            groups.append({"name": "backbone", "params": backbone, "lr": lr})
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.param_groups(), self.hparams.optimizer)
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        scheduler = build_scheduler(optimizer, self.hparams.scheduler, epochs)
        if scheduler is None:  # scheduler=none: a constant one, for the name of the logged rate
            scheduler = constant_schedule(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "name": LR_TAG},
        }
