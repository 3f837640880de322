"""The network of a checkpoint as one ONNX or TorchScript file, its description, and the check
that the written file computes what the network computes (mode=export orchestrates; what an
exported file looks like, to refuse it as a checkpoint, is finetune.checkpoint's).

- float32, eval mode; the batch dimension is dynamic, height and width are the checkpoint's
  image_size (the preprocessing crops every image to that size).
- ONNX: torch.onnx's torch.export-based exporter (it needs onnxscript; the TorchScript-based one
  is deprecated), all weights inside the one .onnx file. TorchScript: torch.jit.trace (deprecated
  by torch in favour of torch.export, but what torch.jit.load and LibTorch read).
- The description (`describe`) is also embedded in the file (ONNX metadata_props / TorchScript
  extra file, both under "model.json"), minus the check, which is made on the written file.
- The check: the written file, loaded back (onnxruntime / torch.jit.load), gives the logits of
  the PyTorch network on random batches of 1 and 3 images, or the export fails.
"""

import importlib
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from finetune.checkpoint import LoadedModel
from finetune.errors import UserError
from finetune.io import atomic_write

Runner = Callable[[torch.Tensor], torch.Tensor]  # N x 3 x H x W images to N x C logits

FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript"}
EMBEDDED_KEY = "model.json"  # the description inside the model file
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
EXTRA_HINT = "pip install -e '.[export]'"
CHECK_BATCH_SIZES = (1, 3)
CHECK_TOLERANCE = 1e-4  # relative to max(1, max |logit|)


# -- the description ---------------------------------------------------------------------------
def describe(export_format: str, file_name: str, loaded: LoadedModel) -> dict[str, Any]:
    """What a user of the exported file needs, with no other source (the JSON beside it)."""
    data = loaded.data
    size, resize = int(data["image_size"]), int(data["resize_size"])
    names = list(loaded.class_names)
    if export_format == "onnx":
        usage = (
            f"onnxruntime.InferenceSession('{file_name}').run(['{OUTPUT_NAME}'], "
            f"{{'{INPUT_NAME}': x}})[0]"
        )
    else:
        usage = f"torch.jit.load('{file_name}').eval()(x)  (under torch.no_grad())"
    return {
        "format": export_format,
        "file": file_name,
        "usage": usage,
        "class_names": names,
        "num_classes": len(names),
        "input": {
            "name": INPUT_NAME,
            "shape": ["N", 3, size, size],
            "dtype": "float32",
            "layout": "NCHW, RGB channel order",
            "dynamic": "N (any batch size); height and width are fixed",
        },
        "preprocessing": [
            {
                "step": "decode",
                "how": "8-bit RGB, turned upright by its EXIF orientation (PIL: image = "
                "ImageOps.exif_transpose(Image.open(path))); RGB, grayscale, CMYK and palette "
                "files: image.convert('RGB'); with transparency (RGBA, LA, a palette with a "
                "transparent colour), laid over opaque black: Image.alpha_composite(Image.new("
                "'RGBA', image.size, (0, 0, 0, 255)), image.convert('RGBA')).convert('RGB'); "
                "16-bit, 32-bit and float gray: float values all in [0, 1] map 0..1 to 0..255, "
                "any other image is stretched linearly from its own minimum (0) to its maximum "
                "(255), rounded, then taken as 8-bit gray",
            },
            {
                "step": "resize",
                "size": resize,
                "how": f"shorter side to {resize} px, longer side floor({resize} * longer / "
                "shorter), bilinear with antialiasing (PIL: image.resize((width, height), "
                "Image.BILINEAR))",
            },
            {
                "step": "center_crop",
                "size": [size, size],
                "how": f"keep {size} x {size} px from top = round((height - {size}) / 2), "
                f"left = round((width - {size}) / 2) (Python's round); a side shorter than "
                f"{size} is first padded with black, (missing // 2) before, the rest after",
            },
            {"step": "scale", "how": "uint8 0..255 to float32 0..1: x / 255"},
            {
                "step": "normalize",
                "mean": [float(v) for v in data["mean"]],
                "std": [float(v) for v in data["std"]],
                "how": "per RGB channel c: (x - mean[c]) / std[c]",
            },
            {"step": "layout", "how": "height x width x 3 to 3 x height x width; stack N images"},
        ],
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["N", len(names)],
            "dtype": "float32",
            "meaning": "logits: column i is class_names[i]; softmax over axis 1 gives the scores "
            "mode=eval and mode=predict report, argmax the predicted class",
        },
        "checkpoint": {
            "path": str(loaded.path.resolve()),  # the file travels: a relative path would not
            "data_kind": data.get("kind"),
            "metrics": dict(loaded.metrics),
        },
        "versions": {"torch": torch.__version__},
    }


# -- the two formats ---------------------------------------------------------------------------
def _optional(module: str, export_format: str) -> ModuleType:
    """An optional dependency, or one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"export.format={export_format} needs the {module} package, which is not "
            f"installed: {EXTRA_HINT}"
        ) from None


@contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Only warnings from these libraries while the block runs: the run's log stays readable."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _export_onnx(
    net: nn.Module, example: torch.Tensor, path: Path, description: dict[str, Any]
) -> Runner:
    """Write the ONNX file; return a callable that runs the written file like the network."""
    onnx = _optional("onnx", "onnx")
    _optional("onnxscript", "onnx")
    onnxruntime = _optional("onnxruntime", "onnx")
    with _quiet_loggers("onnxscript", "onnx_ir"):  # they log each optimisation pass at INFO
        program = torch.onnx.export(
            net,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            verbose=False,
        )
    opset = program.model.opset_imports[""]
    description["versions"] |= {
        "onnx": onnx.__version__,
        "onnx_opset": opset,
        "onnxruntime": onnxruntime.__version__,
    }
    program.model.metadata_props[EMBEDDED_KEY] = json.dumps(description)
    atomic_write(path, lambda tmp: program.save(tmp, external_data=False))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0])

    return run


def _export_torchscript(
    net: nn.Module, example: torch.Tensor, path: Path, description: dict[str, Any]
) -> Runner:
    """Write the TorchScript file; return the written file, loaded back."""
    with warnings.catch_warnings():  # torch.jit warns of its deprecation on every call
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        traced = torch.jit.trace(net, example)
        extra = {EMBEDDED_KEY: json.dumps(description)}
        atomic_write(path, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))
        return torch.jit.load(str(path), map_location="cpu").eval()


def check_exported(net: nn.Module, exported: Runner, image_size: int) -> dict[str, Any]:
    """Compare the exported file's logits with the network's on random batches."""
    generator = torch.Generator().manual_seed(0)
    worst, largest = 0.0, 0.0
    for batch_size in CHECK_BATCH_SIZES:
        images = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
        with torch.no_grad():
            expected = net(images)
            try:
                got = exported(images)
            except Exception as error:  # noqa: BLE001 - any failure of the written file
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                raise UserError(
                    f"the exported model fails on a batch of {batch_size}: {reason}"
                ) from None
        if tuple(got.shape) != tuple(expected.shape):
            raise UserError(
                f"the exported model gives shape {tuple(got.shape)} for a batch of "
                f"{batch_size}, the network {tuple(expected.shape)}: export failed"
            )
        worst = max(worst, float((got - expected).abs().max()))
        largest = max(largest, float(expected.abs().max()))
    return {
        "against": "the PyTorch network, on random N(0, 1) inputs",
        "batch_sizes": list(CHECK_BATCH_SIZES),
        "max_abs_diff_logits": worst,
        "max_abs_logit": largest,
        "rule": f"max |difference| <= {CHECK_TOLERANCE:g} * max(1, max |logit|)",
        "passed": worst <= CHECK_TOLERANCE * max(1.0, largest),
    }


def write_exported(loaded: LoadedModel, export_format: str, path: Path) -> dict[str, Any]:
    """Write the network of `loaded` to `path` in `export_format` and check the written file;
    return its description with the check (a failed check: UserError, the file kept)."""
    net = loaded.net.float().eval()
    size = int(loaded.data["image_size"])
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    description = describe(export_format, path.name, loaded)
    writer = _export_onnx if export_format == "onnx" else _export_torchscript
    check = check_exported(net, writer(net, example, path, description), size)
    if not check["passed"]:
        raise UserError(
            f"{path} gives logits {check['max_abs_diff_logits']:.3g} away from the network's "
            f"({check['rule']}): the file is kept for inspection, no {path.name}.json written"
        )
    return description | {"check": check}
