"""Evaluation figures: ranked images per class, confusion matrix, precision-recall curves and
the training curves of the run that made the checkpoint. Each goes to a PNG and to TensorBoard.

Figures are built as plain `matplotlib.figure.Figure` objects (no pyplot state, no display).
"""

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay
from torch.utils.data import Dataset
from torchmetrics.functional.classification import (
    binary_precision_recall_curve,
    multiclass_confusion_matrix,
)
from torchvision.utils import make_grid

from finetune.data.transforms import denormalize
from finetune.reports.figures import plain_log_axis

log = logging.getLogger(__name__)

# Scalar tags drawn as training curves: one panel per metric, one line per split.
CURVE_METRICS = ("loss", "acc_mean", "map")
CURVE_SPLITS = ("train", "val", "train_eval")
PAD = 2  # pixels between ranked images
TRAINING_TITLE = "training run of the checkpoint"
Curves = dict[str, tuple[list[float], list[float]]]  # tag -> (epochs, values)


def safe_name(name: str) -> str:
    """A class name usable in a file name (CIFAR and scene names already are)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "class"


def rank_by_class(scores: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """For each class c, the indices of the k images with the highest scores[:, c] (descending)
    and of the k with the lowest (ascending). Ties keep manifest order (stable sort).

    Returns two C x min(k, N) int64 tensors: top, bottom.
    """
    columns = scores.T.contiguous()
    k = min(k, scores.shape[0])
    top = torch.argsort(columns, dim=1, descending=True, stable=True)[:, :k]
    bottom = torch.argsort(columns, dim=1, stable=True)[:, :k]
    return top, bottom


def ranked_images_figure(
    dataset: Dataset,
    top: Sequence[int],
    bottom: Sequence[int],
    class_scores: torch.Tensor,
    class_index: int,
    class_names: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
) -> Figure:
    """Two rows of tiles (highest, lowest scores of one class): the image as the network saw
    it (eval transform, un-normalised), its score and its true label (green if it is the class).

    Each row is one image (a torchvision grid) in one Axes: twenty Axes would take seconds.
    """
    columns = max(len(top), 1)
    figure = Figure(figsize=(1.3 * columns + 0.4, 3.8))
    figure.subplots_adjust(left=0.03, right=0.99, bottom=0.01, top=0.8, hspace=0.45)
    rows = (("top", top), ("bottom", bottom))
    for ax, (title, indices) in zip(figure.subplots(2, 1), rows, strict=True):
        ax.set_axis_off()
        ax.text(-0.005, 0.5, title, transform=ax.transAxes, rotation=90, ha="right", va="center")
        if not len(indices):
            continue
        tensors, labels = zip(*(dataset[int(index)] for index in indices), strict=True)
        images = denormalize(torch.stack(tensors), mean, std)
        grid = make_grid(images, nrow=columns, padding=PAD, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy())
        side = images.shape[-1]
        for col, (index, label) in enumerate(zip(indices, labels, strict=True)):
            ax.text(
                PAD + col * (side + PAD) + side / 2,
                -1,
                f"{float(class_scores[int(index)]):.3g}\n{class_names[label]}",
                ha="center",
                va="bottom",
                fontsize=7,
                color="green" if label == class_index else "red",
            )
    shared = len(set(map(int, top)) & set(map(int, bottom)))  # a split of fewer than 2k images
    figure.suptitle(
        f"{class_names[class_index]}: the {len(top)} highest and lowest softmax scores "
        "(above each image: score, true label)"
        + (f"; {shared} image(s) are in both rows: the split is small" if shared else ""),
        fontsize=9,
    )
    return figure


def confusion_figure(
    labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str]
) -> tuple[Figure, np.ndarray]:
    """The confusion matrix (rows: true class, columns: predicted class) and its figure.

    Counted by torchmetrics, like every other number of the evaluation; scikit-learn only draws.
    """
    matrix = multiclass_confusion_matrix(
        torch.as_tensor(predictions), torch.as_tensor(labels), len(class_names)
    ).numpy()
    side = 2.5 + 0.6 * len(class_names)
    figure = Figure(figsize=(side, side), layout="constrained")
    ax = figure.subplots()
    ConfusionMatrixDisplay(matrix, display_labels=list(class_names)).plot(
        ax=ax, xticks_rotation=45, colorbar=False, values_format="d"
    )
    ax.set_title(f"confusion matrix, {len(labels)} images", fontsize=10)
    return figure, matrix


def pr_curves_figure(
    labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str], ap: Sequence[float]
) -> Figure:
    """One-vs-rest precision-recall curve of every class present in the split.

    The points are torchmetrics', like the AP in the legend: one per distinct score, then
    (recall 0, precision 1). Each class is its own binary curve: torchmetrics' multiclass curve
    sets every recall to 1 when all images of the split are of class 0 (torchmetrics 1.9).
    """
    figure = Figure(figsize=(7.5, 5), layout="constrained")
    ax = figure.subplots()
    for c, name in enumerate(class_names):
        positive = labels == c
        if not positive.any():
            continue
        precision, recall, _ = binary_precision_recall_curve(
            torch.as_tensor(scores[:, c]), torch.as_tensor(positive).long()
        )
        ax.step(recall, precision, where="post", label=f"{name} (AP {ap[c]:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.03))
    ax.set_title("precision-recall, one class vs the rest")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside: covers no curve
    return figure


def read_training_curves(tensorboard_dir: Path) -> Curves:
    """{tag: (epochs, values)} of the curve tags, from the event files written by `fit` in
    `tensorboard_dir` or below it (logger.tensorboard.version=<name> writes into <name>/).

    Files without any train/* scalar hold what is not an epoch of the fit (the run's HParams
    entry, the post-training passes of older versions): they are left out. A run resumed in its
    own folder adds more fit files; they are merged by step, in the order they were written.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    wanted = {f"{split}/{metric}" for split in CURVE_SPLITS for metric in CURVE_METRICS}
    by_step: dict[str, dict[int, float]] = {}
    epoch_of_step: dict[int, float] = {}
    found = Path(tensorboard_dir).rglob("events.out.tfevents.*")
    for events in sorted(found, key=lambda path: path.name):  # the name starts with the time
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags = set(accumulator.Tags()["scalars"])
        if not any(tag.startswith("train/") for tag in tags):
            continue
        if "epoch" in tags:
            epoch_of_step.update({e.step: e.value for e in accumulator.Scalars("epoch")})
        for tag in sorted(tags & wanted):
            by_step.setdefault(tag, {}).update({e.step: e.value for e in accumulator.Scalars(tag)})
    curves = {}
    for tag, points in by_step.items():
        steps = sorted(points)
        curves[tag] = ([epoch_of_step.get(s, s) for s in steps], [points[s] for s in steps])
    return curves


def training_curves_figure(curves: Curves, title: str = TRAINING_TITLE) -> Figure:
    """Loss, mean class-wise accuracy and mAP per epoch, one line per split."""
    figure = Figure(figsize=(4 * len(CURVE_METRICS), 3.4), layout="constrained")
    epochs_logged = [epoch for epochs, _ in curves.values() for epoch in epochs]
    first, last = min(epochs_logged), max(epochs_logged)
    for ax, metric in zip(figure.subplots(1, len(CURVE_METRICS)), CURVE_METRICS, strict=True):
        for split in CURVE_SPLITS:
            tag = f"{split}/{metric}"
            if tag in curves:
                epochs, values = curves[tag]
                ax.plot(epochs, values, marker="o", markersize=3, label=split)
        ax.set(title=metric, xlabel="epoch", yscale="log" if metric == "loss" else "linear")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if last - first < 1:  # one epoch: one tick, not +-0.05 with crowded labels
            ax.set(xlim=(first - 0.5, last + 0.5), xticks=[first])
        if metric == "loss":  # plain numbers (1.2, not 1.2 x 10^0)
            plain_log_axis(ax.yaxis)
        if ax.lines:
            ax.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    return figure
