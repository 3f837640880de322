"""The report's last section: the original report's published figures (`report.original`,
conf/report/default.yaml) beside this run's, and one sentence per difference."""

from typing import Any

from finetune.reports.report_document import Block, Bullets, Heading, Paragraph, Table
from finetune.reports.report_inputs import ReportInputs, significant, trained_from


def _lr(value: float | None) -> str:
    return "not stated" if value is None else significant(value)


def _learning_rate(inputs: ReportInputs, original: dict[str, Any]) -> tuple[list[Any], str]:
    """The learning rate's row and sentence: compared as a choice only where the sweep varied
    it; a sweep over something else says what it varied instead."""
    winner, theirs = inputs.winner, _lr(original["lr"])
    chosen, others = _lr(winner["lr"]), [key for key in inputs.swept if key != "optimizer.lr"]
    lrs = sorted({run["lr"] for run in inputs.runs if run["lr"] is not None})
    if "optimizer.lr" not in inputs.swept:
        used = f"every run trained with {chosen}"
        if len(lrs) > 1:  # set by what it varied (optimizer=sgd,adamw, say)
            used = f"the runs' learning rates, {', '.join(map(significant, lrs))}, followed it"
        varied = f"it varied {', '.join(others)}" if others else "it varied nothing"
        sentence = (
            f"This sweep did not choose the learning rate: {varied} ({used}; the original's "
            f"learning rate: {theirs}); rank 1 by {winner['monitor']}: "
            f"`{winner['setting'] or winner['run']}`."
        )
        return ["learning rate (not swept)", theirs, chosen, ""], sentence
    also = f" (it also varied {', '.join(others)}: `{winner['setting']}`)" if others else ""
    if original["lr"] is None:
        sentence = (f"The original report does not say which learning rate it chose; this sweep "
                    f"chose {chosen}{also}, rank 1 by {winner['monitor']} among "
                    f"{', '.join(map(significant, lrs))}.")  # fmt: skip
    else:
        sentence = f"Learning rate: {chosen}{also} here against {theirs} in the original."
    if inputs.split_difference:
        sentence += " Not a fair choice: the sweep's runs were validated on different images."
    return ["learning rate chosen", theirs, chosen, ""], sentence


def _measures(inputs: ReportInputs, original: dict[str, Any]) -> tuple[list[list[Any]], list[str]]:
    """The headline figures: the learning rate, mean class-wise accuracy, mAP."""
    evaluation = inputs.evaluation
    test = original["test"]
    lr_row, lr = _learning_rate(inputs, original)
    rows: list[list[Any]] = [
        lr_row,
        ["test mean class-wise accuracy", test["acc_mean"], evaluation["acc_mean"],
         evaluation["acc_mean"] - test["acc_mean"]],
        ["test mAP", test["map"], evaluation["map"], evaluation["map"] - test["map"]],
    ]  # fmt: skip
    sentences = [
        lr,
        f"Mean class-wise test accuracy: {evaluation['acc_mean']:.4f} here against "
        f"{test['acc_mean']:.4f} ({rows[1][3]:+.4f}), but not the same measure: the original "
        "averaged one-vs-rest binary accuracies over all test images, which count every correct "
        "'not this class' (a model that never predicts a class still scores 5/6 = 0.83 on it "
        "with six balanced classes); here it is the mean per-class recall.",
        f"Test mAP: {evaluation['map']:.4f} here against {test['map']:.4f} ({rows[2][3]:+.4f}); "
        "the same measure (mean one-vs-rest average precision), on this run's "
        f"{evaluation['n']} test images, not the original's.",
    ]
    return rows, sentences


def _class_wise(inputs: ReportInputs, original: dict[str, Any]) -> tuple[list[Block], str]:
    names, evaluation = original["classes"], inputs.evaluation
    if list(evaluation["class_names"]) != list(names):
        return [], (
            f"The classes here ({', '.join(evaluation['class_names'])}) are not the original's "
            f"({', '.join(names)}): no class-by-class comparison."
        )
    test = original["test"]
    rows = [
        [name, test["acc_class"][i], evaluation["acc_class"][name],
         test["ap_class"][i], evaluation["ap_class"][name]]
        for i, name in enumerate(names)
    ]  # fmt: skip
    gaps = {row[0]: row[4] - row[3] for row in rows}
    worst = max(gaps, key=lambda name: abs(gaps[name]))
    table = Table(
        ["class", "accuracy (original)", "accuracy (here)", "AP (original)", "AP (here)"], rows
    )
    return [table], (
        f"Class-wise AP: the largest difference is for {worst} ({gaps[worst]:+.4f}); the "
        "class-wise accuracies differ in measure as the mean does."
    )


def _dataset_here(features: dict[str, Any], dataset: str) -> str | None:
    """This run's name of one of the original's datasets: `scenes` is the checkpoint's own test
    split (the analysis lists it first), the others by their prefix."""
    names = list(features.get("datasets", {}))
    if dataset == "scenes":
        return names[0] if names else None
    return next((name for name in names if name.startswith(dataset)), None)


def _features(inputs: ReportInputs, original: dict[str, Any]) -> tuple[list[Block], list[str]]:
    features = inputs.features
    here: dict[tuple[str, str], dict[str, float]] = {}
    for result in features.get("results", []):
        key = (result["model"], result["dataset"])
        here.setdefault(key, {})[result["module"]] = 100 * result["nonpositive_fraction"]
    rows, sentences, shown = [], [], set()
    for entry in original["nonpositive"]:
        modules = list(entry["values"])
        theirs = {m: 100 * v for m, v in entry["values"].items()}
        dataset = _dataset_here(features, entry["dataset"])
        ours = here.get((entry["model"], dataset or ""), {})
        label = f"{entry['model']} on {entry['dataset']} (original: {entry['note']})"
        rows.append([entry["model"], entry["dataset"], f"original, {entry['note']}",
                     *(round(theirs[m], 2) for m in modules)])  # fmt: skip
        if not all(m in ours for m in modules):
            sentences.append(f"Non-positive share, {label}: not computed here (see Skipped above).")
            continue
        if (entry["model"], dataset) not in shown:  # the original printed some pairs twice
            shown.add((entry["model"], dataset))
            rows.append(
                [entry["model"], dataset, "this run", *(round(ours[m], 2) for m in modules)]
            )
        gaps = {m: ours[m] - theirs[m] for m in modules}
        worst = max(gaps, key=lambda m: abs(gaps[m]))
        sentences.append(
            f"Non-positive share, {label}: {min(ours.values()):.1f}–{max(ours.values()):.1f} % "
            f"here on {dataset} against {min(theirs.values()):.1f}–{max(theirs.values()):.1f} %; "
            f"the largest difference is at {worst} ({gaps[worst]:+.1f} points)."
        )
    for dataset in original["not_done"]:
        name = _dataset_here(features, dataset)
        done = sorted({model for model, d in here if d == name}) if name else []
        sentences.append(
            f"{dataset}: the original could not analyse it; analysed here ({', '.join(done)})."
            if done
            else f"{dataset}: the original could not analyse it, and it was not analysed here "
            "either (give analysis.cifar_root=... to mode=report)."
        )
    header = ["model", "dataset", "source", *original["nonpositive"][0]["values"]]
    return [Table(header, rows, digits=2)], sentences


def original_section(inputs: ReportInputs) -> list[Block]:
    original = inputs.original
    rows, sentences = _measures(inputs, original)
    class_blocks, class_sentence = _class_wise(inputs, original)
    feature_blocks, feature_sentences = _features(inputs, original)
    weights = inputs.winner["weights"]
    if weights != "imagenet":
        sentences.insert(0, f"The original fine-tuned an ImageNet-pretrained network; this "
                         f"sweep's model was {trained_from(weights)}: its scores and its rows "
                         "`fine-tuned` are not those of the same kind of model.")  # fmt: skip
    return [
        Heading("Against the original report"),
        Paragraph(
            f"The figures the original report published, from {original['source']} (kept in "
            "`report.original`, conf/report/default.yaml), beside this run's."
        ),
        Table(["figure", "original", "this run", "difference"], rows),
        *class_blocks,
        Heading("Non-positive feature-map values (%)", 3),
        *feature_blocks,
        Heading("The differences", 3),
        Bullets([*sentences, class_sentence, *feature_sentences]),
    ]
