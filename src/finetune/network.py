"""The torchvision ResNet18 with a new head, and loading its weights safely and offline."""

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, get_model

from finetune.errors import UserError

ARCH = "resnet18"


def imagenet_weights_file() -> Path:
    """Where torchvision's weights API caches the ImageNet weights ($TORCH_HOME/hub/checkpoints)."""
    url = ResNet18_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from disk, unpickled with weights_only=True (a planted file cannot run code)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"weights file {path} does not exist") from None
    except Exception as error:  # noqa: BLE001 - any unpickling failure means: refuse the file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(f"refusing {path}: not a plain weights file ({first_line[:200]})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    return state


def pretrained_state_dict(weights: str) -> dict[str, torch.Tensor] | None:
    """The backbone weights named by model.weights: imagenet, none, or a file path."""
    if weights in (None, "none"):
        return None
    if weights == "imagenet":
        path = imagenet_weights_file()
        if not path.is_file():
            raise UserError(
                f"ImageNet weights not found at {path}: download "
                f"{ResNet18_Weights.IMAGENET1K_V1.url} to that path (or set TORCH_HOME), "
                "or train from scratch with model.weights=none"
            )
        return load_state_dict_file(path)
    return load_state_dict_file(Path(os.path.expanduser(weights)))


def build_network(
    num_classes: int, weights: str = "none", head_seed: int = 0, freeze_backbone: bool = False
) -> nn.Module:
    """ResNet18 with `weights` in its backbone and a new, seeded `num_classes` head."""
    net = get_model(ARCH, weights=None)
    state = pretrained_state_dict(weights)
    if state is not None:
        backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(backbone, strict=False)
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise UserError(
                f"model.weights={weights} is not a ResNet18 state dict "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    generator = torch.Generator().manual_seed(head_seed)
    head = nn.Linear(net.fc.in_features, num_classes)
    bound = 1.0 / net.fc.in_features**0.5
    with torch.no_grad():
        head.weight.uniform_(-bound, bound, generator=generator)
        head.bias.uniform_(-bound, bound, generator=generator)
    net.fc = head
    if freeze_backbone:
        for name, parameter in net.named_parameters():
            parameter.requires_grad = name.startswith("fc.")
    return net
