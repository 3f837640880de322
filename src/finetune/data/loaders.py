"""The one way a DataLoader is built: training, evaluation, prediction and analysis all read
`data.loader` (workers, pinned memory, prefetching) through `image_loader`."""

import os
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def auto_workers(processes: int = 1) -> int:
    """Loader workers for `num_workers=auto`: the CPUs this process may run on (its affinity mask:
    a container or `taskset` limit, which os.cpu_count ignores), shared among the `processes`
    training on this machine (DDP ranks), less one core each for the main process that runs the
    model, and at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(processes, 1) - 1)


def loader_settings(loader: dict[str, Any], processes: int = 1) -> dict[str, Any]:
    """DataLoader keyword arguments from `data.loader` ("auto" workers: see auto_workers; "auto"
    pinned memory: when a GPU is there)."""
    workers = loader["num_workers"]
    workers = auto_workers(processes) if workers == "auto" else int(workers)
    pin = loader["pin_memory"]
    kwargs: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": torch.cuda.is_available() if pin == "auto" else bool(pin),
    }
    if workers > 0:
        kwargs["persistent_workers"] = bool(loader["persistent_workers"])
        kwargs["prefetch_factor"] = loader["prefetch_factor"]
    return kwargs


def image_loader(
    dataset: Dataset,
    loader: dict[str, Any],
    batch_size: int | None = None,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    processes: int = 1,
) -> DataLoader:
    """A loader over `dataset` with the `data.loader` settings: in dataset order (a `sampler`
    shuffles or shards), `batch_size` images a batch (default `eval_batch_size`)."""
    return DataLoader(
        dataset,
        batch_size=loader["eval_batch_size"] if batch_size is None else batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=drop_last,
        **loader_settings(loader, processes),
    )
