"""mode=analyze: all three dataset kinds through the CLI, skipped inputs, user mistakes."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from finetune.checkpoint import load_checkpoint
from finetune.data.transforms import eval_transform
from finetune.reports.analysis_figures import spectrum_figure

from conftest import TINY, run_cli

MODULES = ["layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.1.conv1", "layer3.0.conv1"]
DATASETS = ("scenes-test", "imagenet-val", "cifar10-test")


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
    trained_run, imagenet_root, cifar_root, torch_home, tmp_path
):
    run_dir = tmp_path / "analysis"
    ckpt = trained_run / "best_model.pt"
    result = run_cli(
        "mode=analyze",
        f"ckpt={ckpt}",
        f"analysis.imagenet_root={imagenet_root}",
        f"analysis.cifar_root={cifar_root}",
        "analysis.num_images=6",
        "analysis.batch_size=4",
        f"hydra.run.dir={run_dir}",
        *TINY,
        cwd=tmp_path,
        torch_home=torch_home,
    )
    assert result.returncode == 0, result.stderr[-3000:]
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


def test_missing_inputs_skip_only_their_pairs(trained_run, cifar_root, tmp_path):
    """No ImageNet weights (no TORCH_HOME) and no ImageNet folder: fine-tuned pairs still run."""
    run_dir = tmp_path / "analysis"
    missing = tmp_path / "no-such-imagenet"
    result = run_cli(
        "mode=analyze",
        f"ckpt={trained_run / 'best_model.pt'}",
        f"analysis.imagenet_root={missing}",
        f"analysis.cifar_root={cifar_root}",
        "analysis.num_images=4",
        "analysis.modules=[layer1.0.conv1,layer4.1.relu_1]",
        f"hydra.run.dir={run_dir}",
        *TINY,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, warnings
    assert any("imagenet-val" in line and str(missing) in line for line in warnings)
    assert any("pretrained" in line and "ImageNet weights" in line for line in warnings)
    stats = json.loads((run_dir / "feature_stats.json").read_text())
    pairs = {(r["model"], r["dataset"], r["module"]) for r in stats["results"]}
    assert pairs == {
        ("fine-tuned", dataset, module)
        for dataset in ("scenes-test", "cifar10-test")
        for module in ("layer1.0.conv1", "layer4.1.relu_1")
    }
    assert sorted(next(iter(s)) for s in stats["skipped"]) == ["dataset", "model"]
    relu = [r for r in stats["results"] if r["module"] == "layer4.1.relu_1"]
    for record in relu:  # ReLU outputs: zeros count as non-positive, a PSD covariance
        assert record["nonpositive_fraction"] > 0
        assert min(record["eigenvalues"]) > -1e-9 * max(record["eigenvalues"])


@pytest.fixture
def compose_config():
    """The config exactly as `python -m finetune OVERRIDES` composes it, in this process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from finetune.__main__ import _config_dir

    def compose_with(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=_config_dir(), version_base="1.3"):
            return compose(config_name="config", overrides=["mode=analyze", *overrides])

    yield compose_with
    GlobalHydra.instance().clear()


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
    ],
)
def test_mistakes_are_user_errors(compose_config, trained_run, overrides, pattern):
    from finetune.errors import UserError
    from finetune.tasks import run_task

    ckpt = str(trained_run / "best_model.pt")
    cfg = compose_config(*(o.replace("CKPT", ckpt) for o in overrides))
    with pytest.raises(UserError, match=pattern) as error:
        run_task(cfg)
    assert "\n" not in str(error.value)  # __main__ prints it as one `error:` line


def test_spectrum_plot_leaves_out_rounding_noise():
    figure = spectrum_figure("m", {"a": np.array([4.0, 1.0, 1e-17, -1e-16]), "b": np.ones(3)})
    lines = figure.axes[0].get_lines()
    assert [len(line.get_xdata()) for line in lines] == [2, 3]
    assert figure.axes[0].get_yscale() == "log"
