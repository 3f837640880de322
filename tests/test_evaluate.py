"""mode=eval: metrics against scikit-learn, rankings and figures, the reproduction check,
deterministic scores, and the checkpoints and data it must refuse."""

import csv
import json
import logging
import pickle
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    recall_score,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torchvision.models import resnet18

from finetune import run
from finetune.checkpoint import LoadedModel, load_checkpoint
from finetune.data.images import load_rgb
from finetune.data.transforms import eval_transform
from finetune.errors import UserError
from finetune.evaluation_data import (
    TRANSFORM_KEYS,
    evaluation_data,
    evaluation_split,
    model_labels,
)
from finetune.inference import softmax_scores
from finetune.network import build_network
from finetune.reports.eval_figures import rank_by_class
from finetune.reproduction import compare_with_reference, load_reference
from finetune.validate import validate_config

from conftest import SCENE_CLASSES, TINY, as_user_in, compose_config, run_in_process

EVAL = [
    "mode=eval",
    "data.loader.num_workers=0",
    "data.loader.eval_batch_size=16",
    "trainer.enable_progress_bar=false",
]


def make_soft_checkpoint(trained_run: Path, folder: Path) -> Path:
    """trained_run's best_model.pt (same classes, transform, manifest) with untrained weights.

    The tiny training run saturates its softmax (one-hot rows, all alike), which would hide a
    wrong row order or a wrong AP; an untrained ResNet18 gives distinct, soft scores.
    """
    payload = torch.load(trained_run / "best_model.pt", weights_only=True)
    payload["state_dict"] = build_network(len(payload["class_names"]), head_seed=7).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(payload, folder / "best_model.pt")
    return folder / "best_model.pt"


def evaluate(ckpt: Path, cwd: Path, *overrides: str, name: str = "eval") -> dict:
    """`python -m finetune mode=eval ckpt=CKPT ...` in this process, run folder cwd/name."""
    return run([*EVAL, f"ckpt={ckpt}", f"hydra.run.dir={cwd / name}", *overrides])


def evaluation_error(ckpt: Path, cwd: Path, *overrides: str, name: str = "eval") -> str:
    """The one line a failing eval would print after `error:`."""
    with pytest.raises(UserError) as error:
        evaluate(ckpt, cwd, *overrides, name=name)
    message = str(error.value)
    assert "\n" not in message, message
    return message


def direct_scores(ckpt: Path, root: Path, paths: list[str]) -> torch.Tensor:
    """Softmax scores of images computed here with plain torch (no Lightning, no data module)."""
    loaded = load_checkpoint(ckpt)
    transform = eval_transform(**{key: loaded.data[key] for key in TRANSFORM_KEYS})
    with torch.no_grad():
        batch = torch.stack([transform(load_rgb(root / path)) for path in paths])
        return loaded.net(batch).softmax(dim=1)


@pytest.fixture(scope="module")
def original_eval(trained_run, scene_root, tmp_path_factory):
    """The trained checkpoint evaluated on its own test split, checked against a reference
    that differs in one score: the run must fail, yet leave every output behind."""
    cwd = tmp_path_factory.mktemp("eval_original")
    reference = direct_scores(
        trained_run / "best_model.pt", scene_root, manifest_split(trained_run)[0]
    )
    reference[3, 1] += 1e-3
    torch.save(reference, cwd / "perturbed.pt")
    message = evaluation_error(
        trained_run / "best_model.pt", cwd, f"eval.reference={cwd / 'perturbed.pt'}"
    )
    return cwd / "eval", message


@pytest.fixture(scope="module")
def soft_ckpt(trained_run, tmp_path_factory) -> Path:
    return make_soft_checkpoint(trained_run, tmp_path_factory.mktemp("soft"))


@pytest.fixture(scope="module")
def soft_eval(soft_ckpt, tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("eval_soft")
    evaluate(soft_ckpt, cwd)
    return cwd / "eval"


@pytest.fixture(scope="module")
def soft_val_eval(soft_ckpt, tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("eval_soft_val")
    evaluate(soft_ckpt, cwd, "split=val")
    return cwd / "eval"


@pytest.fixture(scope="module")
def soft_train_eval(soft_ckpt, tmp_path_factory) -> Path:
    """split=train evaluated: the training images as they are, never augmented."""
    cwd = tmp_path_factory.mktemp("eval_soft_train")
    evaluate(soft_ckpt, cwd, "split=train")
    return cwd / "eval"


def manifest_split(
    trained_run: Path, split: str = "test"
) -> tuple[list[str], np.ndarray, list[str]]:
    """Paths, labels and class names of one split, read straight from split.csv."""
    with (trained_run / "split.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == split]
    labels = np.array([SCENE_CLASSES.index(row["label"]) for row in rows])
    return [row["path"] for row in rows], labels, SCENE_CLASSES


@pytest.mark.parametrize("which", ["original_eval", "soft_eval"])
def test_metrics_equal_scikit_learn(which, request, trained_run):
    run = request.getfixturevalue(which)
    run = run[0] if which == "original_eval" else run
    predictions = torch.load(run / "predictions.pt", weights_only=True)
    scores = torch.load(run / "softmax_scores.pt", weights_only=True)
    _, labels, classes = manifest_split(trained_run)
    metrics = json.loads((run / "metrics.json").read_text())

    assert predictions.dtype == torch.int64 and scores.dtype == torch.float32
    assert scores.shape == (len(labels), len(classes)) and metrics["n"] == len(labels)
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(len(labels)))
    assert torch.equal(predictions, scores.argmax(dim=1))
    s, p = scores.numpy().astype(np.float64), predictions.numpy()
    recall = recall_score(labels, p, average=None, labels=range(len(classes)))
    ap = [average_precision_score(labels == c, s[:, c]) for c in range(len(classes))]
    assert metrics["class_names"] == classes
    assert [metrics["acc_class"][c] for c in classes] == pytest.approx(recall, abs=1e-6)
    assert [metrics["ap_class"][c] for c in classes] == pytest.approx(ap, abs=1e-6)
    assert metrics["acc"] == pytest.approx(accuracy_score(labels, p), abs=1e-6)
    assert metrics["acc_mean"] == pytest.approx(np.mean(recall), abs=1e-6)
    assert metrics["map"] == pytest.approx(np.mean(ap), abs=1e-6)
    expected_matrix = confusion_matrix(labels, p, labels=range(len(classes)))
    assert metrics["confusion_matrix"] == expected_matrix.tolist()


def test_eval_reproduces_the_test_metrics_of_training(original_eval, trained_run):
    """Same manifest, same transform: the numbers training reported for its test split."""
    trained = json.loads((trained_run / "metrics.json").read_text())["test"]
    metrics = json.loads((original_eval[0] / "metrics.json").read_text())
    assert metrics["data"]["manifest"] == str((trained_run / "split.csv").resolve())
    for key in ("acc", "acc_mean", "map"):
        assert metrics[key] == pytest.approx(trained[f"test/{key}"], abs=1e-6)
    for name in metrics["class_names"]:
        assert metrics["ap_class"][name] == pytest.approx(trained[f"test/ap/{name}"], abs=1e-6)


def test_predictions_csv_follows_the_manifest(soft_eval, trained_run):
    paths, labels, classes = manifest_split(trained_run)
    scores = torch.load(soft_eval / "softmax_scores.pt", weights_only=True)
    with (soft_eval / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == paths
    assert [row["label"] for row in rows] == [classes[label] for label in labels]
    csv_scores = np.array([[float(row[f"score_{c}"]) for c in classes] for row in rows])
    np.testing.assert_allclose(csv_scores, scores.numpy(), atol=1e-6)
    assert [row["predicted"] for row in rows] == [classes[i] for i in scores.argmax(1)]
    report = (soft_eval / "report.md").read_text()
    assert all(f"| {name} |" in report for name in classes)


def plain_torch_scores(ckpt: Path, root: Path, paths: list[str]) -> np.ndarray:
    """Softmax scores computed without the package's model code: torchvision's ResNet18 with the
    checkpoint's weights in eval mode, each image read with PIL and scored on its own."""
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    net = resnet18(num_classes=len(payload["class_names"]))
    net.load_state_dict(payload["state_dict"])
    net.eval()
    transform = eval_transform(**{key: payload["data"][key] for key in TRANSFORM_KEYS})
    rows = []
    with torch.no_grad():
        for path in paths:
            with Image.open(root / path) as image:
                tensor = transform(image.convert("RGB"))
            rows.append(net(tensor.unsqueeze(0)).softmax(dim=1)[0])
    return torch.stack(rows).numpy()


@pytest.mark.parametrize(
    ("which", "split"),
    [("soft_eval", "test"), ("soft_val_eval", "val"), ("soft_train_eval", "train")],
)
def test_every_score_row_is_the_forward_pass_of_its_manifest_image(
    which, split, request, soft_ckpt, trained_run, scene_root
):
    """Row i of softmax_scores.pt is image i of the split in split.csv, and `split=val` scores
    exactly the val images, `split=train` the training images through the evaluation transform
    (no random crop or flip). The rows are far apart, so a swapped or shifted row would show."""
    run = request.getfixturevalue(which)
    paths, labels, _ = manifest_split(trained_run, split)
    other = set(manifest_split(trained_run, "test" if split == "val" else "val")[0])
    assert paths and not other & set(paths)
    scores = torch.load(run / "softmax_scores.pt", weights_only=True).numpy()
    expected = plain_torch_scores(soft_ckpt, scene_root, paths)
    assert scores.shape == expected.shape
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    distances = np.abs(expected[:, None, :] - expected[None, :, :]).max(axis=2)
    assert distances[~np.eye(len(paths), dtype=bool)].min() > 1e-4  # rows tell images apart
    with (run / "predictions.csv").open(newline="") as handle:
        assert [row["path"] for row in csv.DictReader(handle)] == paths
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == split and metrics["n"] == len(paths)
    assert sum(metrics["images_per_class"].values()) == len(labels)


def test_lightning_ckpt_scores_like_best_model_pt_of_the_same_epoch(original_eval, trained_run):
    """checkpoints/epochNNN.ckpt is the epoch best_model.pt was exported from: same scores."""
    best_epoch = torch.load(trained_run / "best_model.pt", weights_only=True)["epoch"]
    ckpt = trained_run / "checkpoints" / f"epoch{best_epoch:03d}.ckpt"
    cwd = ckpt.parents[2] / "eval_lightning_ckpt"  # a folder of its own in the fixture's tmp
    cwd.mkdir(exist_ok=True)
    evaluate(ckpt, cwd)
    metrics = json.loads((cwd / "eval" / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(ckpt)
    assert metrics["data"]["manifest"] == str(trained_run / "split.csv")
    scores = torch.load(cwd / "eval" / "softmax_scores.pt", weights_only=True)
    expected = torch.load(original_eval[0] / "softmax_scores.pt", weights_only=True)
    assert torch.equal(scores, expected)


def _scores_in_process(ckpt: Path, *overrides: str, batch_size: int = 16) -> torch.Tensor:
    """softmax_scores over the test split eval would score, in this process (no CLI start-up)."""
    cfg = _compose(
        [
            *EVAL,
            f"data.loader.eval_batch_size={batch_size}",
            f"ckpt={ckpt}",
            *overrides,
        ]
    )
    loaded = load_checkpoint(ckpt)
    _, datamodule, dataset = evaluation_split(cfg, loaded, None)
    loader = datamodule.eval_loader(dataset)
    before = _process_flags()
    scores = softmax_scores(cfg, Path(loaded.path).parent, loaded.net, loader)[0]
    assert _process_flags() == before  # scoring leaves the caller's torch flags as they were
    return scores


def _process_flags() -> tuple[bool, bool, bool, bool]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )


def test_eval_batch_sizes_agree_and_a_repeat_is_bit_identical(soft_ckpt, soft_eval):
    """The README's claim: batch sizes 1, 7 and 64 agree to 1e-6 (12 images: 12 batches of
    one, 7 + 5, one batch of 12), and the same batch size twice gives the same bits."""
    saved = torch.load(soft_eval / "softmax_scores.pt", weights_only=True)  # batch size 16
    by_size = {size: _scores_in_process(soft_ckpt, batch_size=size) for size in (1, 7, 64)}
    for size, scores in by_size.items():
        assert scores.shape == saved.shape, size
        assert (scores - saved).abs().max() <= 1e-6, size
    assert torch.equal(_scores_in_process(soft_ckpt, batch_size=7), by_size[7])
    assert torch.equal(_scores_in_process(soft_ckpt, batch_size=16), saved)


def test_scores_across_thread_counts_agree_within_the_default_tolerance(soft_ckpt, soft_eval):
    """Other thread counts take other reduction orders: not bit-identical in general, but well
    inside eval.tolerance=1e-6 (the README's figure for comparing across machines)."""
    saved = torch.load(soft_eval / "softmax_scores.pt", weights_only=True)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            difference = (_scores_in_process(soft_ckpt) - saved).abs().max()
            print(f"threads={count}: max |difference| from the CLI run {float(difference):.3g}")
            assert difference <= 1e-6
    finally:
        torch.set_num_threads(threads)


def test_a_repeat_under_any_training_profile_reproduces_the_scores_bit_for_bit(
    soft_eval, soft_ckpt, tmp_path
):
    """A second evaluation, under the GPU training profile (trainer=gpu: cuDNN autotuning) with
    bf16-mixed on top, gives the default run's exact bits and passes the reproduction check at
    the default tolerance: scoring ignores trainer.precision and trainer.benchmark, so a run
    under both is a plain repeat."""
    reference = soft_eval / "softmax_scores.pt"
    profile = ["trainer=gpu", "trainer.accelerator=cpu", "trainer.precision=bf16-mixed"]
    evaluate(soft_ckpt, tmp_path, *profile, f"eval.reference={reference}")
    run = tmp_path / "eval"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["inference"] == {"precision": "32-true", "deterministic": True}
    assert "max |difference| 0" in (run / "finetune.log").read_text()
    fresh = torch.load(run / "softmax_scores.pt", weights_only=True)
    assert torch.equal(fresh, torch.load(reference, weights_only=True))
    check = json.loads((run / "reproduction.json").read_text())
    assert check["passed"] and check["max_abs_diff"] == 0.0 and check["rows_differ"] == 0


def test_bf16_inference_is_opt_in_and_recorded(soft_eval, soft_ckpt, tmp_path):
    """inference.precision=bf16-mixed runs on CPU, says so in metrics.json, and is not float32:
    the reproduction check against float32 scores fails, by a bounded amount."""
    reference = soft_eval / "softmax_scores.pt"
    message = evaluation_error(
        soft_ckpt, tmp_path, "inference.precision=bf16-mixed", f"eval.reference={reference}"
    )
    assert "reproduction failed" in message
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["inference"] == {"precision": "bf16-mixed", "deterministic": False}
    deviation = json.loads((tmp_path / "eval" / "reproduction.json").read_text())["max_abs_diff"]
    print(f"bf16-mixed vs float32: max |difference| {deviation:.3g}")
    assert 1e-6 < deviation < 0.05


@pytest.mark.parametrize("which", ["original_eval", "soft_eval"])
def test_ranking_is_an_argsort_of_the_saved_scores(which, request):
    run = request.getfixturevalue(which)
    run = run[0] if which == "original_eval" else run
    scores = torch.load(run / "softmax_scores.pt", weights_only=True)
    top, bottom = rank_by_class(scores, k=10)
    s = scores.numpy()
    for c in range(s.shape[1]):
        assert top[c].tolist() == np.argsort(-s[:, c], kind="stable")[:10].tolist()
        assert bottom[c].tolist() == np.argsort(s[:, c], kind="stable")[:10].tolist()


@pytest.mark.parametrize("which", ["original_eval", "soft_eval"])
def test_rankings_json_is_an_argsort_of_the_saved_scores(which, request, trained_run):
    """rankings.json holds what the top/bottom-10 grids show: per class, the images with the
    highest and lowest scores (ties in manifest order), with path, true label and score."""
    run = request.getfixturevalue(which)
    run = run[0] if which == "original_eval" else run
    s = torch.load(run / "softmax_scores.pt", weights_only=True).numpy()
    paths, labels, classes = manifest_split(trained_run)
    rankings = json.loads((run / "rankings.json").read_text())
    assert rankings["split"] == "test" and rankings["k"] == 10
    assert list(rankings["classes"]) == classes
    for c, name in enumerate(classes):
        for side, order in [
            ("top", np.argsort(-s[:, c], kind="stable")),
            ("bottom", np.argsort(s[:, c], kind="stable")),
        ]:
            entries, expected = rankings["classes"][name][side], order[:10]
            assert [entry["index"] for entry in entries] == expected.tolist(), (name, side)
            assert [entry["path"] for entry in entries] == [paths[i] for i in expected]
            assert [entry["label"] for entry in entries] == [classes[labels[i]] for i in expected]
            assert [entry["score"] for entry in entries] == [float(s[i, c]) for i in expected]


def test_ranking_of_fewer_images_than_k():
    scores = torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]])
    top, bottom = rank_by_class(scores, k=10)
    assert top.tolist() == [[1, 2, 0], [0, 2, 1]]
    assert bottom.tolist() == [[0, 2, 1], [1, 2, 0]]


def test_figures_png_and_tensorboard(original_eval):
    original_eval = original_eval[0]
    classes = json.loads((original_eval / "metrics.json").read_text())["class_names"]
    figures = original_eval / "figures"
    ranked = sorted(figures.glob("ranked_*.png"))
    assert len(ranked) == len(classes)
    assert all(any(path.stem.endswith(name) for path in ranked) for name in classes)
    for name in ("confusion_matrix", "pr_curves", "training_curves"):
        assert (figures / f"{name}.png").stat().st_size > 1000
    accumulator = EventAccumulator(str(original_eval / "tensorboard"))
    accumulator.Reload()
    images = set(accumulator.Tags()["images"])
    assert {f"eval/test/ranked/{name}" for name in classes} <= images
    assert {"eval/test/confusion_matrix", "eval/test/pr_curves", "eval/training_curves"} <= images


def test_reproduction_fails_on_a_perturbed_file_and_keeps_the_outputs(original_eval):
    run, message = original_eval
    for words in ("reproduction failed", "1 of 12 rows", "tolerance"):
        assert words in message, message
    for name in (
        "softmax_scores.pt",
        "predictions.pt",
        "predictions.csv",
        "metrics.json",
        "report.md",
        "figures/confusion_matrix.png",
    ):
        assert (run / name).is_file(), name
    check = json.loads((run / "reproduction.json").read_text())
    assert check["rows_differ"] == 1 and check["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)


REVERSED = SCENE_CLASSES[::-1]
RENAMED = [name.capitalize() if name == "street" else name for name in SCENE_CLASSES]


@pytest.mark.parametrize(
    ("data_classes", "expected"),
    [
        (SCENE_CLASSES, list(range(6))),
        (REVERSED, [5, 4, 3, 2, 1, 0]),
        (sorted(RENAMED), "rename the data's class folders"),
        (SCENE_CLASSES[:5], "predicts 6 classes but the data at /d has 5"),
    ],
    ids=["same names, same order", "same names, other order", "a name differs", "fewer classes"],
)
def test_data_classes_are_matched_to_the_model_by_name(data_classes, expected):
    """The data's class i gets the model's label of the same name; other names are refused in
    one line that names both lists (position would score silently wrong labels)."""
    loaded = _checkpoint(SCENES)
    if isinstance(expected, list):
        assert model_labels(loaded, data_classes, "/d") == expected
        return
    with pytest.raises(UserError, match=re.escape(expected)) as error:
        model_labels(loaded, data_classes, "/d")
    message = str(error.value)
    if len(data_classes) == 6:
        assert ", ".join(data_classes) in message and ", ".join(SCENE_CLASSES) in message


def renamed_scene_folder(scene_root: Path, folder: Path, names: dict[str, str]) -> Path:
    """scene_root's class folders under other names (symbolic links: no copy)."""
    folder.mkdir(parents=True)
    for name in SCENE_CLASSES:
        (folder / names.get(name, name)).symlink_to(scene_root / name, target_is_directory=True)
    return folder


def test_a_model_whose_classes_are_in_another_order_scores_by_name(soft_ckpt, soft_eval, tmp_path):
    """The same network with its classes (and head rows) listed in reverse: eval matches the
    data's labels by name, so every per-class number and every predicted name is unchanged."""
    payload = torch.load(soft_ckpt, weights_only=True)
    order = list(range(len(SCENE_CLASSES)))[::-1]
    payload["class_names"] = [payload["class_names"][i] for i in order]
    for key in ("fc.weight", "fc.bias"):
        payload["state_dict"][key] = payload["state_dict"][key][order]
    (tmp_path / "reversed").mkdir()
    torch.save(payload, tmp_path / "reversed" / "best_model.pt")
    evaluate(tmp_path / "reversed" / "best_model.pt", tmp_path)

    expected = json.loads((soft_eval / "metrics.json").read_text())
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["class_names"] == REVERSED
    for key in ("acc", "acc_mean", "map"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6)
    for key in ("acc_class", "ap_class"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6)
    rows = {}
    for folder in (soft_eval, tmp_path / "eval"):
        with (folder / "predictions.csv").open(newline="") as handle:
            rows[folder] = [(r["path"], r["label"], r["predicted"]) for r in csv.DictReader(handle)]
    assert rows[tmp_path / "eval"] == rows[soft_eval]


@pytest.mark.parametrize("mode", ["eval", "analyze"])
def test_data_with_other_class_names_is_refused(mode, trained_run, scene_root, tmp_path):
    """`street` renamed `Street`: one line naming both lists, for every task that scores a
    checkpoint on data (through evaluation_split), before any image is read."""
    renamed = renamed_scene_folder(scene_root, tmp_path / "renamed", {"street": "Street"})
    overrides = [
        f"mode={mode}",
        f"ckpt={trained_run / 'best_model.pt'}",
        "data.source=config",
        f"data.root={renamed}",
        "data.split.test=12",
        "data.split.val=6",
        "data.loader.num_workers=0",
        f"hydra.run.dir={tmp_path / mode}",
    ]
    with pytest.raises(UserError) as error:
        run(overrides)
    message = str(error.value)
    assert ", ".join(sorted(RENAMED)) in message and ", ".join(SCENE_CLASSES) in message
    assert "rename the data's class folders" in message


def test_a_checkpoint_without_its_manifest_recomputes_its_own_split(trained_run, tmp_path):
    """best_model.pt alone, its split.csv gone: the split is made again from the data.split the
    checkpoint records (not the configured 3000/2000), which is exactly the training split."""
    payload = torch.load(trained_run / "best_model.pt", weights_only=True)
    payload["manifest"] = str(tmp_path / "gone" / "split.csv")
    (tmp_path / "lonely").mkdir()
    torch.save(payload, tmp_path / "lonely" / "best_model.pt")
    evaluate(tmp_path / "lonely" / "best_model.pt", tmp_path)
    log = (tmp_path / "eval" / "finetune.log").read_text(encoding="utf-8")
    assert "recomputed from the checkpoint's own data.split (test=12, val=12, seed=42)" in log
    rows = {}
    for run_dir in (trained_run, tmp_path / "eval"):
        with (run_dir / "split.csv").open(newline="") as handle:
            rows[run_dir] = [tuple(row.values()) for row in csv.DictReader(handle)]
    assert rows[tmp_path / "eval"] == rows[trained_run]  # every image in its training split
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == len(manifest_split(trained_run)[0]) == 12


def test_a_demo_checkpoint_given_a_missing_data_root_is_refused_and_writes_nothing(
    trained_run, tmp_path
):
    """The demo writes its images itself, but only where its checkpoint had them: a mistyped
    data.root is refused like any other kind's, and no demo is written there."""
    payload = torch.load(trained_run / "best_model.pt", weights_only=True)
    payload["data"]["kind"] = "demo"
    torch.save(payload, tmp_path / "demo_model.pt")
    nowhere = tmp_path / "nowhere"
    message = evaluation_error(tmp_path / "demo_model.pt", tmp_path, f"data.root={nowhere}")
    assert message == f"data.root={nowhere} does not exist"
    assert not nowhere.exists()


def test_a_run_given_a_relative_data_root_evaluates_from_any_folder(scene_root, tmp_path):
    """data.root=scenes typed in the data's parent folder: the checkpoint keeps the absolute
    folder, so eval from another working folder finds the data (nothing has moved)."""
    (tmp_path / "elsewhere").mkdir()
    with as_user_in(scene_root.parent):
        run_in_process(
            "mode=train",
            f"data.root={scene_root.name}",
            "data.split.test=12",
            "data.split.val=12",
            "model.weights=none",
            "trainer.max_epochs=1",
            "train_eval_images=0",
            *TINY,
            f"hydra.run.dir={tmp_path / 'run'}",
        )
    assert load_checkpoint(tmp_path / "run" / "best_model.pt").data["root"] == str(scene_root)
    with as_user_in(tmp_path / "elsewhere"):
        evaluate(tmp_path / "run" / "best_model.pt", tmp_path / "elsewhere")
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    evaluated = json.loads((tmp_path / "elsewhere" / "eval" / "metrics.json").read_text())
    assert evaluated["acc_mean"] == pytest.approx(test["test/acc_mean"], abs=1e-6)


def test_an_image_broken_since_training_is_skipped_and_counted(trained_run, scene_root, tmp_path):
    """One test image of the manifest corrupted after training: skipped with the warning, and
    metrics.json and report.md count it (n is one less)."""
    moved = shutil.copytree(scene_root, tmp_path / "scenes")
    paths = manifest_split(trained_run)[0]
    (moved / paths[0]).write_bytes(b"not an image any more")
    results = evaluate(trained_run / "best_model.pt", tmp_path, f"data.root={moved}")
    assert results["skipped_images"] == 1 and results["n"] == len(paths) - 1
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "1 unreadable image(s) of the split skipped" in report
    assert paths[0] in (tmp_path / "eval" / "skipped_images.txt").read_text()


class _Marker:
    """Unpickling this object opens (creates) a file: the stand-in for malicious code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_comparison_counts_rows_beyond_the_tolerance():
    scores = torch.softmax(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    assert compare_with_reference(scores, scores.clone(), 0.0)["passed"]
    assert compare_with_reference(scores, scores.double() + 5e-7, 1e-6)["passed"]
    shifted = scores.clone()
    shifted[1, 2] += 2e-6
    shifted[2, 0] = float("nan")
    check = compare_with_reference(scores, shifted, 1e-6)
    assert check["rows_differ"] == 2 and not check["passed"]
    for saved, words in [(scores[:4], "has 4 rows"), (scores[:, :2], "scores for 2 classes")]:
        with pytest.raises(UserError, match=words):
            compare_with_reference(scores, saved, 1e-6)


def test_reference_files_that_are_not_score_tables_are_refused(tmp_path):
    scores = torch.rand(5, 3)
    torch.save(scores, tmp_path / "good.pt")
    assert torch.equal(load_reference(tmp_path / "good.pt"), scores)
    marker = tmp_path / "pwned"
    for name, obj, words in [
        ("vector.pt", scores[:, 0], "holds (5,)"),
        ("dict.pt", {"scores": scores}, "holds dict"),
        ("code.pt", _Marker(marker), "not a saved tensor"),
    ]:
        torch.save(obj, tmp_path / name)
        with pytest.raises(UserError, match=re.escape(words)):
            load_reference(tmp_path / name)
    assert not marker.exists()
    with pytest.raises(UserError, match="does not exist"):
        load_reference(tmp_path / "missing.pt")


def test_class_count_mismatch_is_refused(trained_run, cifar_root, tmp_path):
    message = evaluation_error(
        trained_run / "best_model.pt",
        tmp_path,
        "data=cifar10",
        "data.source=config",
        f"data.root={cifar_root}",
    )
    assert "predicts 6 classes" in message and "has 10" in message


def _write(obj: object, path: Path, writer: str) -> None:
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        with path.open("wb") as handle:
            pickle.dump(obj, handle, protocol=4)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_code_in_a_checkpoint_is_never_run(writer, tmp_path):
    """Refused in one line that never suggests turning the check off; torch's warning about a
    raw pickle's protocol is not shown; the payload never runs."""
    marker, proof = tmp_path / "pwned", tmp_path / "payload_works"
    evil = tmp_path / "best_model.pt"
    _write({"format": "finetune.best_model/1", "state_dict": _Marker(marker)}, evil, writer)
    _write(_Marker(proof), tmp_path / "proof.pt", writer)
    with (tmp_path / "proof.pt").open("rb") as handle:  # an unsafe load: the payload works
        torch.load(handle, weights_only=False) if writer == "torch.save" else pickle.load(handle)
    assert proof.exists()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = evaluation_error(evil, tmp_path)
    assert (
        message
        == f"{evil} is not a weights-only checkpoint: it would run code when loaded, refused"
    )
    assert not [str(w.message) for w in caught if "pickle protocol" in str(w.message)]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"not a checkpoint\n", "is not a checkpoint file: torch.load cannot read it"),
        (b"", "is not a checkpoint file: torch.load cannot read it"),
        (b"checkpoint of run 3\n", "is not a checkpoint file: torch.load cannot read it"),
        (None, "not a finetune checkpoint"),
    ],
    ids=["text", "empty", "text that begins like a pickle opcode", "foreign dict"],
)
def test_files_that_are_not_checkpoints_are_refused(content, words, tmp_path):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=words) as error:
        load_checkpoint(path)
    assert "weights-only" not in str(error.value) and "(101)" not in str(error.value)


def _without_data(payload: dict) -> None:
    del payload["data"]


def _head_of_ten(payload: dict) -> None:
    payload["state_dict"]["fc.weight"] = torch.zeros(10, 512)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_without_data, ["lacks 'data'", "as training wrote it"]),
        (_head_of_ten, ["does not fit a resnet18: size mismatch for fc.weight", "[10, 512]"]),
    ],
    ids=["a key removed", "a head of another size"],
)
def test_checkpoints_edited_by_hand_are_one_line_naming_what_is_wrong(
    edit, words, trained_run, tmp_path
):
    payload = torch.load(trained_run / "best_model.pt", weights_only=True)
    edit(payload)
    torch.save(payload, tmp_path / "best_model.pt")
    with pytest.raises(UserError) as error:
        load_checkpoint(tmp_path / "best_model.pt")
    for word in words:
        assert word in str(error.value) and "\n" not in str(error.value), str(error.value)


def _compose(overrides: list[str]):
    return compose_config(*overrides)


# -- which data is evaluated: the rule, as a table --------------------------------------------
CKPT_SPLIT = "/runs/a/split.csv"
SCENES = {"kind": "folder", "root": "/data/scenes", "image_size": 32, "resize_size": 36}
DEMO = {"kind": "demo", "root": "/cache/demo_digits", "image_size": 48, "resize_size": 48}
DEMO_OTHER_CACHE = DEMO | {"root": "/home/me/.cache/finetune/demo_digits"}


def _checkpoint(data: dict, manifest: str | None = CKPT_SPLIT) -> LoadedModel:
    """A checkpoint's metadata as load_checkpoint returns it (the network plays no part)."""
    data = data | {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}
    path = Path(manifest or "/runs/a/split.csv").with_name("best_model.pt")
    return LoadedModel(nn.Identity(), SCENE_CLASSES, data, manifest and Path(manifest), path)


@pytest.mark.parametrize(
    ("checkpoint", "overrides", "kind", "root", "manifest"),
    [
        (SCENES, [], "folder", "/data/scenes", CKPT_SPLIT),
        (SCENES, ["data.root=/mnt/scenes"], "folder", "/mnt/scenes", CKPT_SPLIT),
        (
            SCENES,
            ["data.image_size=224", "data.mean=[0,0,0]"],
            "folder",
            "/data/scenes",
            CKPT_SPLIT,
        ),
        (SCENES, ["data.manifest=/m/split.csv"], "folder", "/data/scenes", CKPT_SPLIT),
        (SCENES, ["data.source=config", "data.root=/other"], "folder", "/other", None),
        (
            SCENES,
            ["data.source=config", "data.root=/other", "data.manifest=/m/split.csv"],
            "folder",
            "/other",
            "/m/split.csv",
        ),
        (SCENES, ["data=cifar10", "data.source=config", "data.root=/c"], "cifar10", "/c", None),
        (SCENES, ["data=cifar10", "data.root=/c"], "folder", "/c", CKPT_SPLIT),
        (DEMO, [], "demo", "/cache/demo_digits", CKPT_SPLIT),
        (DEMO, ["experiment=demo"], "demo", "/cache/demo_digits", CKPT_SPLIT),
        (DEMO_OTHER_CACHE, ["experiment=demo"], "demo", "/cache/demo_digits", CKPT_SPLIT),
        (DEMO_OTHER_CACHE, [], "demo", DEMO_OTHER_CACHE["root"], CKPT_SPLIT),
        (DEMO, ["experiment=demo", "data.source=config"], "demo", "/cache/demo_digits", None),
    ],
    ids=[
        "defaults",
        "data.root moved",
        "transform typed: the checkpoint's",
        "data.manifest alone: the checkpoint's split",
        "source=config: fresh split",
        "source=config with data.manifest",
        "data=cifar10 source=config",
        "data=cifar10 alone: the checkpoint's data, moved",
        "demo checkpoint",
        "demo checkpoint, experiment=demo: same root",
        "demo checkpoint of another cache, experiment=demo: materialised here",
        "demo checkpoint of another cache, defaults",
        "demo checkpoint, experiment=demo source=config",
    ],
)
def test_which_data_is_evaluated(checkpoint, overrides, kind, root, manifest, monkeypatch):
    """Setting -> the data eval, predict and analyze use: kind, root, manifest, transform."""
    monkeypatch.setenv("FINETUNE_CACHE", "/cache")
    loaded = _checkpoint(checkpoint)
    data = evaluation_data(_compose(["mode=eval", *overrides]), loaded)
    assert (data["kind"], data["root"], data["manifest"]) == (kind, root, manifest)
    assert {key: data[key] for key in TRANSFORM_KEYS} == {
        key: loaded.data[key] for key in TRANSFORM_KEYS
    }


@pytest.mark.parametrize(
    ("experiment", "command_line"),
    [
        ("data:\n  root: /mnt/scenes\n", ["data.root=/mnt/scenes"]),
        (
            "data:\n  source: config\n  root: /other\n  manifest: /m/split.csv\n",
            ["data.source=config", "data.root=/other", "data.manifest=/m/split.csv"],
        ),
        (
            "defaults:\n  - override /data: cifar10\ndata:\n  source: config\n  root: /c\n",
            ["data=cifar10", "data.source=config", "data.root=/c"],
        ),
    ],
    ids=["data.root", "source=config with manifest", "data=cifar10 source=config"],
)
def test_an_experiment_file_means_what_the_command_line_means(experiment, command_line, tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(f"# @package _global_\n{experiment}")
    from_file = _compose(["mode=eval", "experiment=mine", f"hydra.searchpath=[file://{tmp_path}]"])
    loaded = _checkpoint(SCENES)
    expected = evaluation_data(_compose(["mode=eval", *command_line]), loaded)
    assert evaluation_data(from_file, loaded) == expected
    assert expected != evaluation_data(_compose(["mode=eval"]), loaded)


def test_what_is_not_used_is_said(caplog):
    with caplog.at_level(logging.WARNING):
        evaluation_data(_compose(["mode=eval"]), _checkpoint(SCENES, manifest=None))
    assert "has no split manifest" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        evaluation_data(_compose(["mode=eval", "data.manifest=/m.csv"]), _checkpoint(SCENES))
    assert "not data.kind=folder data.manifest=/m.csv" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        evaluation_data(_compose(["mode=eval", "data.root=/r"]), _checkpoint(SCENES))
    assert not caplog.text  # the checkpoint's own data, moved: nothing to warn about
    same = ["data.resize_size=36", "data.mean=[0.5,0.4,0.3]", "data.std=[0.2,0.2,0.2]"]
    cfg = _compose(
        ["mode=eval", "data.source=config", "data.root=/r", "data.image_size=224", *same]
    )
    with caplog.at_level(logging.INFO):  # a note: the config's defaults differ from any model's
        evaluation_data(cfg, _checkpoint(SCENES))
    assert "checkpoint's transform (image_size=32), not the config's data.image_size" in caplog.text
    assert "data.mean" not in caplog.text  # only the keys that differ


def test_data_source_is_checked():
    validate_config(_compose(["mode=eval", "data.source=config"]))
    with pytest.raises(UserError, match="data.source='checkpiont': use checkpoint"):
        validate_config(_compose(["mode=eval", "data.source=checkpiont"]))


def test_data_moved_and_the_configured_manifest_score_the_same_images(
    soft_ckpt, soft_eval, trained_run, scene_root, tmp_path
):
    """data.root=<new place>: the checkpoint's split, read from there; data.source=config with
    the checkpoint's manifest: the same images again. Both score exactly what eval saved."""
    moved = tmp_path / "moved scenes"
    shutil.copytree(scene_root, moved)
    saved = torch.load(soft_eval / "softmax_scores.pt", weights_only=True)
    assert torch.equal(_scores_in_process(soft_ckpt, f"data.root={moved}"), saved)
    configured = [
        "data.source=config",
        f"data.root={moved}",
        f"data.manifest={trained_run / 'split.csv'}",
    ]
    assert torch.equal(_scores_in_process(soft_ckpt, *configured), saved)
    fresh = [*configured[:2], "data.split.test=6", "data.split.val=6"]  # a split of its own
    assert _scores_in_process(soft_ckpt, *fresh).shape == (6, saved.shape[1])
