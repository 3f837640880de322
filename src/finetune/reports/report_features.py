"""The report's feature-statistics section, from feature_stats.json of mode=analyze: the share of
non-positive values per model x dataset x module, fine-tuned minus pretrained where both ran, the
skipped pairs with their reasons, and the eigenvalue spectra."""

import math
from typing import Any

from finetune.reports.report_document import Block, Bullets, Figure, Heading, Paragraph, Table
from finetune.reports.report_inputs import ReportInputs


def _percent(value: float) -> float:
    return round(100 * value, 2)


def _points(tuned: dict[str, float], pretrained: dict[str, float], module: str) -> float:
    """Fine-tuned minus pretrained, from the percentages the table shows: the tables agree."""
    return round(_percent(tuned[module]) - _percent(pretrained[module]), 2)


def features_section(inputs: ReportInputs) -> list[Block]:
    features = inputs.features
    modules = features["modules"]
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for result in features["results"]:
        row = table.setdefault((result["model"], result["dataset"]), {"n": result["num_images"]})
        row[result["module"]] = result["nonpositive_fraction"]
    rows = [[m, d, row["n"], *(_percent(row[x]) for x in modules)] for (m, d), row in table.items()]
    blocks: list[Block] = [
        Heading("Feature statistics"),
        Paragraph(
            f"Feature maps of {len(modules)} modules (`report/analyze`), up to "
            f"{features['num_images']} images per dataset (seeded sample): the share of "
            "non-positive values, in %, for the fine-tuned model and the ImageNet-pretrained one."
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
    order = {f"spectrum_{m}": i for i, m in enumerate(modules)}
    for path in sorted(spectra, key=lambda p: order.get(p.stem, math.inf)):
        blocks.append(Figure(path, f"{path.stem.removeprefix('spectrum_')}: eigenvalue spectrum"))
    return blocks
