"""The bad-input catalogue, run as a user runs the package (`finetune.run`, the command line
in-process; `python -m finetune` in a subprocess where the exit code is the point, outputs in a
tmp folder): odd images work, broken ones are skipped and named, every mistake is one line."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from finetune.errors import UserError

from conftest import (
    REPO,
    TINY,
    assert_one_line_error,
    assert_run_refuses,
    class_colour_image,
    make_scene_folder,
    run_cli,
    run_in_process,
)

QUICK = ["model.weights=none", "trainer.max_epochs=1", "train_eval_images=0", *TINY]


def messy_folder(root):
    """Six classes of 8 good images, plus every odd and broken file a real folder may hold: odd
    modes and names (one not UTF-8, as unzip makes from some archives), a link to an image
    elsewhere, broken files, a text file, macOS's .DS_Store and __MACOSX folder."""
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
        os.fsdecode(b"mountain/caf\xe9.jpg"): class_colour_image(3, rng),
    }
    for name, image in odd.items():
        image.save(root / name)
    class_colour_image(4, rng).save(root.parent / "elsewhere.jpg")
    (root / "sea" / "link.jpg").symlink_to(root.parent / "elsewhere.jpg")
    odd["sea/link.jpg"] = None
    (root / "__MACOSX" / "sea").mkdir(parents=True)
    (root / "__MACOSX" / "sea" / "._img_000.jpg").write_bytes(b"\x00\x05\x16\x07")
    good = (root / "forest" / "img_000.jpg").read_bytes()
    broken = {
        "forest/truncated.jpg": good[: len(good) // 2],
        "glacier/empty.jpg": b"",
        "street/random_bytes.jpg": np.random.default_rng(2).bytes(2048),
        os.fsdecode(b"street/bro\xe9ken.jpg"): b"not a jpeg",
    }
    for name, content in broken.items():
        (root / name).write_bytes(content)
    (root / "sea" / "notes.txt").write_text("not an image")
    (root / "sea" / ".DS_Store").write_bytes(b"\x00\x01")
    return odd, broken


def test_messy_folder_trains_and_names_every_skipped_file(tmp_path):
    odd, broken = messy_folder(tmp_path / "data")
    run_dir = tmp_path / "run"
    run_in_process(
        "mode=train",
        f"data.root={tmp_path / 'data'}",
        "data.split.test=6",
        "data.split.val=12",
        f"hydra.run.dir={run_dir}",
        *QUICK,
    )
    log = (run_dir / "finetune.log").read_text(encoding="utf-8")  # what the console showed
    warnings = [line for line in log.splitlines() if "skipping 4 file(s) under" in line]
    assert len(warnings) == 1
    for name in broken:  # the name that is not UTF-8 is logged escaped
        assert name.split("/")[1].encode("utf-8", "backslashreplace").decode() in warnings[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["skipped_images"] == 4
    manifest = (run_dir / "split.csv").read_text(encoding="utf-8", errors="surrogateescape")
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
        (
            "root/train/<class>",
            [
                "class folder ROOT/test holds no images directly inside it",
                "data.root should be the folder whose sub-folders are the classes",
                "did you mean data.root=ROOT/train?",
            ],
        ),
        ("root/only/<class>", ["1 class folder", "did you mean data.root=ROOT/only?"]),
        (  # the layout of the Intel scene archive: its unlabelled seg_pred is no answer
            "root/seg_train/seg_train/<class>",
            ["class folder ROOT/seg_pred", "did you mean data.root=ROOT/seg_train/seg_train?"],
        ),
        ("dangling link", ["ROOT/street/gone.jpg is a link to", "which does not exist"]),
        (
            "class/2019/<images>",
            ["class folder ROOT/street holds no images directly inside it", "move them up"],
        ),
        ("a file", ["data.root=ROOT is a file, not a folder of class folders"]),
        ("one class's images", ["0 class folder(s)", "its 4 images lie in it directly"]),
        ("cifar batches", ["0 class folder(s)", "CIFAR-10's batches folder: add data=cifar10"]),
    ],
)
def test_broken_data_folders(user_folder, layout, words):
    tmp_path = user_folder
    root = tmp_path / "data"
    if layout == "empty_class":
        make_scene_folder(root, per_class=4)
        shutil.rmtree(root / "street")
        (root / "street").mkdir()
    elif layout == "one_class":
        make_scene_folder(root, per_class=4, classes=["sea"])
    elif layout == "root/train/<class>":  # data.root one level too high
        make_scene_folder(root / "train", per_class=4)
        make_scene_folder(root / "test", per_class=5)  # more images, yet train is the answer
    elif layout == "root/only/<class>":
        make_scene_folder(root / "only", per_class=2)
    elif layout == "root/seg_train/seg_train/<class>":
        make_scene_folder(root / "seg_train" / "seg_train", per_class=4)
        make_scene_folder(root / "seg_test" / "seg_test", per_class=2)
        make_scene_folder(root / "seg_pred", per_class=5, classes=["seg_pred"])
    elif layout == "dangling link":  # e.g. git-annex data not fetched: never dropped silently
        make_scene_folder(root, per_class=4)
        (root / "street" / "gone.jpg").symlink_to(tmp_path / "not-fetched.jpg")
    elif layout == "class/2019/<images>":
        make_scene_folder(root, per_class=4)
        shutil.move(root / "street", tmp_path / "2019")
        (root / "street").mkdir()
        shutil.move(tmp_path / "2019", root / "street" / "2019")
    elif layout == "a file":
        root.write_text("not a folder")
    elif layout == "one class's images":  # data.root=scenes/sea
        make_scene_folder(tmp_path / "scenes", per_class=4)
        shutil.move(tmp_path / "scenes" / "sea", root)
    elif layout == "cifar batches":  # without data=cifar10
        root.mkdir()
        (root / "data_batch_1").write_bytes(b"")
    refused = assert_run_refuses("mode=train", f"data.root={root}", *QUICK)
    refused(*(word.replace("ROOT", str(root)) for word in words))


def test_refuse_instead_of_skip_when_asked(user_folder):
    messy_folder(user_folder / "data")
    assert_run_refuses(
        "mode=train", f"data.root={user_folder / 'data'}", "data.bad_images=error", *QUICK
    )("4 file(s)", "not readable images", "truncated.jpg", "empty.jpg")


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_rerun_into_the_same_folder_keeps_the_earlier_results(trained_run, tmp_path, scene_root):
    """Refused before Hydra writes anything: .hydra/*.yaml, the log and the results unchanged."""
    before = files_under(trained_run)
    assert {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"} <= set(before)
    result = run_cli(
        "mode=train",
        f"data.root={scene_root}",
        "data.split.test=12",
        "data.split.val=12",
        f"hydra.run.dir={trained_run}",
        *QUICK,
        cwd=tmp_path,
    )
    assert_one_line_error(result, str(trained_run), "already exists and is kept")
    assert result.returncode == 2
    assert files_under(trained_run) == before


def test_an_empty_folder_made_by_the_user_is_a_fine_run_folder(user_folder):
    run_dir = user_folder / "run"
    run_dir.mkdir()
    # the run started in it: its task refused a file that is no checkpoint
    (user_folder / "notes.pt").write_text("not a checkpoint")
    ckpt = f"ckpt={user_folder / 'notes.pt'}"
    assert_run_refuses("mode=eval", ckpt, f"hydra.run.dir={run_dir}")("is not a checkpoint file")
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_sweep_into_a_used_sweep_folder_is_refused(tmp_path):
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "0").mkdir(parents=True)
    (sweep_dir / "0" / "metrics.json").write_text("{}")
    before = files_under(sweep_dir)
    result = run_cli(
        "-m",
        "experiment=demo",
        "optimizer.lr=0.1,0.01",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    assert_one_line_error(result, str(sweep_dir), "already exists and is kept", "hydra.sweep.dir")
    assert result.returncode == 2
    assert files_under(sweep_dir) == before


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "NODE_RANK", "RANK"])
def test_a_distributed_child_joins_the_run_folder_of_its_rank_0(tmp_path, monkeypatch, variable):
    """Lightning's DDP launcher re-runs the command with hydra.run.dir=<rank 0's folder>."""
    from finetune.choices import check_command_line

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "finetune.log").write_text("rank 0 started\n")
    argv = [f"hydra.run.dir={run_dir}"]
    for name in ("LOCAL_RANK", "NODE_RANK", "RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "0")
    with pytest.raises(UserError, match="already exists and is kept"):
        check_command_line(argv, REPO / "conf")
    monkeypatch.setenv(variable, "1")
    check_command_line(argv, REPO / "conf")


@pytest.mark.parametrize(
    ("ckpt", "words"),
    [
        (None, ["ckpt is not set"]),
        ("nowhere/best_model.pt", ["does not exist"]),
        ("folder", ["is a folder without best_model.pt"]),
        ("notes.txt", ["notes.txt is not a checkpoint file"]),
    ],
)
def test_bad_checkpoint_arguments(user_folder, ckpt, words):
    (user_folder / "folder").mkdir()
    (user_folder / "notes.txt").write_text("this is not a checkpoint\n")
    overrides = ["mode=eval"] + ([f"ckpt={user_folder / ckpt}"] if ckpt else [])
    assert_run_refuses(*overrides)(*words)


def test_reference_of_the_wrong_shape(trained_run, user_folder):
    import torch

    tmp_path = user_folder
    reference = tmp_path / "saved_softmax_scores.pt"
    torch.save(torch.full((5, 6), 1 / 6), reference)
    assert_run_refuses(
        "mode=eval",
        f"ckpt={trained_run / 'best_model.pt'}",
        f"eval.reference={reference}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )("5 rows", "12 images")
    assert (tmp_path / "eval" / "softmax_scores.pt").is_file()  # the evaluation itself is kept
