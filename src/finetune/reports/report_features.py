"""The report's feature-statistics section, from feature_stats.json of mode=analyze: the share of
non-positive values per model x dataset x module, fine-tuned minus pretrained where both ran, the
skipped pairs with their reasons, and the eigenvalue spectra."""

import math
from typing import Any

from finetune.reports.report_document import Block, Bullets, Figure, Heading, Paragraph, Table
from finetune.reports.report_inputs import ReportInputs, best_name, trained_from


def _percent(value: float) -> float:
    return round(100 * value, 2)


def _points(tuned: dict[str, float], pretrained: dict[str, float], module: str) -> float:
    """Fine-tuned minus pretrained in percentage points, from the fractions, rounded once (the
    difference of the rounded percentages can be 0.01 off)."""
    return _percent(tuned[module] - pretrained[module])


def features_section(inputs: ReportInputs) -> list[Block]:
    features = inputs.features
    modules = features["modules"]
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for result in features["results"]:
        row = table.setdefault((result["model"], result["dataset"]), {"n": result["num_images"]})
        row[result["module"]] = result["nonpositive_fraction"]
    rows = [[m, d, row["n"], *(_percent(row[x]) for x in modules)] for (m, d), row in table.items()]
    weights = inputs.winner["weights"]
    tuned = "the fine-tuned model"
    if weights != "imagenet":  # the rows still say `fine-tuned`: mode=analyze's name for it
        tuned = f"the model of {best_name(inputs)}, {trained_from(weights)} and named `fine-tuned`,"
    blocks: list[Block] = [
        Heading("Feature statistics"),
        Paragraph(
            f"Feature maps of {len(modules)} modules (`report/analyze`), up to "
            f"{features['num_images']} images per dataset (seeded sample): the share of "
            f"non-positive values, in %, for {tuned} and the ImageNet-pretrained one."
        ),
        Table(["model", "dataset", "N", *modules], rows, digits=2),
    ]
    datasets = dict.fromkeys(d for _, d in table)
    pairs = [d for d in datasets if ("fine-tuned", d) in table and ("pretrained", d) in table]
    if pairs:
        rows = [[d, *(_points(table[("fine-tuned", d)], table[("pretrained", d)], x)
                      for x in modules)] for d in pairs]  # fmt: skip
        blocks += [
            Heading("Fine-tuned minus pretrained (percentage points)", 3),
            Table(["dataset", *modules], rows, digits=2),
        ]
    skipped = features.get("skipped", [])
    if skipped:
        blocks.append(Heading("Skipped", 3))
        blocks.append(Bullets([
            " × ".join(str(s[k]) for k in ("model", "dataset") if s.get(k)) + f": {s['reason']}"
            for s in skipped
        ]))  # fmt: skip
    spectra = sorted((inputs.folders["analyze"] / "figures").glob("spectrum_*.png"))
    if spectra:
        blocks.append(Paragraph(
            "Eigenvalue spectra of the channel covariance, one line per model × dataset. Each "
            "legend entry ends with how many eigenvalues are drawn of the module's channels "
            "(`11 of 64`): only those above rounding noise are, and N images give at most N − 1."
        ))  # fmt: skip
    order = {f"spectrum_{m}": i for i, m in enumerate(modules)}
    for path in sorted(spectra, key=lambda p: order.get(p.stem, math.inf)):
        blocks.append(Figure(path, f"{path.stem.removeprefix('spectrum_')}: eigenvalue spectrum"))
    return blocks
