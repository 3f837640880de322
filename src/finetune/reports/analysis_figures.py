"""Figures of mode=analyze: one eigenvalue-spectrum plot per module, as PNG and in TensorBoard."""

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from finetune.features import nonzero_eigenvalues
from finetune.reports.figures import FIGURES, FigureSink

# Each dataset has one colour (in the order given) and each model one style, so that the two lines
# of a dataset pair up, and identical spectra (a frozen backbone, or module `x`, the input) stay
# visible: the fine-tuned line is a wide pale band, the pretrained one dashed on top of it.
# Markers show every eigenvalue, so a spectrum of one point (2 images: rank 1) is drawn too.
MODEL_STYLES = {
    "fine-tuned": {"linestyle": "-", "linewidth": 3.0, "alpha": 0.45, "marker": "o", "zorder": 2},
    "pretrained": {"linestyle": "--", "linewidth": 1.2, "marker": ".", "zorder": 3},
}
LEGEND_TITLE = "model / dataset: eigenvalues drawn (> 0) of channels"


def spectrum_figure(module: str, spectra: Mapping[tuple[str, str], np.ndarray]) -> Figure:
    """Eigenvalues against their rank on a log scale, one line per (model, dataset).

    Eigenvalues at rounding-noise level (0 in the reports: a covariance of N images has rank at
    most N - 1) have no place on a log scale and are left out; the legend says how many of each
    spectrum are drawn, of how many channels.
    """
    figure = Figure(figsize=(7.0, 4.5), layout="constrained")
    axes = figure.subplots()
    datasets = list(dict.fromkeys(dataset for _, dataset in spectra))
    for (model, dataset), eigenvalues in spectra.items():
        values = np.asarray(eigenvalues, dtype=np.float64)
        shown = nonzero_eigenvalues(values)
        ranks = np.arange(1, len(values) + 1)
        axes.plot(
            ranks[shown],
            values[shown],
            color=f"C{datasets.index(dataset)}",
            label=f"{model} / {dataset}: {int(shown.sum())} of {len(values)}",
            **MODEL_STYLES[model],
        )
    axes.set_yscale("log")
    axes.set_xlabel("eigenvalue rank")
    # ranks are whole numbers: rank 1 alone is ticked 1, not 0.96, 0.98, 1.00, ...
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.set_ylabel("eigenvalue (variance along the direction)")
    axes.set_title(f"{module}: eigenvalues of the channel covariance")
    axes.grid(True, alpha=0.3)
    axes.legend(title=LEGEND_TITLE, fontsize="small", title_fontsize="small")
    return figure


def spectrum_path(module: str) -> str:
    """Where a module's plot lands, relative to the run folder."""
    return f"{FIGURES}/spectrum_{module}.png"


def spectrum_tag(module: str) -> str:
    """A module's plot in TensorBoard."""
    return f"analysis/spectrum/{module}"


def write_spectrum_figures(
    sink: FigureSink, spectra_by_module: Mapping[str, Mapping[tuple[str, str], np.ndarray]]
) -> list[Path]:
    """Each module's spectrum plot as a PNG and under analysis/spectrum/<module> in TensorBoard."""
    return [
        sink.write(f"spectrum_{module}", spectrum_tag(module), spectrum_figure(module, spectra))
        for module, spectra in spectra_by_module.items()
    ]
