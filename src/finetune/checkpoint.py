"""best_model.pt: a plain dict (weights + what is needed to rebuild and evaluate the model),
written atomically and read back with weights_only=True. Lightning .ckpt files load too; a file
written by mode=export (ONNX, TorchScript) is recognised and refused in one line.

The one place that reads the LightningModule's state dict (`network_state`: the `net.` prefix).
"""

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from finetune.errors import UserError
from finetune.io import save_torch
from finetune.network import DEFAULT_ARCH, build_network
from finetune.safe_load import weights_only_load
from finetune.validate import no_ckpt_there

FORMAT = "finetune.best_model/1"
DATA_KEYS = ("kind", "root", "image_size", "resize_size", "mean", "std")
# What mode=export writes, by export.format: its name for people, and what runs it.
EXPORTED = {"onnx": ("ONNX", "onnxruntime"), "torchscript": ("TorchScript", "torch.jit.load")}
# The first byte of every ModelProto written by onnx (field 1, ir_version) and the tags the next
# field can have: producer_name, producer_version, domain, model_version, doc_string, graph,
# opset_import, metadata_props. A torch.save file starts with a zip (PK) or pickle (0x80) header.
_ONNX_FIRST_TAG = 0x08
_ONNX_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}


@dataclass
class LoadedModel:
    """A network ready for evaluation and the metadata it was trained with."""

    net: nn.Module
    class_names: list[str]
    data: dict[str, Any]  # kind, root, image_size, resize_size, mean, std
    manifest: Path | None  # the split it was trained on, if found
    path: Path
    metrics: dict[str, float] = field(default_factory=dict)
    arch: str = DEFAULT_ARCH  # the torchvision architecture, rebuilt from the checkpoint
    # the data.split (test, val, seed) it was trained with: redoes its split without the manifest
    split: dict[str, Any] | None = None


def _torch_load(path: Path) -> Any:
    return weights_only_load(
        path, f"{path} is not a weights-only checkpoint", f"{path} is not a checkpoint file"
    )


def network_state(lightning_state: dict[str, Any]) -> dict[str, Any]:
    """The network's weights in a LightningModule state dict (its `net.` keys, unprefixed)."""
    return {
        key.removeprefix("net."): value
        for key, value in lightning_state.items()
        if key.startswith("net.")
    }


def export_best_model(
    lightning_ckpt: Path, out_path: Path, metrics: dict[str, float], manifest: Path | None
) -> Path:
    """Turn the best Lightning checkpoint into best_model.pt (never overwrites)."""
    ckpt = _torch_load(Path(lightning_ckpt))
    hparams = ckpt["hyper_parameters"]
    payload = {
        "format": FORMAT,
        "arch": hparams["model"].get("arch", DEFAULT_ARCH),
        "class_names": list(hparams["class_names"]),
        "state_dict": network_state(ckpt["state_dict"]),
        "data": {key: hparams["data"][key] for key in DATA_KEYS},
        "manifest": None if manifest is None else str(Path(manifest).resolve()),
        "metrics": metrics,
        "epoch": int(ckpt.get("epoch", -1)),
        "global_step": int(ckpt.get("global_step", -1)),
        "hyper_parameters": hparams,
    }
    return save_torch(out_path, payload)


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
    label, runner = EXPORTED[export_format]
    return (
        f"ckpt={path} is a model exported to {label} (mode=export), not a checkpoint: "
        "mode=eval, predict, analyze and export take the best_model.pt (or a .ckpt) of a "
        "training run; "
        f"run {path.name} itself with {runner} as {guide} describes"
    )


def _resolve_manifest(stored: str | None, candidates: list[Path]) -> Path | None:
    if stored and Path(stored).is_file():
        return Path(stored)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def load_checkpoint(path: Path | str) -> LoadedModel:
    """Rebuild the network from best_model.pt or a Lightning .ckpt, from its own metadata."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / "best_model.pt").is_file():
            raise UserError(f"ckpt={path} is a folder without best_model.pt: pass the file itself")
        path = path / "best_model.pt"
    if not path.is_file():
        raise UserError(no_ckpt_there(path))
    exported = exported_format(path)
    if exported is not None:
        raise UserError(exported_model_message(path, exported))
    payload = _torch_load(path)
    if not isinstance(payload, dict):
        raise UserError(
            f"ckpt={path} is not a finetune checkpoint (found {type(payload).__name__})"
        )
    try:
        if payload.get("format") == FORMAT:
            class_names, data = payload["class_names"], payload["data"]
            arch = payload.get("arch", DEFAULT_ARCH)  # files older than the key: ResNet18
            state = payload["state_dict"]
            metrics = payload.get("metrics", {})
            manifest = _resolve_manifest(payload.get("manifest"), [path.parent / "split.csv"])
            split = payload.get("hyper_parameters", {}).get("data", {}).get("split")
        elif "state_dict" in payload and "class_names" in payload.get("hyper_parameters", {}):
            hparams = payload["hyper_parameters"]
            class_names, data = hparams["class_names"], hparams["data"]
            arch = hparams.get("model", {}).get("arch", DEFAULT_ARCH)
            state = network_state(payload["state_dict"])
            metrics = {}
            manifest = _resolve_manifest(None, [path.parent.parent / "split.csv"])
            split = hparams["data"].get("split")
        else:
            raise UserError(
                f"ckpt={path} is not a finetune checkpoint: expected best_model.pt or a .ckpt "
                "written by `python -m finetune mode=train`"
            )
    except KeyError as missing:  # edited by hand, or cut short by another program
        raise UserError(
            f"ckpt={path} lacks {missing}, which a checkpoint of `python -m finetune mode=train` "
            "holds: pass the file as training wrote it"
        ) from None
    try:
        net = build_network(len(class_names), arch=arch)
    except UserError as error:  # an architecture this torchvision does not have
        raise UserError(f"ckpt={path} cannot be rebuilt: {error}") from None
    try:
        net.load_state_dict(state)
    except RuntimeError as error:  # torch names each mismatch on a line of its own
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        first = details[0][:200] if details else str(error)
        raise UserError(f"ckpt={path} does not fit a {arch}: {first}{more}") from None
    net.eval()
    return LoadedModel(
        net, list(class_names), dict(data), manifest, path, dict(metrics), arch, split
    )
