"""mode=analyze: all three dataset kinds through the CLI, skipped inputs, user mistakes."""

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from finetune import run
from finetune.checkpoint import load_checkpoint
from finetune.data.transforms import eval_transform
from finetune.reports.analysis_figures import spectrum_figure

from conftest import TINY, free_port, make_scene_folder

MODULES = ["layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.1.conv1", "layer3.0.conv1"]
DATASETS = ("scenes-test", "imagenet-val", "cifar10-test")
# In-process runs: no workers, a few images, two modules.
QUICK = [
    "data.loader.num_workers=0",
    "trainer.enable_progress_bar=false",
    "analysis.num_images=4",
    "analysis.batch_size=4",
    "analysis.modules=[layer1.0.conv1,layer2.0.conv1]",
]


def numpy_oracle(ckpt: Path, image_paths: list[Path], batch_size: int) -> dict[str, dict]:
    """Non-positive share and eigenvalues of each module, from plain hooks and NumPy.

    Images are decoded with PIL's own convert("RGB") (grayscale and CMYK included) and batched
    as the analysis batches them, so the maps are the very same numbers.
    """
    loaded = load_checkpoint(ckpt)
    data = loaded.data
    transform = eval_transform(data["image_size"], data["resize_size"], data["mean"], data["std"])
    images = torch.stack([transform(Image.open(path).convert("RGB")) for path in image_paths])
    maps: dict[str, list[np.ndarray]] = {name: [] for name in MODULES}
    handles = [
        loaded.net.get_submodule(name).register_forward_hook(
            lambda module, inputs, output, name=name: maps[name].append(output.double().numpy())
        )
        for name in MODULES
    ]
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            loaded.net(images[start : start + batch_size])
    for handle in handles:
        handle.remove()
    oracle = {}
    for name, parts in maps.items():
        values = np.concatenate(parts)
        vectors = values.mean(axis=(2, 3))
        eigenvalues = np.sort(np.linalg.eigvals(np.cov(vectors, rowvar=False)).real)[::-1]
        oracle[name] = {"fraction": float(np.mean(values <= 0)), "eigenvalues": eigenvalues}
    return oracle


def test_all_three_datasets_end_to_end(
    trained_run, imagenet_root, cifar_root, torch_home, tmp_path, monkeypatch
):
    run_dir = tmp_path / "analysis"
    ckpt = trained_run / "best_model.pt"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    run(
        [
            "mode=analyze",
            f"ckpt={ckpt}",
            f"analysis.imagenet_root={imagenet_root}",
            f"analysis.cifar_root={cifar_root}",
            "analysis.num_images=6",
            "analysis.batch_size=4",
            f"hydra.run.dir={run_dir}",
            *TINY,
        ]
    )
    stats = json.loads((run_dir / "feature_stats.json").read_text())
    records = stats["results"]
    expected = {(model, dataset) for model in ("fine-tuned", "pretrained") for dataset in DATASETS}
    assert {(r["model"], r["dataset"]) for r in records} == expected
    assert len(records) == len(expected) * len(MODULES) and stats["skipped"] == []
    assert all(r["num_images"] == 6 for r in records)
    channels = {"layer1": 64, "layer2": 128, "layer3": 256}
    assert all(r["shape"][0] == channels[r["module"].split(".")[0]] for r in records)
    for record in records:
        eigenvalues = np.array(record["eigenvalues"])
        assert len(eigenvalues) == record["shape"][0]
        assert np.all(np.diff(eigenvalues) <= 0) and record["rank"] <= 5  # N - 1
        assert 0 < record["nonpositive_fraction"] < 1
        assert 1 <= record["effective_rank"] <= record["rank"]

    # fine-tuned x imagenet-val holds all 6 images (one grayscale, one CMYK): check it by hand
    oracle = numpy_oracle(ckpt, sorted(imagenet_root.iterdir()), batch_size=4)
    by_module = {
        r["module"]: r
        for r in records
        if (r["model"], r["dataset"]) == ("fine-tuned", "imagenet-val")
    }
    for name, expected_stats in oracle.items():
        record = by_module[name]
        scale = expected_stats["eigenvalues"][0]
        assert record["nonpositive_fraction"] == pytest.approx(expected_stats["fraction"], abs=1e-6)
        np.testing.assert_allclose(
            record["eigenvalues"], expected_stats["eigenvalues"], rtol=0, atol=1e-6 * scale
        )

    with (run_dir / "nonpositive.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["model", "dataset", *MODULES]
    assert {(row[0], row[1]) for row in rows[1:]} == expected and len(rows) == 7
    percent = {
        (r["model"], r["dataset"], r["module"]): 100 * r["nonpositive_fraction"] for r in records
    }
    for row in rows[1:]:
        for module, value in zip(MODULES, row[2:], strict=True):
            assert float(value) == pytest.approx(percent[(row[0], row[1], module)], abs=1e-4)

    summary = (run_dir / "analysis.md").read_text()
    assert "| model | dataset | N | layer1.0.conv1 |" in summary
    for module in MODULES:
        assert (run_dir / "figures" / f"spectrum_{module}.png").stat().st_size > 1000
        assert f"figures/spectrum_{module}.png" in summary
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert {f"analysis/spectrum/{module}" for module in MODULES} <= set(events.Tags()["images"])
    # TensorBoard's TEXT tab shows the summary; a relative image link would be a broken image
    (text,) = events.Tensors("analysis/summary/text_summary")
    shown = text.tensor_proto.string_val[0].decode()
    assert "| model | dataset | N | layer1.0.conv1 |" in shown and "![" not in shown
    assert all(f"IMAGES tab, analysis/spectrum/{module}" in shown for module in MODULES)


def test_missing_inputs_skip_only_their_pairs(trained_run, cifar_root, tmp_path, monkeypatch):
    """No ImageNet weights (none cached, the download refused: a loopback port nothing listens
    on, so the test never downloads) and no ImageNet folder given: the fine-tuned pairs still
    run."""
    run_dir = tmp_path / "analysis"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    run(
        [
            "mode=analyze",
            f"ckpt={trained_run / 'best_model.pt'}",
            f"model.weights_url=http://127.0.0.1:{free_port()}/resnet18-f37072fd.pth",
            f"analysis.cifar_root={cifar_root}",
            "analysis.num_images=4",
            "analysis.modules=[layer1.0.conv1,layer4.1.relu_1]",
            f"hydra.run.dir={run_dir}",
            *QUICK[:2],  # no data.image_size: its warning (the model's own is used) is not it
        ]
    )
    log = (run_dir / "finetune.log").read_text()
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, warnings
    assert any("imagenet-val" in line and "analysis.imagenet_root" in line for line in warnings)
    assert any("pretrained" in line and "ImageNet weights" in line for line in warnings)
    stats = json.loads((run_dir / "feature_stats.json").read_text())
    pairs = {(r["model"], r["dataset"], r["module"]) for r in stats["results"]}
    assert pairs == {
        ("fine-tuned", dataset, module)
        for dataset in ("scenes-test", "cifar10-test")
        for module in ("layer1.0.conv1", "layer4.1.relu_1")
    }
    assert sorted(next(iter(s)) for s in stats["skipped"]) == ["dataset", "model"]
    assert "the ImageNet-pretrained one was skipped" in (run_dir / "analysis.md").read_text()
    relu = [r for r in stats["results"] if r["module"] == "layer4.1.relu_1"]
    for record in relu:  # ReLU outputs: zeros count as non-positive, a PSD covariance
        assert record["nonpositive_fraction"] > 0
        assert min(record["eigenvalues"]) > -1e-9 * max(record["eigenvalues"])


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ((), "ckpt is not set"),
        (("ckpt=/no/such/best_model.pt",), "/no/such/best_model.pt does not exist"),
        (("ckpt=CKPT", "analysis.num_images=1"), r"analysis.num_images=1 must be .* >= 2"),
        (("ckpt=CKPT", "analysis.top_k=0"), r"analysis.top_k=0 must be .* >= 1"),
        (
            ("ckpt=CKPT", "analysis.modules=[layer1.0.conv1,layer9.conv1]"),
            r"unknown module\(s\) layer9.conv1; valid names include .*layer1.0.conv1",
        ),
        (("ckpt=CKPT", "analysis.modules=7"), r"analysis.modules=7 must be auto or a list"),
    ],
)
def test_mistakes_are_user_errors(trained_run, overrides, pattern, tmp_path):
    from finetune.errors import UserError

    ckpt = str(trained_run / "best_model.pt")
    overrides = [o.replace("CKPT", ckpt) for o in overrides]
    with pytest.raises(UserError, match=pattern) as error:
        run(["mode=analyze", *overrides, f"hydra.run.dir={tmp_path / 'run'}"])
    assert "\n" not in str(error.value)  # __main__ prints it as one `error:` line


def test_spectrum_plot_leaves_out_rounding_noise():
    spectra = {
        ("fine-tuned", "a"): np.array([4.0, 1.0, 1e-17, -1e-16]),
        ("pretrained", "b"): np.ones(3),
    }
    figure = spectrum_figure("m", spectra)
    lines = figure.axes[0].get_lines()
    assert [len(line.get_xdata()) for line in lines] == [2, 3]
    assert figure.axes[0].get_yscale() == "log"


def test_spectrum_plot_pairs_lines_and_shows_single_points():
    """One colour per dataset, solid fine-tuned and dashed pretrained: identical spectra (module
    `x`, a frozen backbone) stay visible as a pair; 2 images (rank 1) give one point per line,
    which only a marker shows; the legend says what its counts are."""
    one_point = np.array([2.0, 0.0, 0.0])
    figure = spectrum_figure(
        "x",
        {
            ("fine-tuned", "a"): one_point,
            ("pretrained", "a"): one_point,
            ("fine-tuned", "b"): np.ones(3),
            ("pretrained", "b"): np.ones(3),
        },
    )
    axes = figure.axes[0]
    lines = axes.get_lines()
    assert [len(line.get_xdata()) for line in lines] == [1, 1, 3, 3]
    assert all(line.get_marker() not in (None, "", " ", "None") for line in lines)
    colours = [line.get_color() for line in lines]
    assert colours[0] == colours[1] != colours[2] == colours[3]
    assert [line.get_linestyle() for line in lines] == ["-", "--", "-", "--"]
    legend = axes.get_legend()
    assert legend.get_title().get_text() == "model / dataset: eigenvalues drawn (> 0) of channels"
    assert legend.get_texts()[0].get_text() == "fine-tuned / a: 1 of 3"
    alone = spectrum_figure("x", {("fine-tuned", "a"): one_point}).axes[0]
    low, high = alone.get_xlim()
    assert [tick for tick in alone.get_xticks() if low <= tick <= high] == [1]  # not 0.95, ...


def test_imagenet_folder_flat_in_synset_folders_or_mixed(imagenet_root, tmp_path):
    """Analysis needs no labels: the images directly inside the folder and in its synset
    folders (links too) are all read, in sorted order; hidden files and folders are not, nor a
    parent folder's train/."""
    import shutil

    from finetune.data.imagenet_val import imagenet_items
    from finetune.data.samples import imagenet_sample
    from finetune.errors import UserError

    files = sorted(imagenet_root.iterdir())
    root = tmp_path / "val"
    expected = []
    for i, file in enumerate(files):  # two loose files, then two synset folders of two
        synset = f"n0144076{i % 2}" if i >= 2 else ""
        (root / synset).mkdir(parents=True, exist_ok=True)
        shutil.copy(file, root / synset / file.name)
        expected.append(f"{synset}/{file.name}".lstrip("/"))
    (root / ".cache").mkdir()
    shutil.copy(files[0], root / ".cache" / files[0].name)
    shutil.copy(files[0], root / "n01440760" / "._ILSVRC2012_val_00000009.JPEG")
    assert imagenet_items(root) == (sorted(expected), [-1] * 6)
    for name in expected[:2]:  # valprep's layout: every image in its synset folder
        (root / name).rename(root / "n01440761" / name)
    items, _ = imagenet_items(root)
    assert len(items) == 6 and all(item.startswith("n0144076") for item in items)
    (root / "n01440761").rename(tmp_path / "elsewhere")  # a synset folder that is a link
    (root / "n01440761").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert imagenet_items(root)[0] == items
    parent = tmp_path / "imagenet"  # the folder above val/ and train/: not a validation folder
    (parent / "train" / "n01440760").mkdir(parents=True)
    shutil.copy(files[0], parent / "train" / "n01440760" / "n01440760_1.JPEG")
    shutil.copytree(root, parent / "val", symlinks=True)
    with pytest.raises(UserError, match=r"holds no images .* in synset folders .* not a synset"):
        imagenet_items(parent)
    transform = eval_transform(32, 32, [0.5] * 3, [0.25] * 3)
    sample = imagenet_sample(root, transform, count=4, seed=0)
    assert len(sample) == 4 and set(sample.items) <= set(items)
    assert sample[0][0].shape == (3, 32, 32)


# -- in-process runs: data relocation, absent vs broken inputs, precision ----------------------


@pytest.fixture
def analyze_run(tmp_path, torch_home, monkeypatch):
    """`python -m finetune mode=analyze QUICK OVERRIDES` in this process (finetune.run), a fresh
    run folder per call. Returns its results (`run_dir` included)."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    runs = iter(range(100))

    def analyze(*overrides: str) -> dict:
        run_dir = tmp_path / f"analysis{next(runs)}"
        return run(["mode=analyze", *QUICK, *overrides, f"hydra.run.dir={run_dir}"])

    return analyze


def moved_checkpoint(trained_run: Path, folder: Path) -> Path:
    """A copy of the trained checkpoint whose data folder no longer exists (moved away)."""
    payload = torch.load(trained_run / "best_model.pt", map_location="cpu", weights_only=True)
    payload["data"]["root"] = str(folder / "was-here")
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(payload, folder / "best_model.pt")
    return folder / "best_model.pt"


def records_of(payload: dict, dataset: str) -> dict[tuple[str, str], dict]:
    return {(r["model"], r["module"]): r for r in payload["results"] if r["dataset"] == dataset}


def analyze_once(run_dir: Path, torch_home: Path, *overrides: str) -> dict:
    """One `mode=analyze QUICK OVERRIDES` run for a module-scoped fixture (no monkeypatch
    there): TORCH_HOME holds the stand-in ImageNet weights while it runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(torch_home))
        return run(["mode=analyze", *QUICK, *overrides, f"hydra.run.dir={run_dir}"])


@pytest.fixture(scope="module")
def quick_analysis(trained_run, torch_home, tmp_path_factory) -> dict:
    """The trained checkpoint analysed with the QUICK settings and nothing else: the numbers the
    relocated and the other-precision runs are compared with. Read only."""
    run_dir = tmp_path_factory.mktemp("quick_analysis") / "run"
    return analyze_once(run_dir, torch_home, f"ckpt={trained_run / 'best_model.pt'}")


@pytest.fixture(scope="module")
def moved_ckpt(trained_run, tmp_path_factory) -> Path:
    return moved_checkpoint(trained_run, tmp_path_factory.mktemp("moved"))


@pytest.fixture(scope="module")
def moved_scenes(scene_root, tmp_path_factory) -> Path:
    """The scene data, copied to a new place (where moved_ckpt's data went)."""
    import shutil

    return shutil.copytree(scene_root, tmp_path_factory.mktemp("relocated") / "moved-scenes")


@pytest.fixture(scope="module")
def relocated_analysis(moved_ckpt, moved_scenes, torch_home, tmp_path_factory) -> dict:
    """moved_ckpt analysed with data.root=moved_scenes, under trainer.precision=bf16-mixed: a
    training setting analyze ignores, so this one run must give exactly quick_analysis's
    numbers on both counts (the data found again, the precision not taken). Read only."""
    return analyze_once(
        tmp_path_factory.mktemp("relocated_analysis") / "run",
        torch_home,
        f"ckpt={moved_ckpt}",
        f"data.root={moved_scenes}",
        "trainer.precision=bf16-mixed",
    )


def test_data_root_relocates_the_checkpoint_split(
    analyze_run, trained_run, moved_ckpt, moved_scenes, relocated_analysis, quick_analysis, tmp_path
):
    """Moved data: one-line error naming data.root (the command line prints a task's UserError
    as its one `error:` line: test_train's missing-weights test); data.root= (relocated_analysis)
    = the same split, moved; data.source=config = a fresh split of other data."""
    from finetune.errors import UserError

    with pytest.raises(UserError, match=r"does not exist.*data\.root=") as error:
        analyze_run(f"ckpt={moved_ckpt}")
    assert "\n" not in str(error.value)

    relocated, original = relocated_analysis, quick_analysis
    own = relocated["datasets"]["scenes-test"]
    assert own["root"] == str(moved_scenes) and own["manifest"] == str(trained_run / "split.csv")
    with (trained_run / "split.csv").open() as handle:
        test_items = {row["path"] for row in csv.DictReader(handle) if row["split"] == "test"}
    assert len(own["images"]) == 4 and set(own["images"]) <= test_items
    assert own["images"] == original["datasets"]["scenes-test"]["images"]
    assert records_of(relocated, "scenes-test") == records_of(original, "scenes-test")

    # data.source=config analyses the configured data: a fresh split of it, no manifest
    other = make_scene_folder(tmp_path / "other-scenes", per_class=4, seed=3)
    fresh = analyze_run(
        f"ckpt={moved_ckpt}",
        f"data.root={other}",
        "data.source=config",
        "data.split.test=6",
        "data.split.val=6",
    )
    assert fresh["datasets"]["scenes-test"]["root"] == str(other)
    assert fresh["datasets"]["scenes-test"]["manifest"] is None
    assert records_of(fresh, "scenes-test") != records_of(original, "scenes-test")


def test_too_few_images_are_one_line_errors(analyze_run, trained_run, imagenet_root, tmp_path):
    import shutil

    from finetune.errors import UserError

    ckpt = f"ckpt={trained_run / 'best_model.pt'}"
    other = make_scene_folder(tmp_path / "other-scenes", per_class=3)
    with pytest.raises(UserError, match=r"split=val of .* is empty"):
        analyze_run(
            ckpt,
            "split=val",
            f"data.root={other}",
            "data.source=config",
            "data.split.test=6",
            "data.split.val=0",
        )
    # two ImageNet files, one of which does not decode: one image left, no covariance
    folder = tmp_path / "imagenet"
    folder.mkdir()
    shutil.copy(next(imagenet_root.iterdir()), folder / "ILSVRC2012_val_00000001.JPEG")
    (folder / "ILSVRC2012_val_00000002.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"1 readable image.*at least 2") as error:
        analyze_run(ckpt, f"analysis.imagenet_root={folder}")
    assert "\n" not in str(error.value)


def test_absent_inputs_are_skipped_with_one_warning_each(analyze_run, trained_run, monkeypatch):
    """Datasets not given and ImageNet weights not available: skipped, the rest runs."""
    from finetune.errors import WeightsUnavailable
    from finetune.tasks import analyze as analyze_module

    def no_weights(*args, **kwargs):
        raise WeightsUnavailable("ImageNet weights are not cached here and cannot be downloaded")

    monkeypatch.setattr(analyze_module, "build_network", no_weights)
    payload = analyze_run(f"ckpt={trained_run / 'best_model.pt'}")
    assert {(r["model"], r["dataset"]) for r in payload["results"]} == {
        ("fine-tuned", "scenes-test")
    }
    assert sorted(tuple(s.items())[0] for s in payload["skipped"]) == [
        ("dataset", "cifar10-test"),
        ("dataset", "imagenet-val"),
        ("model", "pretrained"),
    ]
    log = (Path(payload["run_dir"]) / "finetune.log").read_text()
    warnings = [line for line in log.splitlines() if "[WARNING]" in line]
    assert len(warnings) == 3, warnings
    assert any("analysis.imagenet_root" in w for w in warnings)
    assert any("analysis.cifar_root" in w for w in warnings)
    assert any("cannot be downloaded" in w for w in warnings)


def broken_input(kind: str, folder: Path, cifar_root: Path, imagenet_root: Path) -> list[str]:
    """Overrides that give an input which is there but broken (or given and missing)."""
    import shutil

    if kind == "planted weights":
        home = folder / "torch_home"
        (home / "hub" / "checkpoints").mkdir(parents=True)
        with (home / "hub" / "checkpoints" / "resnet18-f37072fd.pth").open("wb") as handle:
            pickle.dump(
                {"conv1.weight": Path("/etc/passwd")}, handle, protocol=2
            )  # not weights-only
        return [f"+env_torch_home={home}"]
    if kind == "corrupt cifar batch":
        broken = shutil.copytree(cifar_root, folder / "cifar-10-batches-py")
        (broken / "test_batch").write_bytes(b"\x80\x04garbage")
        return [f"analysis.cifar_root={broken}"]
    if kind == "cifar batch with too few labels":
        broken = shutil.copytree(cifar_root, folder / "cifar-10-batches-py")
        with (broken / "test_batch").open("wb") as handle:
            pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": [1, 2]}, handle)
        return [f"analysis.cifar_root={broken}"]
    if kind == "cifar folder without test_batch":
        broken = shutil.copytree(cifar_root, folder / "cifar-10-batches-py")
        (broken / "test_batch").unlink()
        return [f"analysis.cifar_root={broken}"]
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "imagenet root is a file":
        (folder / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG\n")
        return [f"analysis.imagenet_root={folder / 'val.txt'}"]
    if kind == "cifar root is an archive":
        (folder / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b")
        return [f"analysis.cifar_root={folder / 'cifar-10-python.tar.gz'}"]
    if kind == "imagenet folder missing":
        return [f"analysis.imagenet_root={folder / 'no-imagenet'}"]
    assert kind == "cifar folder missing"
    return [f"analysis.cifar_root={folder / 'no-cifar'}"]


BROKEN = {
    "planted weights": r"refusing .*resnet18-f37072fd\.pth",
    "corrupt cifar batch": r"test_batch is not a CIFAR-10 python batch",
    "cifar batch with too few labels": r"test_batch has 2 labels for 4 images",
    # analyze reads test_batch only: the message does not ask for the training batches
    "cifar folder without test_batch": r"test_batch is missing: analysis\.cifar_root must be the "
    r"cifar-10-batches-py folder \(only its test_batch is read\)$",
    "imagenet root is a file": r"analysis\.imagenet_root=.*val\.txt is a file, not a folder",
    "cifar root is an archive": r"analysis\.cifar_root=.*cifar-10-python\.tar\.gz is an archive: "
    "unpack it and give the folder",
    "imagenet folder missing": r"analysis\.imagenet_root=.*no-imagenet does not exist",
    "cifar folder missing": r"analysis\.cifar_root=.*no-cifar does not exist",
}


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_inputs_fail_in_one_line(
    analyze_run, trained_run, cifar_root, imagenet_root, tmp_path, monkeypatch, kind
):
    """Given but broken is never skipped: one UserError line, and no results are written."""
    from finetune.errors import UserError

    overrides = broken_input(kind, tmp_path / "broken", cifar_root, imagenet_root)
    if overrides[0].startswith("+env_torch_home="):
        monkeypatch.setenv("TORCH_HOME", overrides.pop(0).split("=", 1)[1])
    with pytest.raises(UserError, match=BROKEN[kind]) as error:
        analyze_run(f"ckpt={trained_run / 'best_model.pt'}", *overrides)
    assert "\n" not in str(error.value)
    assert not list(tmp_path.glob("analysis*/feature_stats.json"))


def test_a_dataset_folder_given_but_missing_is_refused_before_the_weights_load(
    trained_run, tmp_path, monkeypatch
):
    """A mistyped analysis.cifar_root is an error, not a skipped pair, and it comes before the
    pretrained weights are loaded (a download can take a minute)."""
    from finetune.errors import UserError
    from finetune.tasks import analyze as analyze_module

    def no_weights_yet(*args, **kwargs):
        raise AssertionError("the pretrained weights were loaded before the inputs were checked")

    monkeypatch.setattr(analyze_module, "build_network", no_weights_yet)
    with pytest.raises(UserError, match=r"analysis\.cifar_root=.*nonexist does not exist"):
        run(
            [
                "mode=analyze",
                f"ckpt={trained_run / 'best_model.pt'}",
                f"analysis.cifar_root={tmp_path / 'nonexist'}",
                "analysis.num_images=4",
                "data.loader.num_workers=0",
                f"hydra.run.dir={tmp_path / 'run'}",
            ]
        )


def test_precision_follows_inference_precision_only(
    analyze_run, trained_run, quick_analysis, relocated_analysis
):
    """trainer.precision does not change the analysis (relocated_analysis ran with
    trainer.precision=bf16-mixed); inference.precision=bf16-mixed does (autocast), with the
    statistics still accumulated in float64."""
    default, trainer_bf16 = quick_analysis, relocated_analysis
    assert default["precision"] == trainer_bf16["precision"] == "32-true"
    assert trainer_bf16["results"] == default["results"]

    bf16 = analyze_run(f"ckpt={trained_run / 'best_model.pt'}", "inference.precision=bf16-mixed")
    assert bf16["precision"] == "bf16-mixed"
    for float32, mixed in zip(default["results"], bf16["results"], strict=True):
        assert mixed["eigenvalues"] != float32["eigenvalues"]  # autocast really ran
        np.testing.assert_allclose(mixed["eigenvalues"][:3], float32["eigenvalues"][:3], rtol=0.1)
        assert mixed["nonpositive_fraction"] == pytest.approx(
            float32["nonpositive_fraction"], abs=0.02
        )


def test_auto_modules_and_pretrained_follow_the_checkpoint_arch(
    analyze_run, trained_run, tmp_path, monkeypatch
):
    """A MobileNetV3 checkpoint: analysis.modules=auto is its own default (five convolution
    nodes), the pretrained model is a MobileNetV3 too (its weights from the cache), and an
    unknown name is answered with close names from its own graph."""
    from finetune.errors import UserError
    from finetune.network import build_network, default_feature_modules

    arch = "mobilenet_v3_small"
    payload = torch.load(trained_run / "best_model.pt", map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    net = build_network(len(payload["class_names"]), "none", arch=arch)
    payload.update(arch=arch, state_dict=net.state_dict())
    ckpt = tmp_path / "mobilenet.pt"
    torch.save(payload, ckpt)
    home = tmp_path / "torch_home" / "hub" / "checkpoints"
    home.mkdir(parents=True)
    torch.save(build_network(1000, "none", arch=arch).state_dict(), home / f"{arch}-047dcff4.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    result = analyze_run(f"ckpt={ckpt}", "analysis.modules=auto")
    expected = default_feature_modules(arch)
    assert result["arch"] == arch and result["modules"] == expected
    assert expected[0] == "features.0" and len(expected) == 5
    assert {(r["model"], r["module"]) for r in result["results"]} == {
        (model, module) for model in ("fine-tuned", "pretrained") for module in expected
    }
    assert result["skipped"] == [
        {"dataset": "imagenet-val", "reason": result["skipped"][0]["reason"]},
        {"dataset": "cifar10-test", "reason": result["skipped"][1]["reason"]},
    ]
    with pytest.raises(
        UserError, match=r"unknown module\(s\) layer1.0.conv1; .*features\."
    ) as error:
        analyze_run(f"ckpt={ckpt}", "analysis.modules=[layer1.0.conv1]")
    assert "layer" not in str(error.value).split("include")[1]  # no ResNet names offered


def test_eigenvalue_tables_list_at_most_the_channels(quick_analysis):
    """analysis.top_k=1000 of 64 channels lists 64 eigenvalues; 4 images give at most 3 above
    0, and the rest are listed as 0 (rounding noise, never a negative)."""
    from finetune.reports.analysis_report import summary_markdown

    summary = summary_markdown({**quick_analysis, "top_k": 1000})
    assert "top-1000" not in summary
    assert "| top-64 eigenvalues |" in summary and "| top-128 eigenvalues |" in summary
    table = summary.split("### layer1.0.conv1")[1].split("### ")[0]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| fine-tuned")]
    values = [float(value) for value in rows[0][2].split(", ")]
    assert len(values) == 64 and min(values) >= 0
    assert all(value > 0 for value in values[:3]) and values[3:] == [0.0] * 61


def test_reports_record_what_was_used(trained_run, torch_home, tmp_path, monkeypatch):
    """A relative ckpt is recorded absolute; analysis.num_images beyond the split's 12 test
    images is recorded as asked, beside the count read; a 2-D output (fc) is headed as one."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.chdir(trained_run.parent)
    quick = [o for o in QUICK if not o.startswith(("analysis.num_images", "analysis.modules"))]
    run_dir = tmp_path / "analysis"
    payload = run(
        [
            "mode=analyze",
            f"ckpt={trained_run.name}/best_model.pt",
            "analysis.num_images=100",
            "analysis.modules=[layer1.0.conv1,fc]",
            f"hydra.run.dir={run_dir}",
            *quick,
        ]
    )
    ckpt = str((trained_run / "best_model.pt").resolve())
    stats = json.loads((run_dir / "feature_stats.json").read_text())
    assert payload["checkpoint"] == stats["checkpoint"] == ckpt
    assert stats["num_images"] == 100 and stats["datasets"]["scenes-test"]["num_images"] == 12
    assert {record["num_images"] for record in stats["results"]} == {12}
    summary = (run_dir / "analysis.md").read_text()
    assert "images per dataset: scenes-test 12 (analysis.num_images=100," in summary
    assert "### layer1.0.conv1 (64 channels of 8 x 8 maps)" in summary
    assert "### fc (6 channels, a 2-D output: no maps)" in summary


def test_feature_stats_json_is_written_last(quick_analysis, tmp_path, monkeypatch):
    """mode=report takes feature_stats.json as the sign that the analyze step is done: a run
    stopped (Ctrl-C) while it writes analysis.md, its last other report, leaves none behind."""
    from finetune.reports import analysis_report

    def interrupted(path, text):
        raise KeyboardInterrupt

    monkeypatch.setattr(analysis_report, "write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        analysis_report.write_analysis_reports(tmp_path, quick_analysis)
    assert list((tmp_path / "figures").glob("spectrum_*.png"))
    assert not (tmp_path / "feature_stats.json").exists()
