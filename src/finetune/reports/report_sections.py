"""The sections of the sweep report, in the original report's order: data and split, the
learning-rate comparison, class-wise test accuracy and AP, reproduction, top/bottom images,
training curves, feature statistics, against the original report; then time and hardware."""

from pathlib import Path
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
from finetune.reports.report_inputs import SPLITS, ReportInputs, significant
from finetune.reports.report_original import original_section

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


def _short(label: str) -> str:
    """`optimizer.lr=0.01 model.arch=x` -> `lr=0.01 arch=x`: what fits on a card."""
    return " ".join(item.split("=", 1)[0].rsplit(".", 1)[-1] + "=" + item.split("=", 1)[-1]
                    for item in label.split()) if "=" in label else label  # fmt: skip


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
    return [
        Paragraph(
            f"Sweep `{inputs.sweep}`: {len(inputs.runs)} runs on `{inputs.data_root}`, ranked by "
            f"{winner['monitor']} ({winner['mode']}). Winner: run {winner['run']} "
            f"(`{winner['label']}`), its `best_model.pt` evaluated on the test split, evaluated "
            "again to check that the scores reproduce, and its feature maps analysed."
        ),
        KeyFigures(
            [
                KeyFigure("winner", f"run {winner['run']}", _short(winner["setting"])),
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
    return [
        Heading("Data and split"),
        Paragraph(
            f"`{inputs.data_root}`, {len(counts)} classes; the winner's split "
            f"(`{inputs.winner['run']}/split.csv`, the same for every run of the sweep with one "
            "seed): images per class and split."
        ),
        Table(["class", *SPLITS, "total"], rows),
    ]


def lr_section(inputs: ReportInputs) -> list[Block]:
    rows = [
        [run["rank"], run["run"], run["label"], _lr(run["lr"]), run["status"],
         run["val_acc_mean"] if run["status"] != "failed" else "",
         "" if run["val_map"] is None else run["val_map"],
         run["best_epoch"] if run["best_epoch"] is not None else "",
         run["epochs_run"] if run["epochs_run"] is not None else "",
         _seconds(run["wall_time_s"])]
        for run in inputs.runs
    ]  # fmt: skip
    blocks: list[Block] = [
        Heading("Learning-rate comparison"),
        Paragraph(
            f"Every run of the sweep, best first by {inputs.winner['monitor']}; the values are "
            "those of each run's best epoch (counted from 0), the one it kept."
        ),
        Table(["rank", "run", "setting", "lr", "status", "val acc_mean", "val mAP",
               "best epoch", "epochs", "training time"], rows),
        Figure(inputs.figures["lr_comparison"], "validation loss, mean class-wise accuracy and "
               "mAP per epoch, one line per run"),
    ]  # fmt: skip
    failed = [run["run"] for run in inputs.runs if run["status"] == "failed"]
    if failed:
        blocks.insert(
            2, Paragraph(f"Failed (no metrics.json; see their finetune.log): {', '.join(failed)}.")
        )
    return blocks


def _eval_figure(inputs: ReportInputs, name: str) -> Path | None:
    path = inputs.folders["eval"] / "figures" / f"{name}.png"
    return path if path.is_file() else None


def test_section(inputs: ReportInputs) -> list[Block]:
    evaluation = inputs.evaluation
    names = evaluation["class_names"]
    per_class = evaluation.get("images_per_class", {})
    rows = [
        [n, per_class.get(n, ""), evaluation["acc_class"][n], evaluation["ap_class"][n]]
        for n in names
    ]
    rows.append(["mean", evaluation["n"], evaluation["acc_mean"], evaluation["map"]])
    blocks: list[Block] = [
        Heading("Class-wise test accuracy and AP"),
        Paragraph(
            f"The winner on the test split ({evaluation['n']} images, `report/eval`): accuracy "
            "of a class = correct / images of that class (recall); AP = one-vs-rest average "
            f"precision from the softmax scores. Overall accuracy {_fmt(evaluation['acc'])}."
        ),
        Table(["class", "images", "accuracy", "AP"], rows),
    ]
    captions = {"confusion_matrix": "confusion matrix (rows: true class)",
                "pr_curves": "precision-recall curve of each class"}  # fmt: skip
    for name, caption in captions.items():
        if path := _eval_figure(inputs, name):
            blocks.append(Figure(path, caption))
    return blocks


def reproduction_section(inputs: ReportInputs) -> list[Block]:
    r = inputs.reproduction
    verdict = "the scores reproduce" if r["passed"] else "the scores do NOT reproduce"
    return [
        Heading("Reproduction"),
        Paragraph(
            f"The same checkpoint evaluated a second time (`report/reproduce`) and compared with "
            f"the first evaluation's `softmax_scores.pt`: {verdict} (tolerance {r['tolerance']:g})."
        ),
        Table(
            ["max abs difference", "rows that differ", "rows", "tolerance", "result"],
            [
                [
                    r["max_abs_diff"],
                    r["rows_differ"],
                    r["rows"],
                    r["tolerance"],
                    "passed" if r["passed"] else "failed",
                ]
            ],
            digits=8,
        ),  # fmt: skip
    ]


def ranked_section(inputs: ReportInputs) -> list[Block]:
    paths = sorted((inputs.folders["eval"] / "figures").glob("ranked_*.png"))
    return [
        Heading("Top-10 and bottom-10 images of every class"),
        Paragraph(
            "For each class the test images with the highest and the lowest softmax score of "
            "that class; above each image its score and true label (green: of the class)."
        ),
        *(Figure(path, path.stem.split("_", 2)[-1]) for path in paths),
    ]


def curves_section(inputs: ReportInputs) -> list[Block]:
    return [
        Heading("Training curves of the winner"),
        Paragraph(
            "`train` is measured on augmented crops while the weights change; `train_eval` is a "
            "fixed subset of the training images evaluated like `val`: the gap between "
            "`train_eval` and `val` is the generalisation gap."
        ),
        Figure(inputs.figures["winner_curves"], f"run {inputs.winner['run']}, every split"),
    ]


def cost_section(inputs: ReportInputs) -> list[Block]:
    rows = [[f"train run {run['run']} ({run['label']})", f"{inputs.sweep.name}/{run['run']}",
             _seconds(run["wall_time_s"]),
             f"{run['trainer'].get('accelerator', '?')} x{run['trainer'].get('devices', '?')}, "
             f"{run['precision'] or '?'}"]
            for run in inputs.runs]  # fmt: skip
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
    sections = [summary, data_section, lr_section, test_section, reproduction_section,
                ranked_section, curves_section, features_section, original_section,
                cost_section]  # fmt: skip
    blocks = [block for section in sections for block in section(inputs)]
    return Document(f"Fine-tuning report: {inputs.sweep.name}", blocks)
