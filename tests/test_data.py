"""The data layer: folder scanning and splits, manifests, odd image modes, CIFAR-10 pickles,
the ImageNet-val folder, transforms, and the demo folder."""

import collections
import os
import resource
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
from finetune.data.images import find_images, load_rgb, split_readable
from finetune.data.loaders import loader_settings
from finetune.data.splits import read_manifest, stratified_split
from finetune.data.transforms import eval_transform
from finetune.errors import UserError

from conftest import (
    SCENE_CLASSES,
    compose_config,
    make_scene_folder,
    tiny_data_cfg,
    write_cifar_batches,
)


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


def test_images_deeper_than_a_class_folder_are_skipped_with_a_count(tmp_path, caplog):
    """One rule for every folder (training, eval, predict): the images directly inside it.
    Images in sub-folders of a class, or loose in data.root, are not read, and one warning
    each says how many."""
    root = make_scene_folder(tmp_path / "data", per_class=2, classes=["glacier", "sea"])
    (root / "glacier" / "nested" / "deeper").mkdir(parents=True)
    (root / "sea" / "2019").mkdir()
    (root / "sea" / ".cache").mkdir()  # hidden: ignored, not counted
    for name in ("glacier/nested/deeper/x.jpg", "sea/2019/y.jpg", "sea/.cache/z.jpg", "loose.jpg"):
        shutil.copy(root / "sea" / "img_000.jpg", root / name)
    with caplog.at_level("WARNING"):
        names, items, labels = scan_folder(root)
    assert items == [
        "glacier/img_000.jpg",
        "glacier/img_001.jpg",
        "sea/img_000.jpg",
        "sea/img_001.jpg",
    ]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2, warnings
    assert "skipping 2 image(s) in sub-folders, e.g. glacier/nested/deeper/x.jpg" in warnings[0]
    assert "skipping 1 image(s) directly in" in warnings[1] and "loose.jpg" in warnings[1]
    caplog.clear()
    with caplog.at_level("WARNING"):  # predict.input: the same rule
        assert find_images(root / "sea", "predict.input") == (
            root / "sea",
            ["img_000.jpg", "img_001.jpg"],
        )
    assert "skipping 1 image(s) in sub-folders, e.g. 2019/y.jpg" in caplog.text
    with pytest.raises(UserError, match=r"holds no image files directly inside it \(its 1 image"):
        find_images(root / "glacier" / "nested", "predict.input")


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


@pytest.mark.parametrize(
    ("sizes", "test", "val", "words"),
    [
        ([10] * 6, 12, 3, "data.split.val=3 images cannot hold one of each of the 6 classes"),
        ([10] * 6, 0.05, 12, "data.split.test=3 images cannot hold one of each of the 6 classes"),
        ([10] * 5 + [2], 6, 6, "too few images to split by class: street (2) cannot be in all 3"),
        ([10] * 6, 28, 28, "leaves 4 images for training, fewer than the 6 classes"),
    ],
)
def test_a_split_that_cannot_keep_every_class_names_why(sizes, test, val, words):
    """What scikit-learn would refuse in its own words (class indices, `test_size`) is said
    first, by the split's keys and the classes' names."""
    labels = [label for label, size in enumerate(sizes) for _ in range(size)]
    with pytest.raises(UserError) as error:
        stratified_split(labels, test=test, val=val, seed=0, class_names=SCENE_CLASSES)
    assert words in str(error.value) and "test_size" not in str(error.value)
    sizes_ok = [10] * 6
    labels_ok = [label for label, size in enumerate(sizes_ok) for _ in range(size)]
    assert len(stratified_split(labels_ok, test=6, val=6, seed=0)) == 60  # the limits pass


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


def test_a_photo_is_read_upright_by_its_exif_orientation(tmp_path):
    """Stored 30 wide x 20 high with EXIF orientation 6 (turn 90 degrees clockwise to view):
    read as the viewer shows it, 20 wide x 30 high, its top-left pixel the stored bottom-left."""
    stored = np.zeros((20, 30, 3), dtype=np.uint8)
    stored[-1, 0] = [255, 0, 0]  # stored bottom-left: red
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    rgb = load_rgb(tmp_path / "phone.png")
    assert rgb.size == (20, 30)
    assert tuple(np.asarray(rgb)[0, 0]) == (255, 0, 0)


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
    # test_batch is the test split: a test size of the config's would be ignored, so it is refused
    with pytest.raises(UserError, match=r"data.split.test=100: CIFAR-10's test split is its own"):
        datamodule(cifar_root, kind="cifar10", split=split | {"test": 100})


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
    imagenet_root = shutil.copytree(imagenet_root, tmp_path / "imagenet")  # the shared one stays
    (imagenet_root / ".hidden.JPEG").write_bytes(b"x")
    (imagenet_root / "readme.txt").write_text("x")
    items, labels = imagenet_items(imagenet_root)
    assert items == sorted(items) and len(items) == 6
    assert items[0] == "ILSVRC2012_val_00000001.JPEG" and labels == [-1] * 6
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


# -- broken data is skipped; an I/O error is not "a broken image" ---------------------------------
def test_broken_data_of_every_kind_counts_as_not_an_image(tmp_path, monkeypatch):
    good = tmp_path / "good.png"
    noise = np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8)
    Image.fromarray(noise).save(good)
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:200])  # OSError, errno None
    big = tmp_path / "bomb.png"  # over twice Image.MAX_IMAGE_PIXELS: a decompression bomb
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    keep, bad = split_readable(tmp_path, ["good.png", "truncated.png", "bomb.png"])
    assert keep == [0]
    assert set(bad) == {"truncated.png", "bomb.png"}
    assert "too large: more than 8,000 px, PIL's decompression-bomb limit" in bad["bomb.png"]


def test_a_strip_longer_than_fifty_widths_is_skipped_before_its_resize_takes_gigabytes(tmp_path):
    """A 1 x 20000 px PNG is 143 bytes; resized to 256 px on its short side it would be 5 GB."""
    sizes = {"strip.png": (20000, 1), "tall.png": (2, 101), "limit.png": (100, 2)}
    for name, size in sizes.items():
        Image.new("RGB", size).save(tmp_path / name)
    keep, bad = split_readable(tmp_path, list(sizes))
    assert keep == [2]  # 50 times as long as wide is still used
    assert bad == {
        "strip.png": "20000 x 1 px: its longer side is more than 50 times its shorter side",
        "tall.png": "2 x 101 px: its longer side is more than 50 times its shorter side",
    }


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path: path.mkdir(), "Is a directory"),
        (lambda path: None, "No such file"),  # gone between listing and checking
    ],
)
def test_io_error_during_the_check_stops_naming_file_and_reason(tmp_path, make, reason):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    make(tmp_path / "x.jpg")
    with pytest.raises(UserError, match=reason) as raised:
        split_readable(tmp_path, ["ok.png", "x.jpg"])
    message = str(raised.value)
    assert str(tmp_path / "x.jpg") in message and "\n" not in message


def test_too_many_open_files_stops_instead_of_dropping_images(tmp_path):
    for i in range(3):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / f"{i}.png")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # the next open(): EMFILE
    try:
        with pytest.raises(UserError, match="Too many open files"):
            split_readable(tmp_path, ["0.png", "1.png", "2.png"], threads=1)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_unreadable_permissions_stop_the_datamodule(tmp_path):
    root = make_scene_folder(tmp_path / "data", per_class=4)
    locked = root / "sea" / "img_001.jpg"
    locked.chmod(0)
    try:
        try:
            locked.open("rb").close()
            pytest.skip("this user reads files whatever their permissions (root)")
        except PermissionError:
            pass
        with pytest.raises(UserError, match="Permission denied") as raised:
            datamodule(root, split={"test": 6, "val": 6, "seed": 1})
        assert "img_001.jpg" in str(raised.value)
    finally:
        locked.chmod(0o644)


# -- every class in every split -----------------------------------------------------------------
def test_class_left_without_readable_images_is_refused(tmp_path):
    root = make_scene_folder(tmp_path / "data", per_class=6)
    for path in (root / "glacier").iterdir():
        path.write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="glacier") as raised:
        datamodule(root)
    assert "no readable images" in str(raised.value)


def test_split_lacking_a_class_is_refused_naming_class_and_split(tmp_path):
    root = make_scene_folder(tmp_path / "data", per_class=20, classes=["forest", "sea"])
    make_scene_folder(root, per_class=2, classes=["glacier"])  # too few to reach every split
    with pytest.raises(UserError, match=r"glacier \(2\) cannot be in all 3 parts"):
        datamodule(root, split={"test": 4, "val": 4, "seed": 0})


def test_manifest_split_lacking_a_class_is_refused_also_for_one_split(tmp_path):
    root = make_scene_folder(tmp_path / "data", per_class=8)
    datamodule(root, run_dir=tmp_path / "run")
    rows = (tmp_path / "run" / "split.csv").read_text().splitlines()
    # every test image of "sea" moves to train: the test split lacks "sea"
    edited = [rows[0]] + [
        row.replace(",test", ",train") if row.startswith("sea/") else row for row in rows[1:]
    ]
    manifest = tmp_path / "edited.csv"
    manifest.write_text("\n".join(edited) + "\n")
    with pytest.raises(UserError, match=r"test split has no image of class 'sea'"):
        datamodule(root, manifest=str(manifest))
    test_only = ImageDataModule(tiny_data_cfg(root, manifest=str(manifest)), seed=7, only="test")
    with pytest.raises(UserError, match=r"test split has no image of class 'sea'"):
        test_only.setup()
    val_only = ImageDataModule(tiny_data_cfg(root, manifest=str(manifest)), seed=7, only="val")
    val_only.setup()  # the split evaluated holds every class: fine
    assert len(val_only.datasets["val"]) == 6


def test_train_eval_subset_is_stratified_and_holds_every_class(tmp_path):
    root = tmp_path / "data"
    for name, count in (("a", 40), ("b", 12), ("c", 5)):
        make_scene_folder(root, per_class=count, classes=[name])
    cfg = tiny_data_cfg(root, split={"test": 6, "val": 6, "seed": 0})
    module = ImageDataModule(cfg, seed=3, train_eval_images=3)
    module.setup()
    train, subset = module.datasets["train"], module.datasets["train_eval"]
    assert sorted(subset.labels) == [0, 1, 2]
    assert set(subset.items) <= set(train.items)
    assert subset.items == [item for item in train.items if item in set(subset.items)]
    module = ImageDataModule(cfg, seed=3, train_eval_images=20)
    module.setup()
    train, subset = module.datasets["train"], module.datasets["train_eval"]
    counts = collections.Counter(subset.labels)
    shares = collections.Counter(train.labels)
    assert sum(counts.values()) == 20 and set(counts) == {0, 1, 2}
    for label, count in counts.items():  # proportional, one per class first
        assert abs(count - 20 * shares[label] / len(train)) <= 1.5, (label, count)
    again = ImageDataModule(cfg, seed=3, train_eval_images=20)
    again.setup()
    assert again.datasets["train_eval"].items == subset.items  # seeded
    with pytest.raises(UserError, match="train_eval_images=2 .* 3 classes"):
        ImageDataModule(cfg, seed=3, train_eval_images=2).setup()


# -- deep and float gray ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "pixels"),
    [
        ("float.tif", np.linspace(0.0, 1.0, 600, dtype=np.float32)),  # mode F, 0..1
        ("float_wide.tif", np.linspace(-3.0, 500.0, 600, dtype=np.float32)),  # mode F
        ("int32.tif", np.linspace(0, 4095, 600).astype(np.int32)),  # mode I, 12-bit values
        ("twelve_bit.png", np.linspace(0, 4095, 600).astype(np.uint16)),  # mode I;16
    ],
)
def test_deep_and_float_gray_keeps_its_range_and_order(tmp_path, name, pixels):
    path = tmp_path / name
    Image.fromarray(pixels.reshape(20, 30)).save(path)
    rgb = np.asarray(load_rgb(path)).astype(int)
    gray = rgb[..., 0].reshape(-1)
    assert (rgb == rgb[..., :1]).all()
    assert gray.min() == 0 and gray.max() == 255  # the gradient spans black to white
    assert (np.diff(gray) >= 0).all()  # brighter values stay brighter


# -- loader workers -----------------------------------------------------------------------------
def test_auto_workers_use_the_cpus_this_process_may_run_on(monkeypatch):
    loader = tiny_data_cfg(Path("x"))["loader"] | {"num_workers": "auto"}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert loader_settings(loader)["num_workers"] == 15  # no cap at 8; one core for the main
    assert loader_settings(loader, processes=4)["num_workers"] == 3  # 4 DDP ranks share 16 CPUs
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert loader_settings(loader)["num_workers"] == 1
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    assert loader_settings(loader)["num_workers"] == 63
    assert loader_settings(loader | {"num_workers": 3})["num_workers"] == 3


# -- the data-kind registry ---------------------------------------------------------------------
def test_unknown_data_kind_is_one_line_naming_the_registry(tmp_path):
    """The DataModule and config validation read the one registry: an unknown kind (no silent
    fallback to a folder) is refused in one line that lists every kind."""
    from finetune.data.kinds import DATA_KINDS
    from finetune.validate import validate_config

    root = make_scene_folder(tmp_path / "data", per_class=2)
    expected = r"data\.kind='folders' is unknown: use one of folder, demo, cifar10$"
    assert list(DATA_KINDS) == ["folder", "demo", "cifar10"]
    with pytest.raises(UserError, match=expected):
        ImageDataModule(tiny_data_cfg(root, kind="folders"), seed=0)
    cfg = compose_config(f"data.root={root}", "data.kind=folders")
    with pytest.raises(UserError, match=expected):
        validate_config(cfg)
    for kind in DATA_KINDS:  # every registered kind passes
        cfg.data.kind = kind
        validate_config(cfg)


def test_the_folder_above_cifar_batches_names_the_folder_below(cifar_root, tmp_path):
    """data.root=<where the archive was unpacked>: the missing batch names cifar-10-batches-py."""
    shutil.copytree(cifar_root, tmp_path / "cifar-10-batches-py")
    with pytest.raises(UserError, match=f"did you mean {tmp_path / 'cifar-10-batches-py'}"):
        read_batches(tmp_path, ["test_batch"])
