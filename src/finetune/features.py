"""Feature-map statistics accumulated batch by batch, so memory does not grow with the image count.

For one feature map (a graph node of the network, e.g. `layer1.0.conv1`) over N images:

- the fraction of non-positive values over all elements of all N maps;
- the covariance over channels of the spatially averaged maps (one C-vector per image; a 2-D
  output, B x C like the head's, is that vector already), its eigenvalues (descending, those at
  rounding-noise level set to 0) and a summary of that spectrum.

FeatureStatsModule runs a feature extractor in Lightning's predict loop and accumulates them.
"""

import difflib
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from finetune.errors import UserError


class FeatureStats:
    """Non-positive count and channel mean / scatter of one feature map, in float64.

    Batches are merged with the pairwise update of Chan et al. (mean and centred scatter
    rather than raw sums of outer products): the same numbers whatever the batch size, without
    the cancellation of `sum(x x^T) - N mean mean^T` when the mean dominates the variance.
    Memory is O(C^2), independent of the number of images.
    """

    def __init__(self) -> None:
        self.count = 0
        self.shape: tuple[int, ...] | None = None
        self.nonpositive = 0
        self.elements = 0
        self.mean: torch.Tensor | None = None
        self.scatter: torch.Tensor | None = None

    def update(self, maps: torch.Tensor) -> None:
        """Add a batch of maps, B x C (x spatial dims...)."""
        if maps.ndim < 2:
            raise ValueError(f"expected feature maps B x C x ..., got {tuple(maps.shape)}")
        shape = tuple(maps.shape[1:])
        if self.shape is None:
            self.shape = shape
        elif shape != self.shape:
            raise ValueError(f"feature map shape changed from {self.shape} to {shape}")
        maps = maps.detach()
        self.nonpositive += int((maps <= 0).sum())
        self.elements += maps.numel()
        vectors = maps.flatten(2).mean(-1, dtype=torch.float64) if maps.ndim > 2 else maps.double()
        size = vectors.shape[0]
        batch_mean = vectors.mean(0)
        centred = vectors - batch_mean
        batch_scatter = centred.T @ centred
        if self.mean is None:
            self.count, self.mean, self.scatter = size, batch_mean, batch_scatter
            return
        total = self.count + size
        delta = batch_mean - self.mean
        self.scatter += batch_scatter + torch.outer(delta, delta) * (self.count * size / total)
        self.mean += delta * (size / total)
        self.count = total

    @property
    def nonpositive_fraction(self) -> float:
        return self.nonpositive / self.elements

    def covariance(self) -> np.ndarray:
        """The unbiased (N - 1) covariance over channels, C x C, as numpy.cov computes it."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 images, got {self.count}")
        return (self.scatter / (self.count - 1)).cpu().numpy()

    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of the covariance, largest first, those at rounding-noise level
        (nonzero_eigenvalues) set to 0: negatives among them, since a covariance is positive
        semi-definite, and the tiny positives beyond its rank (N images: at most N - 1). So
        every report (tables, plots, spectrum_summary) shows the same numbers."""
        values = np.linalg.eigvalsh(self.covariance())[::-1]
        return np.where(nonzero_eigenvalues(values), values, 0.0)


def nonzero_eigenvalues(eigenvalues: np.ndarray) -> np.ndarray:
    """Mask of the eigenvalues above rounding noise: numpy.linalg.matrix_rank's default
    tolerance, largest |eigenvalue| x C x float64 epsilon."""
    values = np.asarray(eigenvalues, dtype=np.float64)
    if not values.size:
        return values > 0
    return values > np.abs(values).max() * values.size * np.finfo(np.float64).eps


def spectrum_summary(eigenvalues: np.ndarray) -> dict[str, float]:
    """Total variance, share of it in the top 1 / top 10 eigenvalues, effective and numerical
    rank.

    Effective rank (Roy & Vetterli, 2007) = exp(H(p)), H the Shannon entropy of the normalised
    spectrum p = lambda / sum(lambda): C for a flat spectrum, 1 when one direction holds all the
    variance. Eigenvalues at rounding-noise level (see nonzero_eigenvalues) count as 0; the
    numerical rank is how many are above it (at most N - 1 for N images).
    """
    values = np.asarray(eigenvalues, dtype=np.float64)
    values = np.where(nonzero_eigenvalues(values), values, 0.0)
    total = float(values.sum())
    rank = int((values > 0).sum())
    if total <= 0.0:
        nan = float("nan")
        return {
            "total_variance": total,
            "rank": rank,
            "share_top1": nan,
            "share_top10": nan,
            "effective_rank": nan,
        }
    shares = values / total
    positive = shares[shares > 0]
    return {
        "total_variance": total,
        "rank": rank,
        "share_top1": float(shares[:1].sum()),
        "share_top10": float(shares[:10].sum()),
        "effective_rank": float(np.exp(-(positive * np.log(positive)).sum())),
    }


def feature_extractor(net: nn.Module, modules: Sequence[str]) -> nn.Module:
    """The network cut after the listed graph nodes, returning their outputs by name.

    Names are torchvision's feature-extraction node names: module names (`layer1.0.conv1`),
    and for a module called twice in one forward (a residual block's ReLU) `layer1.0.relu` is
    its first call and `layer1.0.relu_1` its second.
    """
    modules = list(dict.fromkeys(modules))
    if not modules:
        raise UserError("analysis.modules is empty: list at least one module, or use auto")
    _, nodes = get_graph_node_names(net)
    unknown = [name for name in modules if name not in nodes]
    if unknown:  # close names from this network's own graph, else a spread of its nodes
        close = difflib.get_close_matches(unknown[0], nodes, n=8, cutoff=0.5)
        examples = sorted(close or nodes[1 :: max(1, len(nodes) // 8)], key=nodes.index)
        raise UserError(
            f"analysis.modules: unknown module(s) {', '.join(unknown)}; valid names include "
            f"{', '.join(examples)} ({len(nodes)} graph nodes in all; or analysis.modules=auto)"
        )
    return create_feature_extractor(net, return_nodes=modules).eval()


class FeatureStatsModule(L.LightningModule):
    """A feature extractor whose predict step adds each batch's maps to `stats` (one
    FeatureStats per node), so the analysis runs in Lightning's predict loop
    (finetune.inference.run_predict): its device, precision (autocast for bf16-mixed) and
    progress bar. The statistics are accumulated in float64 whatever the precision."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor
        self.stats: dict[str, FeatureStats] = {}
        self.device_used = ""

    def on_predict_start(self) -> None:
        self.device_used = str(self.device)  # Lightning moves the module back to the CPU after

    def predict_step(self, batch: Any, batch_idx: int) -> int:
        """Adds the batch; returns its image count (a step returning None makes Lightning warn)."""
        outputs: dict[str, torch.Tensor] = self.extractor(batch[0])
        with torch.autocast(self.device.type, enabled=False):
            for name, maps in outputs.items():
                self.stats.setdefault(name, FeatureStats()).update(maps)
        return len(batch[0])
