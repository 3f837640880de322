"""mode=export: an ONNX or TorchScript file that, with nothing but the JSON beside it, gives the
checkpoint's scores on real images; refusals in one line; exported files recognised."""

import csv
import hashlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from finetune import exporting
from finetune.checkpoint import exported_format, exported_model_message, load_checkpoint
from finetune.data.images import load_rgb
from finetune.data.transforms import eval_transform
from finetune.errors import UserError
from finetune.exporting import check_exported

from conftest import as_user_in, compose_config

EXTRA_HINT = "pip install -e '.[export]'"


def run_task_in_process(run_dir: Path, *overrides: str) -> dict:
    """`python -m finetune OVERRIDES hydra.run.dir=RUN_DIR` in this process (no command-line
    check: a used folder reaches the task)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from finetune.tasks import run_task

    cfg = compose_config(*overrides, hydra_node=True)
    try:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return run_task(cfg)
    finally:
        HydraConfig.instance().cfg = None


def run_export(run_dir: Path, ckpt: Path, export_format: str) -> dict:
    return run_task_in_process(
        run_dir, "mode=export", f"ckpt={ckpt}", f"export.format={export_format}"
    )


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> dict[str, Path]:
    """Both formats exported once from the trained run, `ckpt=best_model.pt` typed in its
    folder: {format: run folder}."""
    folders = {}
    for export_format in ("onnx", "torchscript"):
        folder = tmp_path_factory.mktemp(f"export_{export_format}")
        with as_user_in(trained_run):  # ckpt given relative to the working folder
            run_export(folder, Path("best_model.pt"), export_format)
        folders[export_format] = folder
    return folders


@pytest.fixture(scope="module")
def test_images(trained_run, tmp_path_factory) -> list[Path]:
    """The trained run's test split, two of them cut to odd non-square shapes (so that the
    resize and the center crop really move pixels) and one half transparent."""
    with (trained_run / "split.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    root = Path(load_checkpoint(trained_run / "best_model.pt").data["root"])
    paths = [root / row["path"] for row in rows]
    folder = tmp_path_factory.mktemp("odd_shapes")
    for index, size in enumerate([(61, 40), (37, 52)]):
        Image.open(paths[index]).convert("RGB").resize(size).save(folder / f"{index}.png")
        paths.append(folder / f"{index}.png")
    see_through = Image.open(paths[2]).convert("RGBA")  # half transparent, its hidden colours kept
    see_through.putalpha(Image.linear_gradient("L").resize(see_through.size))
    see_through.save(folder / "transparent.png")
    return [*paths, folder / "transparent.png"]


def json_preprocess(path: Path, description: dict) -> np.ndarray:
    """3 x H x W float32: the preprocessing exactly as the JSON states it, in PIL and NumPy."""
    steps = {step["step"]: step for step in description["preprocessing"]}
    assert list(steps) == ["decode", "resize", "center_crop", "scale", "normalize", "layout"]
    image = ImageOps.exif_transpose(Image.open(path))
    if image.mode == "RGBA":  # transparency laid over opaque black
        black = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, image)
    image = image.convert("RGB")
    short = steps["resize"]["size"]
    width, height = image.size
    if width <= height:
        size = (short, int(short * height / width))
    else:
        size = (int(short * width / height), short)
    image = image.resize(size, Image.BILINEAR)
    crop_height, crop_width = steps["center_crop"]["size"]
    top, left = round((image.height - crop_height) / 2), round((image.width - crop_width) / 2)
    pixels = np.asarray(image)[top : top + crop_height, left : left + crop_width]
    pixels = pixels.astype(np.float32) / 255
    mean = np.array(steps["normalize"]["mean"], dtype=np.float32)
    std = np.array(steps["normalize"]["std"], dtype=np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def package_scores(ckpt: Path, paths: list[Path]) -> np.ndarray:
    """Softmax scores through the package's own loading and transform (what eval computes)."""
    loaded = load_checkpoint(ckpt)
    data = loaded.data
    transform = eval_transform(data["image_size"], data["resize_size"], data["mean"], data["std"])
    images = torch.stack([transform(load_rgb(path)) for path in paths])
    with torch.no_grad():
        return loaded.net(images).softmax(dim=1).numpy()


def scores_by_batches(run_model, paths: list[Path], description: dict) -> dict[int, np.ndarray]:
    """Scores of the exported model, image by image and all in one batch."""
    images = np.stack([json_preprocess(path, description) for path in paths])
    single = np.concatenate([run_model(images[i : i + 1]) for i in range(len(images))])
    return {1: softmax(single), len(images): softmax(run_model(images))}


def test_onnx_gives_the_checkpoint_scores_with_only_the_json(exported, trained_run, test_images):
    import onnxruntime

    folder = exported["onnx"]
    description = json.loads((folder / "model.onnx.json").read_text())
    session = onnxruntime.InferenceSession(
        str(folder / description["file"]), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in session.get_inputs()] == [description["input"]["name"]]
    assert [o.name for o in session.get_outputs()] == [description["output"]["name"]]

    def run_model(images: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"images": images})[0]

    expected = package_scores(trained_run / "best_model.pt", test_images)
    for batch_size, scores in scores_by_batches(run_model, test_images, description).items():
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-4, err_msg=f"{batch_size=}")
    assert len(test_images) > 1


def test_torchscript_gives_the_checkpoint_scores_with_only_the_json(
    exported, trained_run, test_images
):
    folder = exported["torchscript"]
    description = json.loads((folder / "model.torchscript.json").read_text())
    embedded = {"model.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        model = torch.jit.load(folder / description["file"], _extra_files=embedded).eval()
    assert json.loads(embedded["model.json"]) == {
        k: v for k, v in description.items() if k != "check"
    }

    def run_model(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(images)).numpy()

    expected = package_scores(trained_run / "best_model.pt", test_images)
    for batch_size, scores in scores_by_batches(run_model, test_images, description).items():
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5, err_msg=f"{batch_size=}")


def test_json_describes_the_checkpoint(exported, trained_run):
    import onnx

    loaded = load_checkpoint(trained_run / "best_model.pt")
    size = loaded.data["image_size"]
    for export_format, folder in exported.items():
        file_name = exporting.FILE_NAMES[export_format]
        description = json.loads((folder / f"{file_name}.json").read_text())
        assert description["format"] == export_format and description["file"] == file_name
        assert description["class_names"] == loaded.class_names
        assert description["input"]["shape"] == ["N", 3, size, size]
        assert description["output"]["shape"] == ["N", len(loaded.class_names)]
        assert description["checkpoint"]["path"] == str(trained_run.resolve() / "best_model.pt")
        assert description["checkpoint"]["metrics"] == loaded.metrics
        assert description["versions"]["torch"] == torch.__version__
        assert description["check"]["passed"] and description["check"]["batch_sizes"] == [1, 3]
    model = onnx.load(exported["onnx"] / "model.onnx")
    embedded = {prop.key: prop.value for prop in model.metadata_props}["model.json"]
    description = json.loads((exported["onnx"] / "model.onnx.json").read_text())
    assert json.loads(embedded) == {k: v for k, v in description.items() if k != "check"}


def digests(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.glob("model.*"))
    }


def test_a_second_export_into_the_same_folder_keeps_the_first(exported, trained_run):
    folder = exported["torchscript"]
    before = digests(folder)
    assert sorted(before) == ["model.torchscript", "model.torchscript.json"]
    with pytest.raises(UserError, match="model.torchscript and model.torchscript.json already"):
        run_export(folder, trained_run / "best_model.pt", "torchscript")
    assert digests(folder) == before


def test_missing_onnxruntime_names_the_extra(trained_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with pytest.raises(UserError) as error:
        run_export(tmp_path, trained_run / "best_model.pt", "onnx")
    message = str(error.value)
    assert "\n" not in message and "onnxruntime" in message and EXTRA_HINT in message
    assert not list(tmp_path.glob("model.*"))


def test_a_failed_check_writes_no_json(trained_run, tmp_path, monkeypatch):
    def failing_check(net, exported, image_size):
        return check_exported(net, lambda images: exported(images) + 1.0, image_size)

    monkeypatch.setattr(exporting, "check_exported", failing_check)
    with pytest.raises(UserError, match="logits 1 away from the network's") as error:
        run_export(tmp_path, trained_run / "best_model.pt", "torchscript")
    assert "\n" not in str(error.value)
    assert [p.name for p in tmp_path.glob("model.*")] == ["model.torchscript"]


def test_check_compares_logits(trained_run):
    net = load_checkpoint(trained_run / "best_model.pt").net
    exact = check_exported(net, net, 32)
    assert exact["passed"] and exact["max_abs_diff_logits"] == 0.0
    off = check_exported(net, lambda images: net(images) * 1.01, 32)
    assert not off["passed"] and off["max_abs_diff_logits"] == pytest.approx(
        0.01 * off["max_abs_logit"], rel=1e-3
    )
    with pytest.raises(UserError, match="shape"):
        check_exported(net, lambda images: net(images)[:, :2], 32)

    def broken(images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("Got invalid dimensions for input: images\nmore detail")

    with pytest.raises(UserError, match="fails on a batch of 1: Got invalid dimensions") as error:
        check_exported(net, broken, 32)
    assert "\n" not in str(error.value)


def test_exported_files_are_recognised(exported, trained_run, tmp_path):
    onnx_file = exported["onnx"] / "model.onnx"
    torchscript_file = exported["torchscript"] / "model.torchscript"
    renamed = tmp_path / "served.bin"  # by content, whatever the name
    shutil.copy(onnx_file, renamed)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert exported_format(onnx_file) == "onnx"
    assert exported_format(renamed) == "onnx"
    assert exported_format(torchscript_file) == "torchscript"
    assert exported_format(trained_run / "best_model.pt") is None
    assert exported_format(next((trained_run / "checkpoints").glob("*.ckpt"))) is None
    assert exported_format(text) is None
    assert exported_format(tmp_path / "absent.onnx") is None

    message = exported_model_message(onnx_file, "onnx")
    assert "\n" not in message and "best_model.pt" in message and "onnxruntime" in message
    assert str(onnx_file) + ".json" in message  # the JSON beside it is named
    message = exported_model_message(torchscript_file, "torchscript")
    assert "torch.jit.load" in message and "model.torchscript.json" in message


def test_predict_refuses_an_exported_model_in_one_line(exported, scene_root, tmp_path):
    image = next((scene_root / "forest").glob("*.jpg"))
    onnx_file = exported["onnx"] / "model.onnx"
    with pytest.raises(UserError) as error:
        run_task_in_process(tmp_path, "mode=predict", f"ckpt={onnx_file}", f"predict.input={image}")
    assert "\n" not in str(error.value) and str(onnx_file) in str(error.value)
    assert not (tmp_path / "predictions.csv").exists()
