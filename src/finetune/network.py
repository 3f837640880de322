"""Any torchvision classification network by name, with a new seeded head in place of its last
nn.Linear and its backbone weights from finetune.weights (imagenet, none or a file)."""

import difflib
import functools

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet, get_model, get_model_weights, list_models
from torchvision.models.feature_extraction import get_graph_node_names
from torchvision.ops import Conv2dNormActivation

from finetune.errors import UserError
from finetune.weights import pretrained_state_dict

DEFAULT_ARCH = "resnet18"  # also the architecture of checkpoints written before "arch" existed
# Built as torchvision builds them for their DEFAULT weights, with or without weights, so a
# checkpoint rebuilds the very same network: the two Inception-style nets expect inputs
# re-normalised as their ported weights were trained (transform_input) and lose their
# auxiliary heads (a second output in training mode that the loss does not take; their keys
# are dropped from a state dict); a ViT's position embedding fixes its image size.
_AUXILIARY_HEADS = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}
# analysis.modules=auto for ResNets: the report's five, the first convolution of the first
# five residual blocks (every torchvision ResNet, ResNeXt and Wide ResNet has them).
RESNET_FEATURE_MODULES = (
    "layer1.0.conv1",
    "layer1.1.conv1",
    "layer2.0.conv1",
    "layer2.1.conv1",
    "layer3.0.conv1",
)
FEATURE_MODULE_COUNT = 5
# named when a mistyped model.arch is close to none of them
EXAMPLE_ARCHS = "resnet18, resnet50, mobilenet_v3_small, efficientnet_b0, convnext_tiny, vit_b_16"


@functools.cache
def classification_archs() -> tuple[str, ...]:
    """Every torchvision classification model name (model.arch takes any of them)."""
    return tuple(list_models(module=torchvision.models))


def check_arch(arch: object) -> str:
    """`arch` if torchvision has that classification model, else one line naming close ones."""
    names = classification_archs()
    if isinstance(arch, str) and arch in names:
        return arch
    close = difflib.get_close_matches(str(arch), names, n=5, cutoff=0.6)
    hint = f"close names: {', '.join(close)}" if close else f"e.g. {EXAMPLE_ARCHS}"
    raise UserError(
        f"model.arch={arch!r} is not a torchvision classification model; {hint} "
        f"({len(names)} in all: torchvision.models.list_models(module=torchvision.models))"
    )


def display_name(arch: str) -> str:
    """The name torchvision gives the architecture in its weights enum (resnet18 -> ResNet18)."""
    return get_model_weights(arch).__name__.removesuffix("_Weights")


def torchvision_network(arch: str) -> nn.Module:
    """`arch` with random weights and its ImageNet head, built as for its DEFAULT weights."""
    kwargs: dict[str, object] = {}
    if arch in _AUXILIARY_HEADS:
        kwargs = {"transform_input": True, "aux_logits": False, "init_weights": True}
    elif arch.startswith("vit_"):
        kwargs = {"image_size": get_model_weights(arch).DEFAULT.meta["min_size"][0]}
    return get_model(arch, weights=None, **kwargs)


def head_name(net: nn.Module) -> str:
    """The module name of the classification head: the last nn.Linear in the module tree
    (resnet/regnet `fc`, mobilenet/efficientnet `classifier.N`, vit `heads.head`, swin `head`).
    Raises ValueError for a network without one (squeezenet ends in a 1x1 convolution)."""
    linears = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no nn.Linear layer to serve as its head")
    return linears[-1]


def _replace_head(net: nn.Module, name: str, num_classes: int, head_seed: int) -> None:
    """Put a new Linear(in_features, num_classes) in place of the head `name`, drawn from
    `head_seed` (uniform, torch's default bound) whatever the global random state."""
    in_features = net.get_submodule(name).in_features
    generator = torch.Generator().manual_seed(head_seed)
    head = nn.Linear(in_features, num_classes)
    bound = 1.0 / in_features**0.5
    with torch.no_grad():
        head.weight.uniform_(-bound, bound, generator=generator)
        head.bias.uniform_(-bound, bound, generator=generator)
    net.set_submodule(name, head)


def check_image_size(net: nn.Module, arch: str, image_size: int, num_classes: int) -> None:
    """One forward pass (eval mode, no gradients) of a blank image of the data's size: an
    architecture that cannot take that size (a ViT's fixed 224 px, Inception's 75 px minimum,
    MaxViT's window grid) says so in one line before training starts, not mid-epoch."""
    modes = {module: module.training for module in net.modules()}
    net.eval()
    try:
        with torch.no_grad():
            logits = net(torch.zeros(1, 3, image_size, image_size))
    except Exception as error:  # noqa: BLE001 - whatever the layer objects to, say it in one line
        detail = " ".join(str(error).split())[:160] or type(error).__name__
        meta = get_model_weights(arch).DEFAULT.meta
        raise UserError(
            f"model.arch={arch} cannot run on data.image_size={image_size} images ({detail}): "
            f"torchvision gives {meta['min_size'][0]} px as its smallest input; set "
            "data.image_size and data.resize_size to a size it takes"
        ) from None
    finally:
        for module, training in modes.items():
            module.training = training
    if tuple(logits.shape) != (1, num_classes):
        raise UserError(
            f"model.arch={arch}: the replaced head {head_name(net)} is not the network's output "
            f"(a forward pass gives shape {tuple(logits.shape)}, not (1, {num_classes}))"
        )


def default_feature_modules(arch: str, net: nn.Module | None = None) -> list[str]:
    """analysis.modules=auto: the feature maps analysed by default for `arch` (or `net`).

    ResNets (ResNeXt and Wide ResNet included): RESNET_FEATURE_MODULES, the report's five.
    Any other network: five convolution nodes evenly spaced in execution order, from the first
    (the stem) to the last, so they run from low- to high-level features. A convolution node is
    a graph node (as feature extraction names them) that is an nn.Conv2d or a torchvision
    Conv2dNormActivation, which feature extraction keeps whole (conv + norm + activation): both
    give B x C x H x W maps, the layout the channel statistics read. Squeeze-and-excitation
    blocks are whole nodes too, so their gate convolutions (1 x 1 maps) never count. A network
    with fewer convolution nodes gets them all (a ViT or a Swin: only its patch embedding).
    """
    if net is None:
        net = torchvision_network(check_arch(arch))
    if isinstance(net, ResNet):
        return list(RESNET_FEATURE_MODULES)
    modules = dict(net.named_modules())
    _, nodes = get_graph_node_names(net)
    convolutions = [
        node for node in nodes if isinstance(modules.get(node), (nn.Conv2d, Conv2dNormActivation))
    ]
    if len(convolutions) <= FEATURE_MODULE_COUNT:
        return convolutions
    step = (len(convolutions) - 1) / (FEATURE_MODULE_COUNT - 1)
    return [convolutions[round(index * step)] for index in range(FEATURE_MODULE_COUNT)]


def _load_backbone(
    net: nn.Module, state: dict[str, torch.Tensor], arch: str, head: str, weights: str
) -> None:
    """Load every key but the head's (and the auxiliary heads' dropped at build): anything
    missing, extra or of another shape means the file is not of this architecture."""
    skipped = (head + ".", *_AUXILIARY_HEADS.get(arch, ()))
    backbone = {key: value for key, value in state.items() if not key.startswith(skipped)}
    problem = ""
    try:
        missing, unexpected = net.load_state_dict(backbone, strict=False)
    except RuntimeError as error:  # same names, other shapes
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        problem = next((line for line in lines if "size mismatch" in line), lines[0])[:200]
    else:
        missing = [key for key in missing if not key.startswith(head + ".")]
        if missing or unexpected:
            problem = f"missing {missing[:3]}, unexpected {unexpected[:3]}"
    if problem:
        raise UserError(
            f"model.weights={weights} is not a {display_name(arch)} state dict ({problem})"
        )


def build_network(
    num_classes: int,
    weights: str | None = "none",
    head_seed: int = 0,
    freeze_backbone: bool = False,
    weights_url: str | None = None,
    arch: str = DEFAULT_ARCH,
) -> nn.Module:
    """torchvision's `arch` with `weights` in its backbone and a new, seeded `num_classes`
    head in place of its last nn.Linear; freeze_backbone leaves only that head trainable."""
    net = torchvision_network(check_arch(arch))
    try:
        head = head_name(net)
    except ValueError as error:
        raise UserError(f"model.arch={arch} is not supported: {error}") from None
    state = pretrained_state_dict(weights, weights_url, arch)
    if state is not None:
        _load_backbone(net, state, arch, head, str(weights))
    _replace_head(net, head, num_classes, head_seed)
    if freeze_backbone:
        for parameter in backbone_parameters(net, head):
            parameter.requires_grad = False
    return net


def backbone_modules(net: nn.Module, head: str) -> list[nn.Module]:
    """The modules outside the head `head` that hold parameters of their own: what a linear probe
    and staged unfreezing freeze, and what optimizer.backbone_lr_mult scales."""
    return [
        module
        for name, module in net.named_modules()
        if name != head
        and not name.startswith(head + ".")
        and next(module.parameters(recurse=False), None) is not None
    ]


def backbone_parameters(net: nn.Module, head: str) -> list[nn.Parameter]:
    """The parameters of backbone_modules (a parent's own, never its children's twice)."""
    return [p for module in backbone_modules(net, head) for p in module.parameters(recurse=False)]
