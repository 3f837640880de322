"""mode=export: the network of `ckpt` as one ONNX or TorchScript file, to serve without this
package, and beside it `<file>.json`: everything needed to use it (class names in output order,
the input, the preprocessing step by step, the output), the checkpoint it came from and a check.

- float32, eval mode; the batch dimension is dynamic, height and width are the checkpoint's
  image_size (the preprocessing crops every image to that size).
- ONNX: torch.onnx's torch.export-based exporter (it needs onnxscript; the TorchScript-based one
  is deprecated), all weights inside the one .onnx file. TorchScript: torch.jit.trace (deprecated
  by torch in favour of torch.export, but what torch.jit.load and LibTorch read).
- The description is also embedded in the file (ONNX metadata_props / TorchScript extra file,
  both under "model.json"), minus the check, which is made on the written file.
- The check: the written file, loaded back (onnxruntime / torch.jit.load), gives the logits of
  the PyTorch network on random batches of 1 and 3 images, or the export fails.

This module imports nothing of the package at the top but errors and io, so that
finetune.checkpoint can use `exported_format` to refuse exported files in one line.
"""

import importlib
import json
import logging
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch import nn

from finetune.errors import UserError
from finetune.io import atomic_write, write_json

log = logging.getLogger(__name__)

Runner = Callable[[torch.Tensor], torch.Tensor]  # N x 3 x H x W images to N x C logits

FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript"}
LABELS = {"onnx": "ONNX", "torchscript": "TorchScript"}
RUNNERS = {"onnx": "onnxruntime", "torchscript": "torch.jit.load"}
EMBEDDED_KEY = "model.json"  # the description inside the model file
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
EXTRA_HINT = "pip install -e '.[export]'"
CHECK_BATCH_SIZES = (1, 3)
CHECK_TOLERANCE = 1e-4  # relative to max(1, max |logit|)
# The first byte of every ModelProto written by onnx (field 1, ir_version) and the tags the next
# field can have: producer_name, producer_version, domain, model_version, doc_string, graph,
# opset_import, metadata_props. A torch.save file starts with a zip (PK) or pickle (0x80) header.
_ONNX_FIRST_TAG = 0x08
_ONNX_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}


# -- recognising an exported file ----------------------------------------------------------------
def _is_torchscript_zip(path: Path) -> bool:
    """A TorchScript archive holds <archive>/constants.pkl and <archive>/code/; a torch.save
    checkpoint (also a zip) holds neither."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(
        name.endswith("/constants.pkl") or name.split("/")[1:2] == ["code"] for name in names
    )


def exported_format(path: Path | str) -> str | None:
    """'onnx' or 'torchscript' when `path` is a file like those mode=export writes, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        head = handle.read(4)
    onnx_head = (
        len(head) >= 3
        and head[0] == _ONNX_FIRST_TAG
        and 0 < head[1] < 0x80
        and head[2] in _ONNX_NEXT_TAGS
    )
    if path.suffix.lower() == ".onnx" or onnx_head:
        return "onnx"
    if head == b"PK\x03\x04" and _is_torchscript_zip(path):
        return "torchscript"
    return None


def exported_model_message(path: Path | str, export_format: str) -> str:
    """The one line that says an exported file is not a checkpoint, and what to do instead."""
    path = Path(path)
    description = path.with_name(path.name + ".json")
    guide = description if description.is_file() else "the JSON file written beside it"
    return (
        f"ckpt={path} is a model exported to {LABELS[export_format]} (mode=export), not a "
        "checkpoint: mode=eval, predict and analyze take the best_model.pt (or a .ckpt) of a "
        f"training run; run {path.name} itself with {RUNNERS[export_format]} as {guide} describes"
    )


# -- the description ---------------------------------------------------------------------------
def describe(export_format: str, file_name: str, loaded: Any) -> dict[str, Any]:
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
                "how": "8-bit RGB, transparent pixels over black (PIL: "
                "Image.open(path).convert('RGB') for RGB, grayscale and CMYK files)",
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
            "path": str(loaded.path),
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


def export(cfg: DictConfig) -> dict[str, Any]:
    from finetune.inference import load_model  # it imports finetune.checkpoint

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    export_format = str(cfg.export.format)
    path = run_dir / FILE_NAMES[export_format]
    json_path = path.with_name(path.name + ".json")
    taken = [p.name for p in (path, json_path) if p.exists()]
    if taken:
        raise UserError(
            f"{' and '.join(taken)} already in {run_dir}: kept; export into a new run folder"
        )
    loaded = load_model(cfg)
    net = loaded.net.float().eval()
    size = int(loaded.data["image_size"])
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    description = describe(export_format, path.name, loaded)
    writer = _export_onnx if export_format == "onnx" else _export_torchscript
    exported = writer(net, example, path, description)
    check = check_exported(net, exported, size)
    if not check["passed"]:
        raise UserError(
            f"{path} gives logits {check['max_abs_diff_logits']:.3g} away from the network's "
            f"({check['rule']}): the file is kept for inspection, no {json_path.name} written"
        )
    description["check"] = check
    write_json(json_path, description)
    log.info(
        "exported %s to %s (%.1f MB, %s logits within %.2g of PyTorch); described in %s",
        loaded.path,
        path,
        path.stat().st_size / 1e6,
        LABELS[export_format],
        check["max_abs_diff_logits"],
        json_path,
    )
    return {
        "format": export_format,
        "model": str(path),
        "description": str(json_path),
        "class_names": description["class_names"],
        "check": check,
    }
