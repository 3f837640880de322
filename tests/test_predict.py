"""mode=predict on new images: sorted rows, undecodable files named in one warning, other
files ignored, and the scores the network gives when run directly."""

import csv
import shutil

import numpy as np
import pytest

from finetune.checkpoint import load_checkpoint
from finetune.data.images import find_images
from finetune.errors import UserError
from test_evaluate import direct_scores, make_soft_checkpoint

from conftest import assert_run_refuses, run_in_process, run_main


@pytest.mark.parametrize(
    "profile",
    [[], ["trainer.precision=bf16-mixed", "trainer.benchmark=true"]],
    ids=["default", "bf16-profile"],
)
def test_predict_on_a_folder(profile, trained_run, scene_root, user_folder, capsys):
    """A bf16 training profile does not leak into prediction: scores stay float32."""
    tmp_path = user_folder
    ckpt = make_soft_checkpoint(trained_run, tmp_path / "soft")
    folder = tmp_path / "new"
    (folder / "nested").mkdir(parents=True)
    (folder / ".cache").mkdir()
    sources = sorted((scene_root / "forest").glob("*.jpg"))
    good = ["nested/a.jpg", "c (1).jpg", "b.jpg", "d.jfif"]  # .jfif: a JPEG as browsers save it
    for name, source in zip(good, sources, strict=False):
        shutil.copy(source, folder / name)
    (folder / "notes.txt").write_text("not an image by its suffix: ignored, and said")
    (folder / ".hidden.jpg").write_bytes(b"hidden, ignored silently")
    shutil.copy(sources[0], folder / ".cache" / "x.jpg")  # inside a hidden folder: ignored
    (folder / "broken.jpg").write_bytes(sources[0].read_bytes()[:300])  # truncated JPEG

    run = tmp_path / "run"
    capsys.readouterr()
    run_in_process(
        "mode=predict",
        f"ckpt={ckpt}",
        f"predict.input={folder}",
        f"hydra.run.dir={run}",
        "data.loader.num_workers=0",
        "trainer.enable_progress_bar=false",
        *profile,
    )
    console = capsys.readouterr()
    output = console.out + console.err
    assert "predictions" in output  # the console was captured
    warnings = [line for line in output.splitlines() if "[WARNING]" in line]
    assert len(warnings) == 3, warnings  # the rule of every folder: its own images only
    assert "skipping 1 image(s) in sub-folders, e.g. nested/a.jpg" in warnings[0]
    assert "ignoring 1 file(s) in predict.input=" in warnings[1]
    assert "not images by their suffix, e.g. notes.txt (image suffixes: .bmp, " in warnings[1]
    assert "broken.jpg" in warnings[2]
    assert ".hidden" not in output and ".cache" not in output

    with (run / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = ["b.jpg", "c (1).jpg", "d.jfif"]  # nested/a.jpg: in a sub-folder, skipped
    assert [row["file"] for row in rows] == [str(folder / name) for name in expected]

    direct = direct_scores(ckpt, folder, expected).numpy()
    names = load_checkpoint(ckpt).class_names
    scores = np.array([[float(row[f"score_{name}"]) for name in names] for row in rows])
    np.testing.assert_allclose(scores, direct, atol=2e-6)
    assert [row["predicted"] for row in rows] == [names[i] for i in direct.argmax(axis=1)]


def test_input_must_be_an_image_or_a_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="predict.input=.*not an image file"):
        find_images(tmp_path / "notes.txt", "predict.input")
    with pytest.raises(UserError, match="predict.input=.*does not exist"):
        find_images(tmp_path / "missing", "predict.input")
    (tmp_path / ".hidden.jpg").write_bytes(b"")  # named, still refused, and said why
    with pytest.raises(UserError, match=r"\.hidden\.jpg is a hidden file .* rename it$"):
        find_images(tmp_path / ".hidden.jpg", "predict.input")
    (tmp_path / "one.png").write_bytes(b"")
    assert find_images(tmp_path / "one.png", "predict.input") == (tmp_path, ["one.png"])
    assert find_images(tmp_path, "predict.input") == (tmp_path, ["one.png"])


def test_one_linked_image_is_named_as_given(trained_run, scene_root, user_folder):
    """A link to a content-addressed blob without a suffix (git-annex, DVC, a hub cache): the
    row names the link, and the scores are those of the image it points to."""
    ckpt = make_soft_checkpoint(trained_run, user_folder / "soft")
    blob = user_folder / "blobs" / "9f86d081884c7d65"
    blob.parent.mkdir()
    shutil.copy(sorted((scene_root / "sea").glob("*.jpg"))[0], blob)
    link = user_folder / "photo.jpg"
    link.symlink_to(blob)
    run_in_process(
        "mode=predict",
        f"ckpt={ckpt}",
        f"predict.input={link}",
        f"hydra.run.dir={user_folder / 'run'}",
        "data.loader.num_workers=0",
        "trainer.enable_progress_bar=false",
    )
    with (user_folder / "run" / "predictions.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["file"] == str(link)
    names = load_checkpoint(ckpt).class_names
    direct = direct_scores(ckpt, user_folder, ["photo.jpg"]).numpy()[0]
    np.testing.assert_allclose([float(row[f"score_{n}"]) for n in names], direct, atol=2e-6)


@pytest.mark.parametrize(
    ("files", "given", "settings", "words"),
    [
        (["broken.jpg"], "new/broken.jpg", [], ["new/broken.jpg is not a readable image"]),
        (["good.jpg", "broken.jpg"], "new", ["data.bad_images=error"], ["1 file(s)", "broken.jpg"]),
    ],
)
def test_broken_inputs_are_one_line(
    files, given, settings, words, trained_run, scene_root, user_folder
):
    """One broken file given is said as such; data.bad_images=error refuses instead of skipping."""
    source = sorted((scene_root / "sea").glob("*.jpg"))[0].read_bytes()
    (user_folder / "new").mkdir()
    for name in files:
        (user_folder / "new" / name).write_bytes(source if name == "good.jpg" else source[:99])
    assert_run_refuses(
        "mode=predict",
        f"ckpt={trained_run / 'best_model.pt'}",
        f"predict.input={user_folder / given}",
        "data.loader.num_workers=0",
        *settings,
    )(*words)


def test_ctrl_c_while_scoring_exits_130_with_one_line(
    trained_run, scene_root, user_folder, capsys, monkeypatch
):
    """Lightning answers Ctrl-C in its predict loop (eval, predict and analyze all score there)
    with sys.exit(1): the command line says where it stopped and exits 130, as for training; in
    Python it is a KeyboardInterrupt, and Ctrl-C works again afterwards."""
    import signal

    import finetune.inference

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune.inference.Scorer, "predict_step", ctrl_c)
    command = [
        "mode=predict",
        f"ckpt={trained_run / 'best_model.pt'}",
        f"predict.input={scene_root / 'forest'}",
        "trainer.enable_progress_bar=false",
    ]
    handler = signal.getsignal(signal.SIGINT)
    result = run_main(*command, "hydra.run.dir=cli", cwd=user_folder, capsys=capsys)
    said = "interrupted: mode=predict stopped before it finished"
    assert result.returncode == 130, result.stderr[-2000:]
    assert said in result.stderr and "Traceback" not in result.stderr
    assert said in (user_folder / "cli" / "finetune.log").read_text()
    with pytest.raises(KeyboardInterrupt, match="mode=predict stopped before it finished"):
        run_in_process(*command, "hydra.run.dir=api")
    assert said in (user_folder / "api" / "finetune.log").read_text()
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_photo_pil_reads_but_warns_about_is_scored_without_alarm(
    trained_run, scene_root, user_folder, monkeypatch, recwarn
):
    """PIL warns about an image over MAX_IMAGE_PIXELS and refuses one over twice that: every
    run (not only the first of a process) scores the first quietly and skips the second."""
    from PIL import Image

    folder = user_folder / "photos"
    folder.mkdir()
    shutil.copy(next((scene_root / "forest").glob("*.jpg")), folder / "photo.jpg")  # 40 x 40
    Image.new("RGB", (64, 64)).save(folder / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 px: warned; 4,096 px: refused
    for number in (1, 2):
        run = user_folder / f"run{number}"
        results = run_in_process(
            "mode=predict",
            f"ckpt={trained_run / 'best_model.pt'}",
            f"predict.input={folder}",
            f"hydra.run.dir={run}",
            "trainer.enable_progress_bar=false",
        )
        assert results["n"] == 1 and results["skipped"] == ["huge.png"]
        assert (
            "huge.png (too large: more than 2,000 px, PIL's" in (run / "finetune.log").read_text()
        )
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
