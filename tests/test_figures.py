"""Figures: one PNG per figure in the run folder, and the same PNG bytes in TensorBoard."""

import json
import shutil
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from finetune.reports.figures import FigureSink


def test_tensorboard_holds_the_bytes_of_the_png_written(tmp_path):
    figure = Figure(figsize=(3, 2))
    figure.subplots().imshow(np.random.default_rng(0).random((8, 12, 3)))
    sink = FigureSink(tmp_path)
    path = sink.write("example", "eval/example", figure)
    sink.close()

    assert path == tmp_path / "figures" / "example.png" and sink.paths == [path]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    (image,) = events.Images("eval/example")
    assert image.encoded_image_string == path.read_bytes()
    with Image.open(path) as png:
        assert (image.width, image.height) == png.size
    assert np.asarray(Image.open(path)).shape[:2] == (image.height, image.width)


def tick_labels(axes) -> list[str]:
    axes.figure.canvas.draw()  # tick labels are made when drawn
    return [label.get_text() for label in axes.get_xticklabels()]


def test_training_curves_of_one_epoch_have_one_epoch_tick_and_plain_loss_numbers():
    """One epoch (a `trainer.max_epochs=1` run): one tick `0` on a unit-wide axis, not
    -0.045 ... 0.045; the log-scaled loss axis reads 0.1 and 1, not 10^-1 and 10^0."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from finetune.reports.eval_figures import training_curves_figure

    one = {
        f"{split}/{metric}": ([0.0], [value])
        for split, value in (("train", 1.2), ("val", 1.1))
        for metric in ("loss", "acc_mean", "map")
    }
    figure = training_curves_figure(one)
    FigureCanvasAgg(figure)
    for axes in figure.axes:
        assert tick_labels(axes) == ["0"]
        assert axes.get_xlim() == (-0.5, 0.5)

    epochs = list(range(12))
    many = {"train/loss": (epochs, list(2.3 * np.exp(-np.array(epochs) / 3)))}
    figure = training_curves_figure(many)
    FigureCanvasAgg(figure)
    loss_axes = figure.axes[0]
    assert all(label.lstrip("−").isdigit() for label in tick_labels(loss_axes))  # whole epochs
    loss_axes.figure.canvas.draw()
    majors = [label.get_text() for label in loss_axes.get_yticklabels() if label.get_text()]
    assert "0.1" in majors and "1" in majors, majors


def visible_labels(axis) -> list[str]:
    """The tick labels (major and minor) drawn inside the axis' view, empty ones left out."""
    axis.axes.figure.canvas.draw()
    lo, hi = sorted(axis.get_view_interval())
    ticks = zip(
        [*axis.get_majorticklocs(), *axis.get_minorticklocs()],
        [*axis.get_majorticklabels(), *axis.get_minorticklabels()],
        strict=True,
    )
    return [label.get_text() for at, label in ticks if lo <= at <= hi and label.get_text()]


def test_report_loss_axes_read_plain_numbers_within_one_decade():
    """A loss that stays within one decade (no decade tick in view): matplotlib labels its log
    axis 1.65 x 10^0 or 3 x 10^-1 by itself; the report's figures read 1.65 and 0.3."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from finetune.reports.report_figures import lr_comparison_figure, winner_curves_figure

    def curves(losses: list[float]) -> dict:
        metrics = {"loss": losses, "acc_mean": [0.5, 0.6, 0.7], "map": [0.5, 0.6, 0.7]}
        splits = ("train", "train_eval", "val")
        return {f"{s}/{m}": ([0, 1, 2], v) for s in splits for m, v in metrics.items()}

    cases = [
        (lr_comparison_figure({"lr=0.01": curves([1.83, 1.7, 1.62])}), (1.6, 1.85)),
        (winner_curves_figure(curves([0.45, 0.38, 0.32]), "lr=0.01"), (0.3, 0.5)),
        # 0.8-1.8: log ticks would label 0.8, 0.9 and 1 only, nothing near the curve's top
        (winner_curves_figure(curves([1.8, 1.2, 0.8]), "lr=0.01"), (0.75, 1.85)),
    ]
    for figure, (low, high) in cases:
        FigureCanvasAgg(figure)
        loss_axes = figure.axes[0]
        assert loss_axes.get_yscale() == "log"
        labels = visible_labels(loss_axes.yaxis)
        assert len(labels) >= 2, labels
        assert all(low <= float(label) <= high for label in labels), labels  # plain numbers
    assert max(map(float, labels)) >= 1.6, labels  # 0.8-1.8: a label near the curve's top


def test_spectrum_rank_axis_has_whole_number_ticks():
    """5 or 20 eigenvalues: matplotlib would tick ranks 1.5 or 2.5, 7.5; a rank is whole."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from finetune.reports.analysis_figures import spectrum_figure

    for count in (5, 20):
        figure = spectrum_figure("m", {("fine-tuned", "a"): np.logspace(0, -3, count)})
        FigureCanvasAgg(figure)
        labels = visible_labels(figure.axes[0].xaxis)
        assert len(labels) >= 3 and all(label.isdigit() for label in labels), labels


def test_ranked_rows_that_share_images_say_so():
    """With fewer than 2 x 10 images in the split the top and bottom rows hold the same images:
    the title says how many, so the figure does not look like a bug."""
    import torch

    from finetune.reports.eval_figures import rank_by_class, ranked_images_figure

    images = [(torch.rand(3, 8, 8), label) for label in (0, 1, 0, 1)]
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    for k, shared in ((3, "2 image(s) are in both rows"), (2, None)):
        top, bottom = rank_by_class(scores, k=k)
        figure = ranked_images_figure(
            images, top[0], bottom[0], scores[:, 0], 0, ["a", "b"], [0.5] * 3, [0.5] * 3
        )
        title = figure._suptitle.get_text()
        assert (shared in title) if shared else ("both rows" not in title), title


def awkward_split() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels and softmax-like scores of 5 classes: scores rounded to 0.1 (many ties), "rare"
    with a single image, "fish" (the last class) absent and never predicted (score 0)."""
    rng = np.random.default_rng(3)
    labels = rng.choice([0, 1, 2], size=40)
    labels[7] = 3
    scores = np.round(rng.dirichlet(np.ones(5), size=40), 1)
    scores[:, 4] = 0.0
    scores /= scores.sum(axis=1, keepdims=True)
    return labels, scores.astype(np.float32), ["cat", "dog", "bird", "rare", "fish"]


def test_pr_curves_draw_the_points_of_scikit_learn():
    """Each drawn curve is scikit-learn's precision_recall_curve (the oracle): one point per
    distinct score, ties included, then (recall 0, precision 1); an absent class draws none."""
    from sklearn.metrics import precision_recall_curve

    from finetune.reports.eval_figures import pr_curves_figure

    labels, scores, names = awkward_split()
    only_cat = (np.zeros(4, dtype=int), scores[:4], names)  # torchmetrics' multiclass slip
    for labels, scores, names in (awkward_split(), only_cat):
        figure = pr_curves_figure(labels, scores, names, [0.5] * len(names))
        present = [c for c in range(len(names)) if (labels == c).any()]
        lines = figure.axes[0].get_lines()
        assert [line.get_label().split()[0] for line in lines] == [names[c] for c in present]
        for c, line in zip(present, lines, strict=True):
            precision, recall, _ = precision_recall_curve(labels == c, scores[:, c])
            np.testing.assert_allclose(np.asarray(line.get_xdata()), recall, atol=1e-6)
            np.testing.assert_allclose(np.asarray(line.get_ydata()), precision, atol=1e-6)


def test_confusion_matrix_counts_equal_scikit_learn():
    """Rows true class, columns predicted class, in class order; a class absent or never
    predicted keeps its zero row or column; the figure shows the same counts."""
    from sklearn.metrics import confusion_matrix

    from finetune.reports.eval_figures import confusion_figure

    labels, scores, names = awkward_split()
    predictions = scores.argmax(axis=1)
    figure, matrix = confusion_figure(labels, predictions, names)
    expected = confusion_matrix(labels, predictions, labels=range(len(names)))
    assert matrix.tolist() == expected.tolist()
    assert matrix[:, 4].sum() == matrix[4].sum() == 0 and matrix[3].sum() == 1
    np.testing.assert_array_equal(figure.axes[0].images[0].get_array(), expected)


def write_fit_logs(folder: Path, epochs: range, loss: float) -> None:
    """The curves a fit logs per epoch (train/loss, val/map, epoch; two steps an epoch), as
    Lightning writes them, with loss + epoch as train/loss."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(folder)
    for epoch in epochs:
        for tag, value in (("train/loss", loss + epoch), ("val/map", 0.5), ("epoch", epoch)):
            writer.add_scalar(tag, value, 2 * epoch + 1)
    writer.close()


def recorded_run(run: Path, cwd: Path, resume: str | None, interrupted: bool = False) -> None:
    """What a training run keeps of how it started: the folder it ran from and its resume=
    (.hydra/), and its results (metrics.json) unless it was stopped with Ctrl-C."""
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {cwd}\n")
    (run / ".hydra" / "overrides.yaml").write_text(f"- resume={resume}\n" if resume else "[]\n")
    if not interrupted:
        (run / "metrics.json").write_text(json.dumps({"resumed_from": resume}))


def test_eval_finds_the_training_curves_from_what_the_checkpoint_records(tmp_path):
    """The logs of the run that wrote the checkpoint, found from best_model.pt's record of its
    best epoch: for a sweep winner's copy at the sweep root, and in tensorboard/<version>/; a
    resumed run's curves join those of the runs it resumed (from their records, each relative
    to where it ran; the one stopped with Ctrl-C by its command line), and once those are gone,
    the title says which epochs it shows."""
    import torch

    from finetune.checkpoint import LoadedModel
    from finetune.reports.eval_report import training_curves

    def loaded(path: Path, **metrics) -> LoadedModel:
        return LoadedModel(torch.nn.Identity(), ["a", "b"], {}, None, path, metrics)

    sweep = tmp_path / "multirun" / "day" / "time"
    write_fit_logs(sweep / "3" / "tensorboard", range(2), 1.0)
    best = str(sweep / "3" / "checkpoints" / "epoch001.ckpt")
    curves, title = training_curves(loaded(sweep / "best_model.pt", best_checkpoint=best))
    assert curves["train/loss"] == ([0, 1], [1.0, 2.0])
    assert title == "training run of the checkpoint: epochs 0-1"

    moved = tmp_path / "moved"  # a run folder moved after training: its record names the old
    write_fit_logs(moved / "tensorboard", range(1), 5.0)
    gone = str(tmp_path / "was-here" / "checkpoints" / "epoch000.ckpt")
    curves, _ = training_curves(loaded(moved / "best_model.pt", best_checkpoint=gone))
    assert curves["train/loss"] == ([0], [5.0])

    write_fit_logs(tmp_path / "versioned" / "tensorboard" / "v1", range(1), 1.0)
    curves, title = training_curves(loaded(tmp_path / "versioned" / "best_model.pt"))
    assert curves["val/map"] == ([0], [0.5]) and title.endswith("epoch 0")

    # first: epoch 0; interrupted: epochs 1-2, resumed by `end` from its epoch 1 (relative)
    first, interrupted, end = (tmp_path / "runs" / name for name in ("first", "stop", "end"))
    write_fit_logs(first / "tensorboard", range(1), 10.0)
    write_fit_logs(interrupted / "tensorboard", range(1, 3), 20.0)
    write_fit_logs(end / "tensorboard", range(2, 4), 30.0)
    recorded_run(first, tmp_path, None)
    recorded_run(interrupted, tmp_path / "runs", "first", interrupted=True)
    recorded_run(end, tmp_path, "runs/stop/checkpoints/epoch001.ckpt")
    checkpoint = loaded(
        end / "best_model.pt",
        best_checkpoint=str(end / "checkpoints" / "epoch003.ckpt"),
        resumed_from="runs/stop/checkpoints/epoch001.ckpt",
    )
    curves, title = training_curves(checkpoint)
    assert curves["train/loss"] == ([0, 1, 2, 3], [10.0, 21.0, 32.0, 33.0])
    assert title == (
        "training run of the checkpoint: epochs 0-3, over 3 runs (each resumed the one before)"
    )
    shutil.rmtree(interrupted)
    curves, title = training_curves(checkpoint)
    assert curves["train/loss"] == ([2, 3], [32.0, 33.0])
    assert title == (
        "training run of the checkpoint: epochs 2-3 (not the earlier ones: the run it resumed "
        "is gone)"
    )
