"""The sections of the sweep report on the winner's own evaluation (or, for runs validated on
different images, rank 1's): class-wise test accuracy and AP with its figures, the reproduction
check, the top and bottom images of every class, and its training curves."""

from pathlib import Path

from finetune.reports.markdown import format_cell
from finetune.reports.report_document import Block, Figure, Heading, Paragraph, Table
from finetune.reports.report_inputs import ReportInputs, best_name


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
            f"{best_name(inputs).capitalize()} on the test split ({evaluation['n']} images, "
            "`report/eval`): accuracy of a class = correct / images of that class (recall); AP = "
            "one-vs-rest average precision from the softmax scores. Overall accuracy "
            f"{format_cell(evaluation['acc'])}."
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
            f"the first evaluation's `softmax_scores.pt`: {verdict} (tolerance "
            f"{_small(r['tolerance'])})."
        ),
        Table(
            ["max abs difference", "rows that differ", "rows", "tolerance", "result"],
            [
                [
                    _small(r["max_abs_diff"]),
                    r["rows_differ"],
                    r["rows"],
                    _small(r["tolerance"]),
                    "passed" if r["passed"] else "failed",
                ]
            ],
        ),  # fmt: skip
    ]


def _small(value: float) -> str:
    """A difference or tolerance as a person reads it: 0, 1e-06, 3.1e-07, 0.0123."""
    return f"{value:.3g}"


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
        Heading(f"Training curves of {best_name(inputs)}"),
        Paragraph(
            "`train` is measured on augmented crops while the weights change; `train_eval` is a "
            "fixed subset of the training images evaluated like `val`: the gap between "
            "`train_eval` and `val` is the generalisation gap."
        ),
        Figure(inputs.figures["winner_curves"], f"run {inputs.winner['run']}, every split"),
    ]
