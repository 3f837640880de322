"""Class-wise accuracy (per-class recall) and one-vs-rest average precision, by torchmetrics.

Convention: a class with no images in the split has no recall and no AP (NaN); the means
(acc_mean, map) are taken over the classes that are present.
"""

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAveragePrecision,
    MulticlassStatScores,
)


class ClassificationMetrics(nn.Module):
    """Loss, overall accuracy, class-wise accuracy and AP of one split.

    Every number comes from a torchmetrics metric, so it is synced across DDP processes.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.scores = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "acc_class": MulticlassAccuracy(num_classes, average=None),
                "ap_class": MulticlassAveragePrecision(num_classes, average=None, thresholds=None),
                "stats": MulticlassStatScores(num_classes, average=None),
            },
            compute_groups=False,
        )
        self.loss = MeanMetric()

    def update(
        self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | None = None
    ) -> None:
        self.scores.update(logits.detach().float(), target)
        if loss is not None:
            self.loss.update(loss.detach().float(), weight=target.numel())

    def compute(self) -> dict[str, torch.Tensor]:
        values = self.scores.compute()
        present = values["stats"][:, 4] > 0  # support: images of the class
        acc_class = torch.where(present, values["acc_class"], torch.nan)
        ap_class = torch.where(present, values["ap_class"], torch.nan)
        result = {
            "acc": values["acc"],
            "acc_mean": acc_class.nanmean(),
            "map": ap_class.nanmean(),
            "acc_class": acc_class,
            "ap_class": ap_class,
        }
        if self.loss.update_called:
            result["loss"] = self.loss.compute()
        return result

    def reset(self) -> None:
        self.scores.reset()
        self.loss.reset()


def flatten(values: dict[str, torch.Tensor], class_names: Sequence[str], prefix: str) -> dict:
    """{prefix/acc_mean: x, prefix/acc/<class>: y, ...} as floats: for logging and JSON."""
    flat = {}
    for key, value in values.items():
        if key in ("acc_class", "ap_class"):
            short = key.removesuffix("_class")
            for name, per_class in zip(class_names, value, strict=True):
                flat[f"{prefix}/{short}/{name}"] = float(per_class)
        else:
            flat[f"{prefix}/{key}"] = float(value)
    return flat
