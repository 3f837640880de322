"""What every benchmark shares: settings, the package's own config, clocks and memory peaks."""

import logging
import os
import platform
import re
import resource
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
NUM_CLASSES = 6  # the scene data


@dataclass(frozen=True)
class Settings:
    """How much to measure. Every figure is the median of `reps` timed blocks after a warm-up."""

    sizes: tuple[int, ...] = (224, 150)
    batches: tuple[int, ...] = (16,)
    workers: tuple[int, ...] = (0,)  # besides the default (data.loader.num_workers=auto)
    reps: int = 3
    loader_images: int = 128  # per split: one loader epoch
    train_images: int = 64  # per timed training block (steps = train_images // batch)
    eval_images: int = 64  # per timed evaluation block
    warmup_steps: int = 1  # untimed steps at the start of every block
    overhead_size: int = 32  # the Lightning overhead breakdown runs at this size, where it shows
    overhead_steps: int = 30
    overhead_reps: int = 5
    share_steps: int = 20  # timed steps of training from JPEGs (the loader's share of the CPU)
    share_warmup: int = 3  # untimed steps before them (worker start-up, first-call setup)
    share_reps: int = 2
    cli_reps: int = 5


FULL = Settings()
QUICK = Settings(
    sizes=(32,),
    batches=(4,),
    workers=(0,),
    reps=2,
    loader_images=16,
    train_images=8,
    eval_images=8,
    overhead_steps=3,
    overhead_reps=2,
    share_steps=3,
    share_warmup=1,
    share_reps=1,
    cli_reps=1,
)
# The seed's way: float32, the default memory layout (whatever the processor could do).
SEED_WAY = ["trainer.precision=32-true", "model.channels_last=false"]


def eval_resize(image_size: int) -> int:
    """data.resize_size used with `image_size`: the package default at 224, else the native
    size (the 150 px scene images are then used as they are, no up-scaling)."""
    return 256 if image_size == 224 else image_size


def compose_cfg(overrides: list[str]) -> DictConfig:
    """The package's configuration, composed by Hydra exactly as `python -m finetune` would, with
    trainer.precision / model.channels_last `auto` resolved as the train task resolves them."""
    from hydra import compose, initialize_config_dir

    from finetune.precision import resolve_numerics

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return resolve_numerics(compose(config_name="config", overrides=overrides))[0]


def run_overrides(size: int, batch: int, device: str, *extra: str) -> list[str]:
    """Overrides shared by the training and evaluation benchmarks: the package's fast setting,
    i.e. the automatic numerics with `cpu_bf16=true` (bf16 + channels-last where the device
    computes bf16 natively: the default on a GPU, the opt-in on a CPU, whose default is float32
    since bf16 missed the accuracy parity rule), unless `extra` says otherwise."""
    return [
        "data.root=unused",
        f"data.image_size={size}",
        f"data.resize_size={eval_resize(size)}",
        f"data.loader.batch_size={batch}",
        f"data.loader.eval_batch_size={batch}",
        "model.weights=none",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "+trainer.enable_checkpointing=false",
        "trainer.max_epochs=1",
        "cpu_bf16=true",
        *extra,
    ]


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU is usable here")
    return name


def now(device: str) -> float:
    """A timestamp taken after the device has finished its queued work."""
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def summary(values: list[float], digits: int = 3) -> dict[str, Any]:
    """Median and range of repeated measurements."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "values": [round(v, digits) for v in values],
    }


def _proc_status_kb(field: str, pid: int | str = "self") -> int | None:
    """A memory figure (VmRSS, VmHWM = peak RSS) of a Linux process; None without /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak RSS of this process (and peak GPU memory) during a `with` block, and its RSS at
    the start: memory the allocator kept from earlier work counts in the peak, not in the rise.

    On Linux the RSS high-water mark is reset at entry (/proc/self/clear_refs), so the figure
    belongs to the block alone; where it cannot be reset, `scope` says "process" (peak so far).
    """

    def __enter__(self) -> "PeakMemory":
        start = _proc_status_kb("VmRSS")
        self.start_mb = None if start is None else round(start / 1024, 1)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.scope = "block"
        except OSError:
            self.scope = "process"
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        kb = _proc_status_kb("VmHWM")
        if kb is None:  # no /proc (macOS): the process-wide peak, in bytes there
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            kb = peak // 1024 if sys.platform == "darwin" else peak
        self.rss_mb = round(kb / 1024, 1)
        self.cuda_mb = (
            round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if torch.cuda.is_available()
            else None
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rss_start_mb": self.start_mb,
            "rss_peak_mb": self.rss_mb,
            "rss_scope": self.scope,
            "cuda_peak_mb": self.cuda_mb,
        }


def child_pids() -> list[str]:
    """This process's live child processes (data-loader workers), from /proc (Linux)."""
    me = str(os.getpid())
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = stat.read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if ppid == me:
            pids.append(stat.parent.name)
    return pids


def children_peak_rss_mb() -> float | None:
    """The largest peak RSS among this process's live child processes (data-loader workers).

    Forked workers share pages with the parent, and RSS counts those too: an upper bound.
    """
    peaks = [kb for pid in child_pids() if (kb := _proc_status_kb("VmHWM", pid)) is not None]
    return round(max(peaks) / 1024, 1) if peaks else None


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds a process has used, all its threads (/proc/<pid>/stat); 0.0
    for a process that has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.machine()


def machine_info(device: str) -> dict[str, Any]:
    import lightning
    import torchvision

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def quiet_lightning() -> None:
    """Keep Lightning's banners, tips and hints out of the benchmark's output."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning(\..*)?")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
