"""The bad-input catalogue, run as a user runs the package (`python -m finetune` in a
subprocess, outputs in a tmp folder): odd images work, broken ones are skipped and named,
every mistake is one line with a non-zero exit and no traceback."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import TINY, assert_one_line_error, class_colour_image, make_scene_folder, run_cli

QUICK = ["model.weights=none", "trainer.max_epochs=1", "train_eval_images=0", *TINY]


def messy_folder(root):
    """Six classes of 8 good images, plus every odd and broken file a real folder may hold."""
    make_scene_folder(root, per_class=8)
    rng = np.random.default_rng(1)
    odd = {
        "buildings/gray.jpg": class_colour_image(0, rng).convert("L"),
        "forest/cmyk.jpg": class_colour_image(1, rng).convert("CMYK"),
        "glacier/rgba.png": class_colour_image(2, rng).convert("RGBA"),
        "mountain/palette.png": class_colour_image(3, rng).convert("P"),
        "sea/deep.png": Image.fromarray(rng.integers(0, 65535, (40, 40)).astype(np.uint16)),
        "street/huge.jpg": class_colour_image(5, rng, side=1).resize((3000, 2000)),
        "sea/fjord_æøå_海.jpg": class_colour_image(4, rng),
    }
    for name, image in odd.items():
        image.save(root / name)
    good = (root / "forest" / "img_000.jpg").read_bytes()
    broken = {
        "forest/truncated.jpg": good[: len(good) // 2],
        "glacier/empty.jpg": b"",
        "street/random_bytes.jpg": np.random.default_rng(2).bytes(2048),
    }
    for name, content in broken.items():
        (root / name).write_bytes(content)
    (root / "sea" / "notes.txt").write_text("not an image")
    (root / "sea" / ".DS_Store").write_bytes(b"\x00\x01")
    return odd, broken


def test_messy_folder_trains_and_names_every_skipped_file(tmp_path):
    odd, broken = messy_folder(tmp_path / "data")
    run_dir = tmp_path / "run"
    result = run_cli(
        "mode=train",
        f"data.root={tmp_path / 'data'}",
        "data.split.test=6",
        "data.split.val=12",
        f"hydra.run.dir={run_dir}",
        *QUICK,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stdout.splitlines() if "skipping 3 unreadable" in line]
    assert len(warnings) == 1
    for name in broken:
        assert name.split("/")[1] in warnings[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["skipped_images"] == 3
    manifest = (run_dir / "split.csv").read_text(encoding="utf-8")
    for name in odd:  # every odd-but-valid image is in the split
        assert name in manifest
    for name in (*broken, "sea/notes.txt", "sea/.DS_Store"):
        assert name not in manifest


@pytest.mark.parametrize(
    ("layout", "words"),
    [
        ("missing", ["does not exist", "data.root"]),
        ("empty_class", ["street", "holds no images"]),
        ("one_class", ["1 class folder", "at least 2"]),
    ],
)
def test_broken_data_folders(tmp_path, layout, words):
    root = tmp_path / "data"
    if layout == "empty_class":
        make_scene_folder(root, per_class=4)
        shutil.rmtree(root / "street")
        (root / "street").mkdir()
    elif layout == "one_class":
        make_scene_folder(root, per_class=4, classes=["sea"])
    result = run_cli("mode=train", f"data.root={root}", *QUICK, cwd=tmp_path)
    assert_one_line_error(result, *words)


def test_refuse_instead_of_skip_when_asked(tmp_path):
    messy_folder(tmp_path / "data")
    result = run_cli(
        "mode=train",
        f"data.root={tmp_path / 'data'}",
        "data.bad_images=error",
        *QUICK,
        cwd=tmp_path,
    )
    assert_one_line_error(result, "3 file(s)", "not readable images", "truncated.jpg", "empty.jpg")


def test_rerun_into_the_same_folder_keeps_the_earlier_results(trained_run, tmp_path, scene_root):
    before = {p.name: p.read_bytes() for p in trained_run.glob("*") if p.is_file()}
    result = run_cli(
        "mode=train",
        f"data.root={scene_root}",
        "data.split.test=12",
        "data.split.val=12",
        f"hydra.run.dir={trained_run}",
        *QUICK,
        cwd=tmp_path,
    )
    assert_one_line_error(result, "already exists and is kept")
    for name in ("best_model.pt", "split.csv", "metrics.json"):
        assert (trained_run / name).read_bytes() == before[name]


@pytest.mark.parametrize(
    ("ckpt", "words"),
    [
        (None, ["ckpt is not set"]),
        ("nowhere/best_model.pt", ["does not exist"]),
        ("folder", ["is a folder without best_model.pt"]),
        ("notes.txt", ["refusing", "not a weights-only checkpoint"]),
    ],
)
def test_bad_checkpoint_arguments(tmp_path, ckpt, words):
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("this is not a checkpoint\n")
    overrides = ["mode=eval"] + ([f"ckpt={tmp_path / ckpt}"] if ckpt else [])
    assert_one_line_error(run_cli(*overrides, cwd=tmp_path), *words)


def test_reference_of_the_wrong_shape(trained_run, tmp_path):
    import torch

    reference = tmp_path / "saved_softmax_scores.pt"
    torch.save(torch.full((5, 6), 1 / 6), reference)
    result = run_cli(
        "mode=eval",
        f"ckpt={trained_run / 'best_model.pt'}",
        f"reference={reference}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert_one_line_error(result, "5 rows", "12 images")
    assert (tmp_path / "eval" / "softmax_scores.pt").is_file()  # the evaluation itself is kept
