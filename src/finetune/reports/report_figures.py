"""The sweep report's own figures, from the runs' TensorBoard curves: every run's validation
curves in one figure (the learning-rate comparison), and the winner's curves of every split."""

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from finetune.reports.figures import plain_log_axis

Curves = dict[str, tuple[list[float], list[float]]]
METRICS = (("loss", "loss"), ("acc_mean", "mean class-wise accuracy"), ("map", "mAP"))
SPLITS = ("train", "train_eval", "val")


def _epoch_ticks(axes: list) -> None:
    """Whole epochs on the x axis, also when a run has only one or two of them."""
    for ax in axes:
        epochs = sorted({int(x) for line in ax.lines for x in line.get_xdata()})
        if epochs and epochs[-1] - epochs[0] <= 15:
            ax.set_xticks(range(epochs[0], epochs[-1] + 1))
            ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)


def _curves_figure(title: str, series: dict[str, tuple[Curves, str]]) -> Figure:
    """One panel per metric; one line per `label: (curves, split)` that logged it, in the same
    colour in every panel, named once in a legend under the panels: a legend inside a panel
    hides curves, and long labels (a sweep of several parameters) squeeze the panels away."""
    columns = max(1, min(len(series), 3))
    legend_rows = -(-len(series) // columns)
    figure = Figure(figsize=(12, 3.6 + 0.22 * legend_rows), layout="constrained")
    axes = list(figure.subplots(1, len(METRICS)))
    for ax, (metric, name) in zip(axes, METRICS, strict=True):
        ax.set(title=name, xlabel="epoch", yscale="log" if metric == "loss" else "linear")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric == "loss":
            plain_log_axis(ax.yaxis)
        ax.grid(True, alpha=0.3)
        for colour, (label, (curves, split)) in enumerate(series.items()):
            if f"{split}/{metric}" in curves:
                epochs, values = curves[f"{split}/{metric}"]
                ax.plot(epochs, values, f"C{colour}", marker="o", markersize=3, label=label)
    lines = {line.get_label(): line for ax in axes for line in ax.lines}
    if lines:
        figure.legend(
            [lines[label] for label in series if label in lines],
            [label for label in series if label in lines],
            loc="outside lower center",
            ncols=columns,
            fontsize=8,
            frameon=False,
        )
    figure.suptitle(title, fontsize=11)
    _epoch_ticks(axes)
    return figure


def lr_comparison_figure(curves_by_run: dict[str, Curves]) -> Figure:
    """val/loss, val/acc_mean and val/map per epoch, one line per run of the sweep."""
    return _curves_figure(
        "validation curves of every run of the sweep",
        {label: (curves, "val") for label, curves in curves_by_run.items()},
    )


def winner_curves_figure(curves: Curves, label: str) -> Figure:
    """Loss, mean class-wise accuracy and mAP per epoch of the winning run, one line per split
    (train: augmented, while the weights change; train_eval and val: evaluation transform)."""
    return _curves_figure(
        f"training curves of the winner ({label})", {split: (curves, split) for split in SPLITS}
    )
