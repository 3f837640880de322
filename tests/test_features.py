"""Streaming feature-map statistics against NumPy on feature maps captured by our own hooks:
the predict step by hand, and the whole of Lightning's predict loop (finetune.inference)."""

import math

import numpy as np
import pytest
import torch

from finetune.data.folder import scan_folder
from finetune.data.transforms import eval_transform
from finetune.errors import UserError
from finetune.features import (
    FeatureStats,
    FeatureStatsModule,
    feature_extractor,
    nonzero_eigenvalues,
    spectrum_summary,
)
from finetune.network import build_network

from conftest import compose_config

# Conv outputs, the first and second call of a block's ReLU (torchvision names the second
# `relu_1`) and the 2-D output of the head.
MODULES = [
    "layer1.0.conv1",
    "layer2.0.conv1",
    "layer3.0.conv1",
    "layer1.0.relu",
    "layer1.0.relu_1",
    "fc",
]
NUM_IMAGES = 7


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(6, "none", head_seed=0).eval()


@pytest.fixture(scope="module")
def images(scene_root) -> torch.Tensor:
    """A few of the scene images through the evaluation transform (32 px)."""
    from PIL import Image

    _, items, _ = scan_folder(scene_root)
    transform = eval_transform(32, 32, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    picks = items[:: len(items) // NUM_IMAGES][:NUM_IMAGES]
    return torch.stack([transform(Image.open(scene_root / item).convert("RGB")) for item in picks])


def hooked_maps(net: torch.nn.Module, images: torch.Tensor, batch_size: int) -> dict:
    """The maps behind MODULES, by plain forward hooks on the network: `name_1` is the second
    call of module `name` within one forward."""
    calls: dict[str, list[torch.Tensor]] = {}  # module -> its outputs in the current forward

    def recorder(name):
        def hook(module, inputs, output):
            calls.setdefault(name, []).append(output.detach().clone())

        return hook

    bases = {name: (name.removesuffix("_1"), int(name.endswith("_1"))) for name in MODULES}
    handles = [
        net.get_submodule(base).register_forward_hook(recorder(base))
        for base in {base for base, _ in bases.values()}
    ]
    maps: dict[str, list[torch.Tensor]] = {name: [] for name in MODULES}
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                calls.clear()
                net(images[start : start + batch_size])
                for name, (base, call) in bases.items():
                    maps[name].append(calls[base][call])
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts).double().numpy() for name, parts in maps.items()}


def collect(extractor: torch.nn.Module, batches) -> dict[str, FeatureStats]:
    """FeatureStatsModule's predict step over `batches`, as the predict loop calls it."""
    collector = FeatureStatsModule(extractor)
    with torch.inference_mode():
        for index, images in enumerate(batches):
            collector.predict_step((images, torch.zeros(len(images))), index)
    return collector.stats


def numpy_stats(maps: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Non-positive share, covariance (numpy.cov) and eigenvalues (from an SVD of the data)."""
    vectors = maps.reshape(maps.shape[0], maps.shape[1], -1).mean(axis=2)
    centred = vectors - vectors.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    eigenvalues = np.zeros(vectors.shape[1])
    eigenvalues[: len(singular)] = singular**2 / (len(vectors) - 1)
    return float(np.mean(maps <= 0)), np.cov(vectors, rowvar=False), eigenvalues


@pytest.mark.parametrize("batch_size", [1, 3, NUM_IMAGES])
def test_stats_equal_numpy_on_hooked_maps(net, images, batch_size):
    maps = hooked_maps(net, images, batch_size)
    extractor = feature_extractor(net, MODULES)
    batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    stats = collect(extractor, batches)
    assert set(stats) == set(MODULES)
    for name in MODULES:
        fraction, covariance, eigenvalues = numpy_stats(maps[name])
        scale = np.abs(covariance).max()
        assert stats[name].count == NUM_IMAGES
        assert stats[name].shape == maps[name].shape[1:]
        assert stats[name].nonpositive_fraction == pytest.approx(fraction, abs=1e-6)
        np.testing.assert_allclose(stats[name].covariance(), covariance, rtol=0, atol=1e-6 * scale)
        np.testing.assert_allclose(
            stats[name].eigenvalues(), eigenvalues, rtol=0, atol=1e-6 * scale
        )
    # the two calls of the block's ReLU are different maps, each matched above
    assert not np.allclose(maps["layer1.0.relu"], maps["layer1.0.relu_1"])


def test_autocast_forward_with_float64_statistics(net, images):
    """Under autocast (what Lightning's bf16-mixed does) the forward runs in bf16 (the maps
    hooked under the same autocast), while the running statistics stay float64."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = hooked_maps(net, images, batch_size=3)
    extractor = feature_extractor(net, MODULES)
    batches = (images[i : i + 3] for i in range(0, len(images), 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stats = collect(extractor, batches)
    for name in MODULES:
        fraction, covariance, _ = numpy_stats(maps[name])
        assert stats[name].mean.dtype == stats[name].scatter.dtype == torch.float64
        assert stats[name].nonpositive_fraction == pytest.approx(fraction, abs=1e-12)
        np.testing.assert_allclose(
            stats[name].covariance(), covariance, rtol=0, atol=1e-9 * np.abs(covariance).max()
        )
    float32 = collect(extractor, [images])
    assert not np.allclose(  # bf16 really ran: ~3 significant digits
        float32["layer3.0.conv1"].covariance(), stats["layer3.0.conv1"].covariance(), rtol=1e-4
    )


@pytest.mark.parametrize("batch_size", [1, 3, 10])
def test_streaming_equals_all_at_once(batch_size):
    """Same numbers whatever the batching, also when the mean dwarfs the variance."""
    generator = torch.Generator().manual_seed(1)
    maps = 1e4 + torch.randn(10, 5, 4, 4, generator=generator)
    maps[:, 0] -= 2e4  # one channel entirely negative
    whole, streamed = FeatureStats(), FeatureStats()
    whole.update(maps)
    for start in range(0, len(maps), batch_size):
        streamed.update(maps[start : start + batch_size])
    fraction, covariance, _ = numpy_stats(maps.double().numpy())
    for stats in (whole, streamed):
        assert stats.count == 10 and stats.elements == maps.numel()
        assert stats.nonpositive == int((maps <= 0).sum()) == 10 * 16
        assert stats.nonpositive_fraction == pytest.approx(fraction, abs=1e-12)
        np.testing.assert_allclose(stats.covariance(), covariance, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(streamed.covariance(), whole.covariance(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(streamed.eigenvalues(), whole.eigenvalues(), rtol=1e-9, atol=1e-12)


def test_inconsistent_input_is_refused():
    stats = FeatureStats()
    stats.update(torch.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match="at least 2 images"):
        stats.covariance()
    with pytest.raises(ValueError, match="shape changed"):
        stats.update(torch.ones(1, 4, 2, 2))


def test_spectrum_summary_by_hand():
    summary = spectrum_summary(np.array([4.0, 2.0, 1.0, 1.0, 0.0]))
    entropy = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25) + 2 * 0.125 * math.log(0.125))
    assert summary["total_variance"] == pytest.approx(8.0)
    assert summary["share_top1"] == pytest.approx(0.5)
    assert summary["share_top10"] == pytest.approx(1.0)
    assert summary["effective_rank"] == pytest.approx(math.exp(entropy))
    assert summary["rank"] == 4
    assert spectrum_summary(np.ones(8))["effective_rank"] == pytest.approx(8.0)
    one_direction = spectrum_summary(np.array([3.0, 1e-20, -1e-18]))
    assert one_direction["effective_rank"] == pytest.approx(1.0)
    assert one_direction["rank"] == 1
    assert nonzero_eigenvalues(np.array([2.0, 1.0, 1e-17, -1e-17])).tolist() == [
        True,
        True,
        False,
        False,
    ]
    shares = spectrum_summary(np.arange(20.0, 0.0, -1.0))
    assert shares["share_top10"] == pytest.approx(sum(range(11, 21)) / sum(range(1, 21)))


def test_unknown_module_names_list_valid_ones(net):
    with pytest.raises(UserError) as error:
        feature_extractor(net, ["layer1.0.conv1", "layer9.conv1"])
    message = str(error.value)
    assert "layer9.conv1" in message and "layer1.0.conv1" in message and "\n" not in message
    with pytest.raises(UserError, match="empty"):
        feature_extractor(net, [])


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_lightning_predict_loop_equals_numpy(net, images, tmp_path, precision):
    """inference.run_predict (Lightning's loop, the analysis's path) gives NumPy's numbers on
    the maps hooked in plain float32, or under bf16 autocast for inference.precision=bf16-mixed;
    the statistics stay float64 and the caller's torch flags come back."""
    from torch.utils.data import DataLoader, TensorDataset

    from finetune.inference import run_predict

    cfg = compose_config(f"inference.precision={precision}", "trainer.enable_progress_bar=false")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        maps = hooked_maps(net, images, batch_size=3)
    collector = FeatureStatsModule(feature_extractor(net, MODULES))
    loader = DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=3)
    deterministic = torch.are_deterministic_algorithms_enabled()
    run_predict(cfg, tmp_path, collector, loader)
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert collector.device_used == "cpu"
    for name in MODULES:
        stats = collector.stats[name]
        fraction, covariance, eigenvalues = numpy_stats(maps[name])
        scale = np.abs(covariance).max()
        assert stats.count == NUM_IMAGES and stats.scatter.dtype == torch.float64
        assert stats.nonpositive_fraction == pytest.approx(fraction, abs=1e-6)
        np.testing.assert_allclose(stats.covariance(), covariance, rtol=0, atol=1e-6 * scale)
        np.testing.assert_allclose(stats.eigenvalues(), eigenvalues, rtol=0, atol=1e-6 * scale)


def test_eigenvalues_beyond_the_rank_are_zero_never_negative():
    """3 images of 16 channels: a covariance of rank 2, whose other 14 eigenvalues eigvalsh
    returns as rounding noise of either sign; they are 0, as spectrum_summary counts them."""
    generator = torch.Generator().manual_seed(2)
    stats = FeatureStats()
    stats.update(5.0 + torch.randn(3, 16, 2, 2, generator=generator))
    raw = np.linalg.eigvalsh(stats.covariance())
    assert np.count_nonzero(raw[:14]) > 0  # the noise is there to be cleaned
    eigenvalues = stats.eigenvalues()
    assert np.all(eigenvalues[:2] > 0) and eigenvalues[2:].tolist() == [0.0] * 14
    assert spectrum_summary(eigenvalues)["rank"] == 2
