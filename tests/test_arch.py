"""model.arch: any torchvision classification network, its last nn.Linear replaced by a seeded
head, ImageNet weights per architecture, checkpoints rebuilt as the architecture they hold."""

import functools
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import get_model

from finetune import network, weights
from finetune.checkpoint import FORMAT, export_best_model, load_checkpoint
from finetune.data.datamodule import ImageDataModule
from finetune.errors import UserError
from finetune.features import feature_extractor
from finetune.io import save_torch
from finetune.model import ImageClassifier
from finetune.network import build_network, default_feature_modules, head_name

from conftest import TINY, make_scene_folder, quiet_trainer, run_in_process, tiny_data_cfg

CLASSES = ["a", "b", "c"]
MODEL = {
    "weights": "none",
    "freeze_backbone": False,
    "head_seed": 0,
    "label_smoothing": 0.0,
    "channels_last": False,
    "compile": False,
}
SGD = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False}


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("arch", "head", "in_features", "size"),
    [
        ("resnet18", "fc", 512, 32),
        ("mobilenet_v3_small", "classifier.3", 1024, 32),
        ("regnet_x_400mf", "fc", 400, 32),
        ("efficientnet_b0", "classifier.1", 1280, 32),
        ("vit_b_16", "heads.head", 768, 224),  # a ViT takes its own image size only
    ],
)
def test_the_last_linear_is_replaced_by_a_seeded_head(arch, head, in_features, size):
    torch.manual_seed(0)
    net = build_network(7, arch=arch, head_seed=5, freeze_backbone=True)
    assert head_name(net) == head
    new = net.get_submodule(head)
    assert (new.in_features, new.out_features) == (in_features, 7)
    bound = 1.0 / in_features**0.5
    generator = torch.Generator().manual_seed(5)
    expected = torch.empty(7, in_features).uniform_(-bound, bound, generator=generator)
    assert torch.equal(new.weight, expected)  # from head_seed, whatever the global state
    trainable = [name for name, p in net.named_parameters() if p.requires_grad]
    assert trainable == [f"{head}.weight", f"{head}.bias"]
    with torch.no_grad():
        assert net.eval()(torch.zeros(2, 3, size, size)).shape == (2, 7)


@pytest.mark.parametrize(
    ("arch", "words"),
    [
        ("resnet81", ["model.arch='resnet81'", "resnet18", "list_models"]),
        ("mobilenet", ["mobilenet_v3_small", "mobilenet_v2"]),
        ("squeezenet1_0", ["squeezenet1_0", "not supported", "nn.Linear"]),
    ],
)
def test_an_unknown_or_headless_arch_is_one_line_naming_close_ones(arch, words):
    with pytest.raises(UserError) as error:
        build_network(3, arch=arch)
    message = one_line(error)
    for word in words:
        assert word in message


def test_an_image_size_the_arch_cannot_take_is_refused_before_training():
    with pytest.raises(UserError) as error:
        ImageClassifier(
            CLASSES, MODEL | {"arch": "vit_b_16"}, SGD, {"name": "none"}, {"image_size": 32}
        )
    message = one_line(error)
    for word in ("model.arch=vit_b_16", "data.image_size=32", "224"):
        assert word in message


def test_linear_probe_of_a_non_resnet_keeps_all_but_the_head_in_eval_mode():
    probe = ImageClassifier(
        CLASSES,
        MODEL | {"arch": "mobilenet_v3_small", "freeze_backbone": True},
        SGD,
        {"name": "none"},
        {},
    ).train()
    assert probe.head_name == "classifier.3"
    training = [name for name, module in probe.net.named_modules() if module.training]
    assert training == ["classifier.3"]  # the dropout before it included: fixed features


@pytest.fixture(scope="module")
def scene_data(tmp_path_factory) -> Path:
    return make_scene_folder(tmp_path_factory.mktemp("arch_data"), per_class=8, classes=CLASSES)


@pytest.mark.parametrize(
    ("arch", "net_type", "options"),
    [
        ("mobilenet_v3_small", "MobileNetV3", {}),
        # a linear probe in channels_last: a from-scratch RegNet trained 2 steps blows up in eval
        # mode (its running statistics are far from its activations), a frozen one does not
        ("regnet_x_400mf", "RegNet", {"freeze_backbone": True, "channels_last": True}),
    ],
)
def test_a_non_resnet_trains_and_its_checkpoints_reload_as_that_arch(
    arch, net_type, options, scene_data, tmp_path
):
    data_cfg = tiny_data_cfg(scene_data, split={"test": 3, "val": 3, "seed": 0})
    data = ImageDataModule(data_cfg, seed=0, train_eval_images=3)
    torch.manual_seed(0)
    model = ImageClassifier(
        CLASSES, MODEL | {"arch": arch} | options, SGD, {"name": "none"}, data_cfg
    )
    before = {key: value.clone() for key, value in model.net.state_dict().items()}
    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
    )
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 2
    head = head_name(model.net)
    for key, value in model.net.state_dict().items():
        changed = not torch.equal(value, before[key])
        if key.startswith(f"{head}."):
            assert changed, key
        elif options.get("freeze_backbone"):
            assert not changed, key  # running statistics included

    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    best = export_best_model(ckpt, tmp_path / "best_model.pt", {"val/map": 0.5}, None)
    assert torch.load(best, weights_only=True)["arch"] == arch

    data.setup("test")
    images = next(iter(data.test_dataloader()))[0]
    with torch.no_grad():
        # the trained weights in the layout a checkpoint rebuilds (channels_last kernels differ)
        scores = model.net.to(memory_format=torch.contiguous_format).eval()(images).softmax(1)
        assert torch.isfinite(scores).all()
        for path in (best, ckpt):
            loaded = load_checkpoint(path)
            assert loaded.arch == arch and type(loaded.net).__name__ == net_type
            assert torch.equal(loaded.net(images).softmax(1), scores), path


def test_a_best_model_without_arch_is_a_resnet18(tmp_path):
    """Files written before best_model.pt recorded its architecture hold a ResNet18."""
    net = build_network(3, head_seed=4).eval()
    data = {key: tiny_data_cfg(tmp_path)[key] for key in ("kind", "root", "image_size")}
    data |= {"resize_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    payload = {"format": FORMAT, "class_names": CLASSES, "state_dict": net.state_dict()}
    path = save_torch(tmp_path / "best_model.pt", payload | {"data": data, "manifest": None})
    loaded = load_checkpoint(path)
    assert loaded.arch == "resnet18"
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.net(images), net(images))


@contextmanager
def serving(folder: Path) -> Iterator[str]:
    """http.server on a free loopback port serving `folder`; yields its base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def save_hashed(state: dict[str, torch.Tensor], folder: Path, arch: str) -> str:
    """Save under torchvision's naming, <arch>-<first 8 hex digits of the SHA-256>.pth."""
    staged = folder / "staged.pth"
    torch.save(state, staged)
    name = f"{arch}-{hashlib.sha256(staged.read_bytes()).hexdigest()[:8]}.pth"
    staged.rename(folder / name)
    return name


def test_imagenet_weights_of_a_non_resnet_download_into_the_backbone(tmp_path, monkeypatch):
    arch = "mobilenet_v3_small"
    assert weights.imagenet_weights_url(None, arch) == (
        "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth"
    )
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    served = tmp_path / "served"
    served.mkdir()
    torch.manual_seed(1)
    # a head of another class count: its keys are never read, whatever their shape
    state = get_model(arch, weights=None, num_classes=10).state_dict()
    name = save_hashed(state, served, arch)
    with serving(served) as base:
        net = build_network(4, "imagenet", head_seed=3, weights_url=f"{base}/{name}", arch=arch)
    assert (home / "hub" / "checkpoints" / name).is_file()
    loaded = net.state_dict()
    backbone = [key for key in state if not key.startswith("classifier.3.")]
    assert len(backbone) == len(state) - 2
    for key in backbone:
        assert torch.equal(loaded[key], state[key]), key
    fresh = build_network(4, "none", head_seed=3, arch=arch).state_dict()
    for key in ("classifier.3.weight", "classifier.3.bias"):
        assert torch.equal(loaded[key], fresh[key])  # the new seeded head, not the served one
    assert loaded["classifier.3.weight"].shape == (4, 1024)


@pytest.mark.parametrize(
    ("arch", "state", "words"),
    [
        # names of another architecture
        ("mobilenet_v3_small", lambda: get_model("resnet18").state_dict(), ["missing"]),
        # same names, one tensor of another shape
        (
            "regnet_x_400mf",
            lambda: (
                get_model("regnet_x_400mf").state_dict()
                | {"stem.0.weight": torch.zeros(32, 3, 5, 5)}
            ),
            ["size mismatch", "stem.0.weight"],
        ),
    ],
    ids=["other-names", "other-shape"],
)
def test_a_weights_file_of_another_architecture_is_one_line(arch, state, words, tmp_path):
    torch.save(state(), tmp_path / "other.pt")
    with pytest.raises(UserError) as error:
        build_network(3, str(tmp_path / "other.pt"), arch=arch)
    message = one_line(error)
    assert f"is not a {network.display_name(arch)} state dict" in message
    for word in words:
        assert word in message


def test_inception_style_nets_lose_their_auxiliary_heads(tmp_path):
    """Built as for their ImageNet weights (input re-normalised) minus the auxiliary heads,
    whose keys a full state dict still carries: training mode gives plain logits."""
    torch.manual_seed(0)
    state = get_model("googlenet", weights=None, aux_logits=True, init_weights=False).state_dict()
    assert any(key.startswith("aux1.") for key in state)
    torch.save(state, tmp_path / "googlenet.pt")
    net = build_network(3, str(tmp_path / "googlenet.pt"), arch="googlenet")
    assert net.transform_input and net.aux1 is None and net.aux2 is None
    logits = net.train()(torch.rand(2, 3, 64, 64))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3)


def test_default_feature_modules_per_family():
    resnet = default_feature_modules("resnet50")
    assert resnet == list(network.RESNET_FEATURE_MODULES)
    net = build_network(3, arch="mobilenet_v3_small").eval()
    modules = default_feature_modules("mobilenet_v3_small", net)
    # five of the convolution nodes, stem to last, evenly spaced
    assert modules == [
        "features.0",
        "features.3.block.2",
        "features.6.block.1",
        "features.9.block.1",
        "features.12",
    ]
    with torch.no_grad():
        maps = feature_extractor(net, modules)(torch.rand(2, 3, 32, 32))
    assert all(value.ndim == 4 for value in maps.values())  # B x C x H x W: channel statistics
    assert default_feature_modules("vit_b_16") == ["conv_proj"]  # its only convolution


def test_a_non_resnet_trains_and_evaluates_its_best_model(scene_data, tmp_path):
    """The whole path, in this process as on the command line: train, export, evaluate."""
    run_dir = tmp_path / "run"
    run_in_process(
        "mode=train",
        f"data.root={scene_data}",
        "data.split.test=3",
        "data.split.val=3",
        "model.weights=none",
        "model.arch=mobilenet_v3_small",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "train_eval_images=0",
        f"hydra.run.dir={run_dir}",
        *TINY,
    )
    best = run_dir / "best_model.pt"
    assert torch.load(best, weights_only=True)["arch"] == "mobilenet_v3_small"
    evaluated = run_in_process(
        "mode=eval", f"ckpt={best}", f"hydra.run.dir={tmp_path / 'eval'}", *TINY
    )
    trained = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert evaluated["n"] == 3
    assert evaluated["acc_mean"] == pytest.approx(trained["test/acc_mean"], abs=1e-6)


def test_head_is_the_last_linear_in_module_order():
    """head_name's rule on a network with Linear layers before its output one."""
    net = nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.ReLU(), nn.Linear(8, 2)))
    assert head_name(net) == "1.1"
    with pytest.raises(ValueError):
        head_name(nn.Sequential(nn.Conv2d(3, 4, 1)))
