"""The document of the sweep report, its sections in the original report's order: data and
split, the comparison of the runs (the original's learning-rate comparison), class-wise test
accuracy and AP, reproduction, top/bottom images and training curves (report_winner), feature
statistics (report_features), against the original report (report_original); then time and
hardware. Runs validated on different images have no winner: the report calls rank 1 by its
rank and says why."""

from typing import Any

from finetune.reports.report_document import (
    Block,
    Document,
    Figure,
    Heading,
    KeyFigure,
    KeyFigures,
    Paragraph,
    Table,
)
from finetune.reports.report_features import features_section
from finetune.reports.report_inputs import SPLITS, ReportInputs, significant, trained_from
from finetune.reports.report_original import original_section
from finetune.reports.report_winner import (
    curves_section,
    ranked_section,
    reproduction_section,
    test_section,
)
from finetune.sweep import named_runs

STEP_TITLES = {
    "eval": "evaluation (test split)",
    "reproduce": "reproduction",
    "analyze": "analysis",
}


def _fmt(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "not recorded"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def _lr(value: float | None) -> str:
    return "" if value is None else significant(value)


def _reproduced(reproduction: dict[str, Any]) -> KeyFigure:
    if not reproduction:
        return KeyFigure("reproduction", "not run")
    state = "exact" if reproduction["max_abs_diff"] == 0 else "within tolerance"
    if not reproduction["passed"]:
        state = f"FAILED: {reproduction['rows_differ']} rows differ"
    return KeyFigure("reproduction", state, f"max |Δ| {reproduction['max_abs_diff']:.3g}")


def summary(inputs: ReportInputs) -> list[Block]:
    winner, evaluation = inputs.winner, inputs.evaluation
    steps = [record["wall_s"] for record in inputs.steps.values() if record]
    training = [run["wall_time_s"] for run in inputs.runs if run["wall_time_s"] is not None]
    verdict = f". Winner: run {winner['run']}"
    if inputs.split_difference:
        verdict = (
            f", but the values are not a fair comparison: {inputs.split_difference}. No winner: "
            f"rank 1 is run {winner['run']}"
        )
    return [
        Paragraph(
            f"Sweep `{inputs.sweep}`: {len(inputs.runs)} runs on `{inputs.data_root}`, "
            f"{trained_from(winner['weights'])}, ranked by "
            f"{winner['monitor']} ({winner['mode']}){verdict} (`{winner['label']}`), its "
            "`best_model.pt` evaluated on the test split, evaluated again to check that the "
            "scores reproduce, and its feature maps analysed."
        ),
        KeyFigures(
            [
                KeyFigure(
                    "rank 1 (no fair winner)" if inputs.split_difference else "winner",
                    f"run {winner['run']}",
                    winner["setting"],
                ),
                KeyFigure(winner["monitor"].replace("map", "mAP"), _fmt(winner["value"])),
                KeyFigure("test mean class-wise acc.", _fmt(evaluation.get("acc_mean"))),
                KeyFigure("test mAP", _fmt(evaluation.get("map"))),
                _reproduced(inputs.reproduction),
                KeyFigure("time (training + steps)", _seconds(sum(training) + sum(steps))),
            ]
        ),
    ]


def data_section(inputs: ReportInputs) -> list[Block]:
    counts = inputs.split_counts
    rows = [
        [name, *(counts[name][s] for s in SPLITS), sum(counts[name].values())] for name in counts
    ]
    rows.append(["all", *(sum(row[i] for row in rows) for i in range(1, 5))])
    run = inputs.winner["run"]
    if inputs.split_difference:
        split = (
            f"the split of run {run}, rank 1 (`{run}/split.csv`; the other runs were validated "
            "on other images, see above)"
        )
    else:
        split = (
            f"the winner's split (`{run}/split.csv`; every run that finished was validated on "
            "the same images)"
        )
    return [
        Heading("Data and split"),
        Paragraph(
            f"`{inputs.data_root}`, {len(counts)} classes; {split}: images per class and split."
        ),
        Table(["class", *SPLITS, "total"], rows),
    ]


def _comparison_heading(swept: list[str]) -> str:
    """The original report's heading when the sweep varied the learning rate only; else what it
    varied."""
    if swept == ["optimizer.lr"]:
        return "Learning-rate comparison"
    return f"Comparison of the runs ({', '.join(swept)})" if swept else "Comparison of the runs"


def comparison_section(inputs: ReportInputs) -> list[Block]:
    rows = [
        [run["rank"], run["run"], run["label"], _lr(run["lr"]), run["status"],
         run["val_acc_mean"] if run["status"] != "failed" else "",
         "" if run["val_map"] is None else run["val_map"],
         run["best_epoch"] if run["best_epoch"] is not None else "",
         run["epochs_run"] if run["epochs_run"] is not None else "",
         _seconds(run["wall_time_s"])]
        for run in inputs.runs
    ]  # fmt: skip
    unfair = " They are not comparable: the runs were validated on different images (see above)."
    blocks: list[Block] = [
        Heading(_comparison_heading(inputs.swept)),
        Paragraph(
            f"Every run of the sweep, best first by {inputs.winner['monitor']}; the values are "
            "those of each run's best epoch (counted from 0), the one it kept."
            + (unfair if inputs.split_difference else "")
        ),
        Table(["rank", "run", "setting", "lr", "status", "val acc_mean", "val mAP",
               "best epoch", "epochs", "training time"], rows),
        Figure(inputs.figures["lr_comparison"], "validation loss, mean class-wise accuracy and "
               "mAP per epoch, one line per run"),
    ]  # fmt: skip
    failed = [run["run"] for run in inputs.runs if run["status"] == "failed"]
    if failed:
        said = f"Failed (no metrics.json; see their finetune.log): {named_runs(failed)}."
        if inputs.unfinished:
            ends = "it ends" if len(inputs.unfinished) == 1 else "they end"
            said += (
                f" {named_runs(inputs.unfinished).capitalize()} looked unfinished (still "
                f"running?) when this report was written: listed as failed until {ends}."
            )
        blocks.insert(2, Paragraph(said))
    return blocks


def _device(run: dict[str, Any]) -> str:
    """Where a run trained, from its config; its precision from its metrics.json."""
    trainer = run["trainer"]
    where = f"{trainer['accelerator']} x{trainer['devices']}" if trainer else "not recorded"
    return f"{where}, {run['precision'] or 'precision not recorded (no metrics.json)'}"


def cost_section(inputs: ReportInputs) -> list[Block]:
    rows = [[f"train run {run['run']} ({run['label']})", f"{inputs.sweep.name}/{run['run']}",
             _seconds(run["wall_time_s"]), _device(run)] for run in inputs.runs]  # fmt: skip
    for name, record in inputs.steps.items():
        where = f"{record['cpu']}, GPU {record['gpu']}" if record else "not recorded"
        rows.append(
            [STEP_TITLES[name], f"report/{name}", _seconds(record and record["wall_s"]), where]
        )
    hw = inputs.hardware
    return [
        Heading("Time and hardware"),
        Table(["step", "folder", "wall time", "device"], rows),
        Paragraph(
            f"This report was written on: {hw['cpu']} ({hw['cpu_cores']} cores), GPU "
            f"{hw['gpu']}, torch {hw['torch']}, Python {hw['python']}."
        ),
    ]


def build_document(inputs: ReportInputs) -> Document:
    sections = [summary, data_section, comparison_section, test_section, reproduction_section,
                ranked_section, curves_section, features_section, original_section,
                cost_section]  # fmt: skip
    blocks = [block for section in sections for block in section(inputs)]
    return Document(f"Fine-tuning report: {inputs.sweep.name}", blocks)
