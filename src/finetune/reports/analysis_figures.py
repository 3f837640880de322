"""Figures of mode=analyze: one eigenvalue-spectrum plot per module, as PNG and in TensorBoard."""

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from finetune.features import nonzero_eigenvalues
from finetune.reports.figures import FIGURES, FigureSink


def spectrum_figure(module: str, spectra: Mapping[str, np.ndarray]) -> Figure:
    """Eigenvalues against their rank on a log scale, one line per (model, dataset) label.

    Eigenvalues at rounding-noise level (a covariance of N images has rank at most N - 1) are
    left out; the legend says how many of each spectrum are drawn.
    """
    figure = Figure(figsize=(7.0, 4.5), layout="constrained")
    axes = figure.subplots()
    for label, eigenvalues in spectra.items():
        values = np.asarray(eigenvalues, dtype=np.float64)
        shown = nonzero_eigenvalues(values)
        ranks = np.arange(1, len(values) + 1)
        axes.plot(
            ranks[shown],
            values[shown],
            linewidth=1.2,
            label=f"{label} ({int(shown.sum())}/{len(values)})",
        )
    axes.set_yscale("log")
    axes.set_xlabel("eigenvalue rank")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # ranks are whole numbers
    axes.set_ylabel("eigenvalue (variance along the direction)")
    axes.set_title(f"{module}: covariance spectrum of the spatially averaged channels")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def spectrum_path(module: str) -> str:
    """Where a module's plot lands, relative to the run folder."""
    return f"{FIGURES}/spectrum_{module}.png"


def spectrum_tag(module: str) -> str:
    """A module's plot in TensorBoard."""
    return f"analysis/spectrum/{module}"


def write_spectrum_figures(
    sink: FigureSink, spectra_by_module: Mapping[str, Mapping[str, np.ndarray]]
) -> list[Path]:
    """Each module's spectrum plot as a PNG and under analysis/spectrum/<module> in TensorBoard."""
    return [
        sink.write(f"spectrum_{module}", spectrum_tag(module), spectrum_figure(module, spectra))
        for module, spectra in spectra_by_module.items()
    ]
