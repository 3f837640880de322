"""Hydra callback: when a sweep (-m) ends, rank its runs and name the winner's best_model.pt."""

import logging
import math
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    """Writes sweep_summary.csv / .md at the sweep root and copies the winner's best_model.pt."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        import json

        from finetune.io import write_csv, write_text

        root = Path(config.hydra.sweep.dir)
        runs = []
        for metrics_file in sorted(root.glob("*/metrics.json")):
            metrics = json.loads(metrics_file.read_text())
            overrides_file = metrics_file.parent / ".hydra" / "overrides.yaml"
            overrides = (
                " ".join(
                    line.removeprefix("- ").strip()
                    for line in overrides_file.read_text().splitlines()
                    if line.strip()
                )
                if overrides_file.is_file()
                else ""
            )
            monitor = metrics["monitor"]
            runs.append(
                {
                    "run": metrics_file.parent.name,
                    "overrides": overrides,
                    "monitor": monitor["name"],
                    "value": monitor["value"],
                    "mode": monitor["mode"],
                    "val_acc_mean": metrics["val"].get("val/acc_mean", math.nan),
                    "test_map": metrics["test"].get("test/map", math.nan),
                }
            )
        if not runs:
            log.warning("sweep %s: no run wrote metrics.json, nothing to rank", root)
            return
        maximize = runs[0]["mode"] == "max"
        runs.sort(key=lambda r: -r["value"] if maximize else r["value"])
        columns = ["rank", "run", "overrides", "monitor", "value", "val_acc_mean", "test_map"]
        rows = [[i + 1] + [run[c] for c in columns[1:]] for i, run in enumerate(runs)]
        write_csv(root / "sweep_summary.csv", columns, rows, overwrite=True)
        table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        table += [
            "| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |"
            for row in rows
        ]
        winner = runs[0]
        source = root / winner["run"] / "best_model.pt"
        lines = [
            f"# Sweep summary ({len(runs)} runs, ranked by {winner['monitor']}, {winner['mode']})",
            "",
            *table,
            "",
            f"Winner: run {winner['run']} ({winner['overrides']}), "
            f"{winner['monitor']} = {winner['value']:.4f}; its best_model.pt is copied to "
            f"{root / 'best_model.pt'}.",
            "",
        ]
        write_text(root / "sweep_summary.md", "\n".join(lines), overwrite=True)
        if source.is_file():
            shutil.copyfile(source, root / "best_model.pt")
        log.info("sweep winner: run %s, %s=%.4f", winner["run"], winner["monitor"], winner["value"])
