"""The data layer: folder scanning and splits, manifests, odd image modes, CIFAR-10 pickles,
the ImageNet-val folder, transforms, and the demo folder."""

import collections
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from finetune.data.cifar10 import CifarReader, read_batches, read_class_names
from finetune.data.datamodule import ImageDataModule
from finetune.data.demo import materialise_demo
from finetune.data.folder import scan_folder
from finetune.data.imagenet_val import imagenet_items
from finetune.data.images import load_rgb
from finetune.data.splits import read_manifest, stratified_split
from finetune.data.transforms import eval_transform
from finetune.errors import UserError

from conftest import SCENE_CLASSES, make_scene_folder, tiny_data_cfg, write_cifar_batches


def datamodule(root: Path, run_dir: Path | None = None, **changes) -> ImageDataModule:
    module = ImageDataModule(tiny_data_cfg(root, **changes), seed=7, run_dir=run_dir)
    module.setup("fit")
    return module


def test_class_order_is_sorted_folder_names(tmp_path):
    make_scene_folder(tmp_path, per_class=2, classes=["sea", "Buildings", "forest", "alpha"])
    names, items, labels = scan_folder(tmp_path)
    assert names == sorted(["sea", "Buildings", "forest", "alpha"])
    assert [items[i].split("/")[0] for i in range(0, 8, 2)] == names
    assert labels == [0, 0, 1, 1, 2, 2, 3, 3]


def test_split_sizes_stratified_and_disjoint(tmp_path):
    labels = np.repeat(np.arange(6), [30, 40, 50, 60, 45, 35])  # 260 images
    splits = np.asarray(stratified_split(labels, test=60, val=40, seed=1))
    counts = collections.Counter(splits)
    assert counts == {"test": 60, "val": 40, "train": 160}
    for split, size in (("test", 60), ("val", 40), ("train", 160)):
        for label in range(6):
            share = np.sum((splits == split) & (labels == label))
            exact = size * np.mean(labels == label)
            assert abs(share - exact) <= 1, (split, label, share, exact)
    # fractions of all images give the same kind of split
    fractions = collections.Counter(stratified_split(labels, test=0.2, val=0.1, seed=1))
    assert fractions == {"test": 52, "val": 26, "train": 182}
    # the seed decides the split
    assert stratified_split(labels, 60, 40, seed=1) == splits.tolist()
    assert stratified_split(labels, 60, 40, seed=2) != splits.tolist()


def test_split_larger_than_data_is_refused():
    with pytest.raises(UserError, match="only 20"):
        stratified_split([0, 1] * 10, test=15, val=5, seed=0)


def test_manifest_written_and_reused_even_with_new_files(tmp_path):
    root = make_scene_folder(tmp_path / "data", per_class=8)
    first = datamodule(root, run_dir=tmp_path / "run1")
    manifest = tmp_path / "run1" / "split.csv"
    items, labels, splits = read_manifest(manifest, SCENE_CLASSES)
    assert len(items) == 48 and len(set(items)) == 48
    assert collections.Counter(splits) == {"test": 12, "val": 6, "train": 30}
    # new images appear in the folders: a reused manifest still gives exactly the same split
    make_scene_folder(root, per_class=12, seed=5)
    (root / "forest" / "img_999.jpg").write_bytes((root / "forest" / "img_000.jpg").read_bytes())
    again = datamodule(root, run_dir=tmp_path / "run2", manifest=str(manifest))
    for split in ("train", "val", "test"):
        assert again.datasets[split].items == first.datasets[split].items
        assert again.datasets[split].labels == first.datasets[split].labels
    # a fresh split (no manifest) of the grown folder is different
    fresh = datamodule(root, run_dir=tmp_path / "run3")
    assert len(fresh.datasets["train"]) > len(first.datasets["train"])


def test_manifest_with_unknown_class_is_refused(tmp_path):
    root = make_scene_folder(tmp_path / "data", per_class=4)
    manifest = tmp_path / "split.csv"
    manifest.write_text("path,label,split\nsea/img_000.jpg,lake,test\n")
    with pytest.raises(UserError, match="lake"):
        datamodule(root, manifest=str(manifest))


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("L", ".jpg"),
        ("CMYK", ".jpg"),
        ("1", ".png"),
        ("LA", ".png"),
        ("P", ".png"),
        ("RGBA", ".png"),
        ("I;16", ".png"),
        ("I", ".tif"),
        ("F", ".tif"),
        ("RGB", ".bmp"),
    ],
)
def test_every_image_mode_loads_as_rgb(tmp_path, mode, suffix):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), mode="RGB")
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (20, 30)).astype(np.uint16))
    else:
        image = base.convert(mode)
    if mode == "P":
        image.info["transparency"] = 0
    path = tmp_path / f"image{suffix}"
    image.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == mode
    rgb = load_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (30, 20)
    tensor = eval_transform(16, 16, [0.5] * 3, [0.5] * 3)(rgb)
    assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32
    if mode in ("I;16", "I"):  # deep gray is rescaled, not clipped to white
        assert 20 < np.asarray(rgb).mean() < 235


def test_broken_files_are_skipped_with_a_list_or_refused(tmp_path, caplog):
    root = make_scene_folder(tmp_path / "data", per_class=6)
    (root / "sea" / "zero.jpg").write_bytes(b"")
    (root / "sea" / "random.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    good = (root / "forest" / "img_000.jpg").read_bytes()
    (root / "forest" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "forest" / "notes.txt").write_text("not an image")
    (root / "forest" / ".DS_Store").write_bytes(b"\0\1")
    (root / "forest" / "photo.jpg (1).jpg").write_bytes(b"junk")  # a name with " (" in it
    module = datamodule(root, run_dir=tmp_path / "run", split={"test": 6, "val": 6, "seed": 1})
    all_items = sum((module.datasets[s].items for s in ("train", "val", "test")), [])
    assert len(all_items) == 36  # the 4 broken files are out, the .txt/.DS_Store never counted
    assert len(module.skipped) == 4
    skipped = (tmp_path / "run" / "skipped_images.txt").read_text()
    for name in ("zero.jpg", "random.jpg", "truncated.jpg", "photo.jpg (1).jpg"):
        assert name in skipped
        assert any(name in record.getMessage() for record in caplog.records)
    with pytest.raises(UserError, match="4 file"):
        datamodule(root, bad_images="error")


def test_missing_root_and_single_class_are_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        datamodule(tmp_path / "nowhere")
    make_scene_folder(tmp_path / "one", per_class=3, classes=["sea"])
    with pytest.raises(UserError, match="at least 2"):
        datamodule(tmp_path / "one")
    root = make_scene_folder(tmp_path / "two", per_class=3, classes=["sea", "forest"])
    (root / "street").mkdir()
    with pytest.raises(UserError, match="no images"):
        datamodule(root)


def test_cifar_batches_decode_pixel_exactly(cifar_root):
    written = write_cifar_batches(cifar_root.parent / "again", per_batch=5, seed=3)
    root = cifar_root.parent / "again"
    items, labels, images = read_batches(root, ["data_batch_2", "test_batch"])
    data, expected_labels = written["data_batch_2"]
    assert items[:2] == ["data_batch_2:0", "data_batch_2:1"]
    assert labels[:5] == expected_labels
    reader = CifarReader(root, images)
    for row in range(5):
        pixels = np.asarray(reader(f"data_batch_2:{row}"))
        assert pixels.shape == (32, 32, 3)
        red, green, blue = data[row].reshape(3, 32, 32)
        assert np.array_equal(pixels[..., 0], red)
        assert np.array_equal(pixels[..., 1], green)
        assert np.array_equal(pixels[..., 2], blue)
    assert read_class_names(root)[:2] == ["airplane", "automobile"]


def test_cifar_datamodule_trains_on_ten_classes(cifar_root, tmp_path):
    split = {"test": 0, "val": 10, "seed": 0}
    module = datamodule(cifar_root, run_dir=tmp_path, kind="cifar10", split=split)
    assert module.num_classes == 10
    assert len(module.datasets["test"]) == 12 and len(module.datasets["val"]) == 10
    assert len(module.datasets["train"]) == 50
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.max() < 10


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    root = tmp_path / "cifar"
    write_cifar_batches(root, per_batch=2)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    import pickle

    (root / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(UserError, match="not a CIFAR-10"):
        read_batches(root, ["test_batch"])
    assert not marker.exists()


def test_imagenet_folder_listing(imagenet_root, tmp_path):
    (imagenet_root / ".hidden.JPEG").write_bytes(b"x")
    (imagenet_root / "readme.txt").write_text("x")
    items, labels = imagenet_items(imagenet_root)
    assert items == sorted(items) and len(items) == 6
    assert items[0] == "ILSVRC2012_val_00000001.JPEG" and labels == [-1] * 6
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(str(i * 100) for i in range(6)))
    assert imagenet_items(imagenet_root, labels_file)[1] == [0, 100, 200, 300, 400, 500]
    for item in items:  # grayscale and CMYK JPEGs load as RGB
        assert load_rgb(imagenet_root / item).mode == "RGB"


def test_eval_transform_is_deterministic_and_train_transform_is_seeded(tmp_path):
    root = make_scene_folder(tmp_path / "data", per_class=6)
    module = datamodule(root)
    test = module.datasets["test"]
    assert torch.equal(test[0][0], test[0][0])
    train = module.datasets["train"]
    assert torch.equal(train[(3, 1)][0], train[(3, 1)][0])  # same (epoch, index): same crop
    assert not torch.equal(train[(3, 1)][0], train[(4, 1)][0])


def test_demo_folder_is_written_once_in_the_scene_layout(tmp_path):
    root = materialise_demo(tmp_path / "demo")
    names, items, _ = scan_folder(root)
    assert names == [f"digit{i}" for i in range(6)] and len(items) > 1000
    stamp = (root / items[0]).stat().st_mtime_ns
    assert materialise_demo(tmp_path / "demo") == root
    assert (root / items[0]).stat().st_mtime_ns == stamp
    shutil.rmtree(root)


def test_evaluation_reads_only_the_split_it_scores(tmp_path):
    root = make_scene_folder(tmp_path / "data", per_class=8)
    trained = datamodule(root, run_dir=tmp_path / "run")
    manifest = tmp_path / "run" / "split.csv"
    # a training image breaks after training: evaluating the test split does not even read it
    (root / trained.datasets["train"].items[0]).write_bytes(b"broken later")
    test_only = ImageDataModule(
        tiny_data_cfg(root, manifest=str(manifest)), seed=7, run_dir=tmp_path / "eval", only="test"
    )
    test_only.setup()
    assert test_only.skipped == []
    assert test_only.datasets["test"].items == trained.datasets["test"].items
    assert len(test_only.datasets["train"]) == len(test_only.datasets["val"]) == 0
    assert {
        row.split(",")[2] for row in (tmp_path / "eval" / "split.csv").read_text().split()[1:]
    } == {"test"}
