"""Pretrained weights, loaded safely: model.weights=imagenet is downloaded once into torch's
cache and checked against the SHA-256 prefix in its file name; every weights file is unpickled
with weights_only=True, so a planted file cannot run code."""

import http.client
import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlsplit

import torch
from torchvision.models import get_model_weights

from finetune.errors import UserError, WeightsUnavailable
from finetune.safe_load import weights_only_load

URL_SCHEMES = ("http://", "https://", "file://")
# A stalled server or a dropped network ends the download after this long without a byte.
DOWNLOAD_TIMEOUT_S = 60.0
# torchvision's files are named <arch>-<first hex digits of their SHA-256>.pth
_HASH_PREFIX = re.compile(r"[0-9a-f]{8,64}")

log = logging.getLogger(__name__)


def imagenet_weights_url(weights_url: str | None, arch: str) -> str:
    """Where model.weights=imagenet comes from: model.weights_url, or the URL of torchvision's
    DEFAULT weights for `arch`."""
    if weights_url is None:
        return get_model_weights(arch).DEFAULT.url
    if not isinstance(weights_url, str) or not weights_url.startswith(URL_SCHEMES):
        raise UserError(
            f"model.weights_url={weights_url!r} must start with http://, https:// or file:// "
            "(or be null for torchvision's URL)"
        )
    return weights_url


def url_file_name(url: str) -> str:
    """The cache file name: the URL path's last part (a query string is not part of it)."""
    name = os.path.basename(urlsplit(url).path)
    if not name:
        raise UserError(f"model.weights_url={url} does not end in a file name")
    return name


def hash_prefix(file_name: str) -> str:
    """The SHA-256 prefix a weights file name carries after its last '-', as torch.hub reads it
    (resnet18-f37072fd.pth -> f37072fd): the download is checked against it."""
    prefix = file_name.rsplit("-", 1)[-1].split(".", 1)[0] if "-" in file_name else ""
    if not _HASH_PREFIX.fullmatch(prefix):
        raise UserError(
            f"weights file name {file_name} carries no SHA-256 prefix: name it "
            "<name>-<first 8+ hex digits of its sha256>.pth, as torchvision does, so the "
            "download can be checked"
        )
    return prefix


def imagenet_weights_file(url: str) -> Path:
    """Where the weights at `url` are cached: $TORCH_HOME/hub/checkpoints/<URL's file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url_file_name(url)


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torch.hub's downloader takes no timeout: bound it through the default socket timeout."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if before is None else before)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def _one_line(error: BaseException) -> str:
    """The cause in one short line ("[Errno 111] Connection refused", "HTTP Error 404: ...")."""
    reason = error.reason if type(error) is URLError else error
    return " ".join(str(reason).split())[:200] or type(error).__name__


def _remove_empty(folders: list[Path]) -> None:
    """Remove the cache folders a failed download made (deepest first), so it leaves nothing."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def download_weights(url: str, path: Path) -> None:
    """Download `url` to `path` with torch.hub's downloader: it writes a temporary file beside
    `path`, checks its SHA-256 against the prefix in the name and only then moves it in place,
    so a broken or tampered download never lands in the cache."""
    expected = hash_prefix(path.name)
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    fix = "copy the file there, or point model.weights_url at a reachable copy"
    log.info("downloading %s to %s", url, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            torch.hub.download_url_to_file(url, str(path), hash_prefix=expected, progress=True)
    except RuntimeError as error:
        if "invalid hash value" not in str(error):
            raise
        raise UserError(
            f"refusing the download of {url}: its SHA-256 hash does not start with {expected} "
            f"as its name says ({_one_line(error)}); nothing was kept in {path.parent}"
        ) from None
    except (URLError, OSError, http.client.HTTPException) as error:
        raise WeightsUnavailable(
            f"ImageNet weights are not cached at {path} and could not be downloaded from {url} "
            f"({_one_line(error)}): {fix}"
        ) from None
    finally:
        if not path.exists():
            _remove_empty(created)


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from disk, unpickled with weights_only=True (a planted file cannot run code)."""
    if not path.is_file():
        raise UserError(
            f"weights file {path} does not exist: model.weights takes imagenet, none or the path "
            "of a state-dict file"
        )
    state = weights_only_load(
        path, f"refusing {path}: not a plain weights file", f"refusing {path}: not a weights file"
    )
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    return state


def pretrained_state_dict(
    weights: str | None, weights_url: str | None, arch: str
) -> dict[str, torch.Tensor] | None:
    """The backbone weights named by model.weights: imagenet (`arch`'s DEFAULT weights, from
    torch's cache, downloaded from `weights_url` or torchvision's URL when absent), none, or a
    file path."""
    if weights in (None, "none"):
        return None
    if weights == "imagenet":
        url = imagenet_weights_url(weights_url, arch)
        path = imagenet_weights_file(url)
        if not path.is_file():
            download_weights(url, path)
        return load_state_dict_file(path)
    return load_state_dict_file(Path(os.path.expanduser(weights)))
