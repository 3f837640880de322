"""best_model.pt: a plain dict (weights + what is needed to rebuild and evaluate the model),
written atomically and read back with weights_only=True. Lightning .ckpt files load too."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finetune.errors import UserError
from finetune.io import save_torch
from finetune.network import DEFAULT_ARCH, build_network
from finetune.tasks.export import exported_format, exported_model_message

FORMAT = "finetune.best_model/1"
DATA_KEYS = ("kind", "root", "image_size", "resize_size", "mean", "std")


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


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to unpickle safely: refuse the file
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error)
        raise UserError(
            f"refusing to load {path}: not a weights-only checkpoint ({reason})"
        ) from None


def export_best_model(
    lightning_ckpt: Path, out_path: Path, metrics: dict[str, float], manifest: Path | None
) -> Path:
    """Turn the best Lightning checkpoint into best_model.pt (never overwrites)."""
    ckpt = _torch_load(Path(lightning_ckpt))
    hparams = ckpt["hyper_parameters"]
    state = {
        key.removeprefix("net."): value
        for key, value in ckpt["state_dict"].items()
        if key.startswith("net.")
    }
    payload = {
        "format": FORMAT,
        "arch": hparams["model"].get("arch", DEFAULT_ARCH),
        "class_names": list(hparams["class_names"]),
        "state_dict": state,
        "data": {key: hparams["data"][key] for key in DATA_KEYS},
        "manifest": None if manifest is None else str(Path(manifest).resolve()),
        "metrics": metrics,
        "epoch": int(ckpt.get("epoch", -1)),
        "global_step": int(ckpt.get("global_step", -1)),
        "hyper_parameters": hparams,
    }
    return save_torch(out_path, payload)


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
        raise UserError(f"ckpt={path} does not exist: pass the best_model.pt of a training run")
    exported = exported_format(path)
    if exported is not None:
        raise UserError(exported_model_message(path, exported))
    payload = _torch_load(path)
    if not isinstance(payload, dict):
        raise UserError(
            f"ckpt={path} is not a finetune checkpoint (found {type(payload).__name__})"
        )
    if payload.get("format") == FORMAT:
        class_names, data = payload["class_names"], payload["data"]
        arch = payload.get("arch", DEFAULT_ARCH)  # files written before the key existed: ResNet18
        state = payload["state_dict"]
        metrics = payload.get("metrics", {})
        manifest = _resolve_manifest(payload.get("manifest"), [path.parent / "split.csv"])
    elif "state_dict" in payload and "class_names" in payload.get("hyper_parameters", {}):
        hparams = payload["hyper_parameters"]
        class_names, data = hparams["class_names"], hparams["data"]
        arch = hparams.get("model", {}).get("arch", DEFAULT_ARCH)
        state = {
            key.removeprefix("net."): value
            for key, value in payload["state_dict"].items()
            if key.startswith("net.")
        }
        metrics = {}
        manifest = _resolve_manifest(None, [path.parent.parent / "split.csv"])
    else:
        raise UserError(
            f"ckpt={path} is not a finetune checkpoint: expected best_model.pt or a .ckpt "
            "written by `python -m finetune mode=train`"
        )
    try:
        net = build_network(len(class_names), arch=arch)
    except UserError as error:  # an architecture this torchvision does not have
        raise UserError(f"ckpt={path} cannot be rebuilt: {error}") from None
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(
            f"ckpt={path} does not fit a {arch}: {str(error).splitlines()[0]}"
        ) from None
    net.eval()
    return LoadedModel(net, list(class_names), dict(data), manifest, path, dict(metrics), arch)
