"""model.weights=imagenet downloads once into torch's cache, from a loopback HTTP server here:
a good file loads, a tampered one is refused and not kept, an unreachable URL says how to go on."""

import functools
import hashlib
import shutil
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from finetune import weights
from finetune.errors import UserError, WeightsUnavailable
from finetune.network import build_network
from finetune.weights import imagenet_weights_file, pretrained_state_dict

from conftest import TINY, free_port, run_in_process


@dataclass
class Served:
    """A folder of weights files: a good one named after its hash, and a tampered copy."""

    root: Path
    name: str  # resnet18-<first 8 hex of its sha256>.pth
    state: dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    root = tmp_path_factory.mktemp("served")
    torch.manual_seed(1)
    state = resnet18(weights=None).state_dict()
    staged = root / "staged.pth"
    torch.save(state, staged)
    name = f"resnet18-{hashlib.sha256(staged.read_bytes()).hexdigest()[:8]}.pth"
    staged.rename(root / name)
    # the mirror's file replaced by another one under the same (now lying) name
    (root / "tampered").mkdir()
    shutil.copyfile(root / name, root / "tampered" / name)
    with (root / "tampered" / name).open("ab") as handle:
        handle.write(b"\0")
    return Served(root, name, state)


@dataclass
class Server:
    url: str  # http://127.0.0.1:<port>
    requests: Counter  # GET count by path


@pytest.fixture
def server(served) -> Iterator[Server]:
    """http.server on a free loopback port, serving `served.root`, counting the GETs."""
    requests: Counter = Counter()

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests[self.path] += 1
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served.root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME: torch.hub.get_dir() follows the variable when set_dir was not used."""
    path = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(path))
    assert Path(torch.hub.get_dir()) == path / "hub"
    return path


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_default_url_and_cache_file_are_torchvision_ones(home):
    url = weights.imagenet_weights_url(None, "resnet18")
    assert url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert imagenet_weights_file(url) == home / "hub/checkpoints/resnet18-f37072fd.pth"
    assert weights.hash_prefix("resnet18-f37072fd.pth") == "f37072fd"


def test_weights_download_once_into_the_cache_and_load(served, server, home):
    url = f"{server.url}/{served.name}"
    net = build_network(6, "imagenet", head_seed=3, weights_url=url)

    cached = home / "hub" / "checkpoints" / served.name
    assert files_under(home) == [cached]  # no temporary file left beside it
    assert cached.read_bytes() == (served.root / served.name).read_bytes()
    state = net.state_dict()
    for key, value in served.state.items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key
    assert state["fc.weight"].shape == (6, 512)
    assert server.requests == {f"/{served.name}": 1}

    again = pretrained_state_dict("imagenet", url, "resnet18")
    assert torch.equal(again["layer4.1.conv2.weight"], served.state["layer4.1.conv2.weight"])
    assert server.requests == {f"/{served.name}": 1}  # the cached file, not a second download


def test_tampered_download_is_refused_and_not_kept(served, server, home):
    url = f"{server.url}/tampered/{served.name}"
    with pytest.raises(UserError) as error:
        build_network(6, "imagenet", weights_url=url)
    assert type(error.value) is UserError  # broken weights, not absent ones
    message = one_line(error)
    assert "hash" in message and url in message
    assert server.requests == {f"/tampered/{served.name}": 1}
    assert files_under(home) == []  # neither the file nor a temporary one stays


def test_unreachable_url_says_where_the_file_goes_and_how_to_go_on(home):
    url = f"http://127.0.0.1:{free_port()}/resnet18-f37072fd.pth"
    with pytest.raises(WeightsUnavailable) as error:
        pretrained_state_dict("imagenet", url, "resnet18")
    message = one_line(error)
    path = home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    for part in (str(path), url, "refused", "model.weights_url"):
        assert part in message
    assert "model.weights=none" not in message  # training adds it: analyze has no use for it
    assert not home.exists()  # the cache folders made for the download are gone again


def test_stalled_server_times_out(home, monkeypatch):
    """A server that accepts the connection and never answers: the download gives up."""
    monkeypatch.setattr(weights, "DOWNLOAD_TIMEOUT_S", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/resnet18-f37072fd.pth"
        # without a timeout the test would hang: closing the socket resets the connection
        guard = threading.Timer(20, silent.close)
        guard.start()
        try:
            with pytest.raises(WeightsUnavailable) as error:
                pretrained_state_dict("imagenet", url, "resnet18")
        finally:
            guard.cancel()
    assert "timed out" in one_line(error) and url in str(error.value)
    assert files_under(home) == []


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://mirror/resnet18-f37072fd.pth", ["model.weights_url", "http://"]),
        ("/local/resnet18-f37072fd.pth", ["model.weights_url", "file://"]),
        ("http://mirror/weights/", ["does not end in a file name"]),
        ("http://mirror/resnet18.pth", ["sha256", "resnet18.pth"]),
    ],
)
def test_bad_weights_url_is_refused_before_any_download(url, words, home):
    with pytest.raises(UserError) as error:
        pretrained_state_dict("imagenet", url, "resnet18")
    message = one_line(error)
    for word in words:
        assert word in message


def test_planted_pickle_in_the_cache_is_refused_not_replaced(served, server, home):
    url = f"{server.url}/{served.name}"
    cached = home / "hub" / "checkpoints" / served.name
    cached.parent.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(1), "run": print}, cached)  # needs a global: code
    with pytest.raises(UserError) as error:
        pretrained_state_dict("imagenet", url, "resnet18")
    assert type(error.value) is UserError
    assert "not a plain weights file" in one_line(error)
    assert server.requests == {}


def test_a_run_trains_from_downloaded_weights(served, server, tmp_path, monkeypatch, scene_root):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    url = f"{server.url}/{served.name}"
    run_dir = tmp_path / "run"
    run_in_process(
        f"data.root={scene_root}",
        "data.split.test=12",
        "data.split.val=12",
        "model.weights=imagenet",
        f"model.weights_url={url}",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "train_eval_images=8",
        f"hydra.run.dir={run_dir}",
        *TINY,
    )
    assert files_under(home) == [home / "hub" / "checkpoints" / served.name]
    assert server.requests == {f"/{served.name}": 1}
