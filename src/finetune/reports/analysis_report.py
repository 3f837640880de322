"""The reports of mode=analyze: feature_stats.json (every number), nonpositive.csv (the
non-positive share of each module, rows model x dataset), analysis.md (tables, the definitions
of every statistic, the spectrum plots) and the spectra in figures/ and TensorBoard."""

import logging
from pathlib import Path
from typing import Any

import numpy as np

from finetune.errors import UserError
from finetune.features import FeatureStats, spectrum_summary
from finetune.io import write_csv, write_json, write_text
from finetune.reports.analysis_figures import spectrum_path, spectrum_tag, write_spectrum_figures
from finetune.reports.figures import FigureSink
from finetune.reports.markdown import markdown_table

log = logging.getLogger(__name__)

STATS = "feature_stats.json"
NONPOSITIVE = "nonpositive.csv"
SUMMARY = "analysis.md"
DEFINITIONS = {
    "nonpositive_fraction": "share of the output elements <= 0, over all elements of all N "
    "outputs (N x C x H x W; N x C for a 2-D output such as fc's)",
    "covariance": "unbiased (N - 1) covariance over channels of one C-vector per image: its "
    "feature maps averaged over space (a 2-D output such as fc's is that vector already), "
    "accumulated in float64",
    "eigenvalues": "eigenvalues of that C x C covariance, largest first; those at rounding-noise "
    "level (at most numpy.linalg.matrix_rank's tolerance, negatives included: a covariance is "
    "positive semi-definite) are set to 0, so N images give at most N - 1 above 0. The tables "
    "list the first min(analysis.top_k, C); the plots leave the zeros out (log scale)",
    "rank": "eigenvalues above 0 (above rounding noise, numpy.linalg.matrix_rank's tolerance); "
    "at most N - 1",
    "share_top1": "largest eigenvalue / sum of eigenvalues",
    "share_top10": "sum of the 10 largest eigenvalues / sum of eigenvalues",
    "effective_rank": "exp(entropy of the normalised spectrum lambda / sum(lambda)) (Roy & "
    "Vetterli 2007): C for a flat spectrum, 1 if one direction holds all the variance",
    "sample": "analysis.num_images images per dataset (num_images in feature_stats.json: as "
    "asked), or all of a dataset that holds fewer (N in the tables, datasets.<name>.num_images: "
    "as read): the first of a shuffle seeded by `seed`, read in file order (a manifest lists its "
    "images class by class: its first N would be one class)",
}


def require_new_run_folder(run_dir: Path) -> None:
    """A run never overwrites the reports of another: refuse a folder that holds one."""
    for name in (STATS, NONPOSITIVE, SUMMARY):
        if (run_dir / name).exists():
            raise UserError(
                f"{run_dir / name} already exists and is kept: write into a new run folder"
            )


def stats_record(model: str, dataset: str, module: str, stats: FeatureStats) -> dict[str, Any]:
    """One (model, dataset, module) result: the non-positive share and the spectrum."""
    eigenvalues = stats.eigenvalues()
    return {
        "model": model,
        "dataset": dataset,
        "module": module,
        "num_images": stats.count,
        "shape": list(stats.shape),
        "nonpositive_fraction": stats.nonpositive_fraction,
        "nonpositive_elements": stats.nonpositive,
        "elements": stats.elements,
        **spectrum_summary(eigenvalues),
        "eigenvalues": eigenvalues.tolist(),
    }


def _by_pair(records: list[dict]) -> dict[tuple[str, str], dict[str, dict]]:
    pairs: dict[tuple[str, str], dict[str, dict]] = {}
    for record in records:
        pairs.setdefault((record["model"], record["dataset"]), {})[record["module"]] = record
    return pairs


def nonpositive_rows(records: list[dict], modules: list[str]) -> list[list[Any]]:
    """One row per (model, dataset): the non-positive % of each module (the report's table)."""
    return [
        [model, dataset, *(round(100 * by[m]["nonpositive_fraction"], 4) for m in modules)]
        for (model, dataset), by in _by_pair(records).items()
    ]


def _output_shape(shape: list[int]) -> str:
    """A module's output per image: '64 channels of 8 x 8 maps', or for a 2-D output (the
    head's) '6 channels, a 2-D output: no maps'."""
    channels, spatial = shape[0], shape[1:]
    if not spatial:
        return f"{channels} channels, a 2-D output: no maps"
    return f"{channels} channels of {' x '.join(map(str, spatial))} maps"


def summary_markdown(payload: dict[str, Any], in_tensorboard: bool = False) -> str:
    """analysis.md: the non-positive table, the definitions, a spectrum table and plot per
    module, and what was skipped. `in_tensorboard`: the text TensorBoard shows, where a plot's
    relative link would be a broken image: it names the plot's tag instead."""
    modules, top_k, records = payload["modules"], payload["top_k"], payload["results"]
    pairs = _by_pair(records)
    arch = payload["arch"]
    compared = any(record["model"] == "pretrained" for record in records)
    against = (
        f"and the ImageNet-pretrained {arch} with a new head"
        if compared
        else "the ImageNet-pretrained one was skipped: see Skipped"
    )
    used = ", ".join(f"{name} {data['num_images']}" for name, data in payload["datasets"].items())
    lines = [
        "# Feature-map statistics (mode=analyze)",
        "",
        f"Checkpoint `{payload['checkpoint']}` ({arch}, {against}); images per dataset: {used} "
        f"(analysis.num_images={payload['num_images']}, seeded sample, seed {payload['seed']}; "
        "a dataset that holds fewer gives all it has), evaluation transform "
        f"{payload['image_size']} px; computed in {payload['wall_time_s']} s "
        f"on {payload['device']} ({payload['precision']}).",
        "",
        "## Non-positive values (% of all output elements)",
        "",
        markdown_table(
            ["model", "dataset", "N", *modules],
            [
                [
                    model,
                    dataset,
                    next(iter(by.values()))["num_images"],
                    *(100 * by[m]["nonpositive_fraction"] for m in modules),
                ]
                for (model, dataset), by in pairs.items()
            ],
            digits=2,
        ),
        "## Eigenvalues of the channel covariance",
        "",
        *(f"- **{key}**: {text}" for key, text in DEFINITIONS.items()),
        "",
    ]
    for module in modules:
        shape = next(iter(pairs.values()))[module]["shape"]
        listed = min(top_k, shape[0])  # a module has as many eigenvalues as channels
        lines += [
            f"### {module} ({_output_shape(shape)})",
            "",
            markdown_table(
                [
                    "model",
                    "dataset",
                    f"top-{listed} eigenvalues",
                    "top-1 share",
                    "top-10 share",
                    "effective rank",
                    "rank",
                ],
                [
                    [
                        model,
                        dataset,
                        ", ".join(f"{v:.3g}" for v in r["eigenvalues"][:listed]),
                        r["share_top1"],
                        r["share_top10"],
                        r["effective_rank"],
                        r["rank"],
                    ]
                    for (model, dataset), r in ((pair, by[module]) for pair, by in pairs.items())
                ],
                digits=3,
            ),
            f"(plot: IMAGES tab, {spectrum_tag(module)})"
            if in_tensorboard
            else f"![{module}]({spectrum_path(module)})",
            "",
        ]
    if payload["skipped"]:
        lines += ["## Skipped", ""]
        lines += [
            f"- {what} {name}: {reason}"
            for (what, name), (_, reason) in (s.items() for s in payload["skipped"])
        ]
    return "\n".join(lines) + "\n"


def _spectra(records: list[dict]) -> dict[str, dict[tuple[str, str], np.ndarray]]:
    spectra: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    for record in records:
        pair = (record["model"], record["dataset"])
        spectra.setdefault(record["module"], {})[pair] = np.asarray(record["eigenvalues"])
    return spectra


def write_analysis_reports(run_dir: Path, payload: dict[str, Any]) -> None:
    """Every report of `payload` (the task's result) into `run_dir`, feature_stats.json last."""
    modules, records = payload["modules"], payload["results"]
    write_csv(
        run_dir / NONPOSITIVE, ["model", "dataset", *modules], nonpositive_rows(records, modules)
    )
    markdown = summary_markdown(payload)
    sink = FigureSink(run_dir)
    try:
        write_spectrum_figures(sink, _spectra(records))
        sink.writer.add_text("analysis/summary", summary_markdown(payload, in_tensorboard=True))
    finally:
        sink.close()
    write_text(run_dir / SUMMARY, markdown)
    # Last, once everything else is on disk: mode=report takes feature_stats.json as the sign that
    # its analyze step is done, so a run stopped on the way (Ctrl-C) must not leave it behind.
    write_json(run_dir / STATS, payload)
    log.info(
        "wrote %s, %s, %s and %d spectrum plot(s) to %s",
        STATS,
        NONPOSITIVE,
        SUMMARY,
        len(modules),
        run_dir,
    )
