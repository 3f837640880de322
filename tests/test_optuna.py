"""`hparams_search=optuna` through the command line (the entry point's main(), in this
process): it optimises the monitored value the task returns, and the sweep summary ranks its
trials like a grid. (A run that stops with a user error does not stop a sweep: test_train.py's
sweep test.)"""

import csv
import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import TINY, as_user_in, compose_config, run_main

SWEEP = [
    "data.split.test=6",
    "data.split.val=12",
    "model.weights=none",
    "trainer.max_epochs=1",
    "train_eval_images=0",
    *TINY,
]
SEARCHED = {  # the search space of conf/hparams_search/optuna.yaml
    "optimizer.lr": (1e-5, 1e-1),
    "optimizer.weight_decay": (1e-6, 1e-1),
    "model.label_smoothing": (0.0, 0.2),
}


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "sweep_summary.csv").open() as handle:
        return list(csv.DictReader(handle))


def job_overrides(job: Path) -> dict[str, str]:
    lines = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    return dict(line.split("=", 1) for line in lines)


@pytest.mark.parametrize(("mode", "direction"), [("max", "maximize"), ("min", "minimize")])
def test_optuna_direction_follows_monitor_mode(mode, direction):
    cfg = compose_config("hparams_search=optuna", f"monitor_mode={mode}", hydra_node=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == direction
    assert sweeper.sampler.seed == cfg.seed
    assert set(sweeper.params) == set(SEARCHED)
    for key in SEARCHED:  # each searched key is a key of the config, not a new one
        assert OmegaConf.select(cfg, key, default=None) is not None, key


def test_optuna_trials_are_ranked_and_its_best_is_the_summarys_winner(tmp_path, capsys, scene_root):
    sweep_dir = tmp_path / "sweep"
    with as_user_in(tmp_path):
        result = run_main(
            "-m",
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            f"data.root={scene_root}",
            *SWEEP,
            f"hydra.sweep.dir={sweep_dir}",
            cwd=tmp_path,
            capsys=capsys,
        )
    assert result.returncode == 0, result.stderr[-3000:]

    rows = summary_rows(sweep_dir)
    assert [row["rank"] for row in rows] == ["1", "2"]
    assert [row["status"] for row in rows] == ["ok"] * 2
    values = [float(row["value"]) for row in rows]
    assert values == sorted(values, reverse=True)  # val/map, maximised

    trials = {job.name: job_overrides(job) for job in sorted(sweep_dir.glob("[0-9]"))}
    assert len(trials) == 2
    assert len({trial["optimizer.lr"] for trial in trials.values()}) == 2  # two points
    for trial in trials.values():
        for key, (low, high) in SEARCHED.items():
            assert low <= float(trial[key]) <= high, (key, trial[key])

    optuna = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    winner = rows[0]["run"]
    metrics = json.loads((sweep_dir / winner / "metrics.json").read_text())
    assert optuna["best_value"] == metrics["monitor"]["value"]  # what the task returned
    assert optuna["best_params"] == {key: float(trials[winner][key]) for key in SEARCHED}
    assert (sweep_dir / "best_model.pt").read_bytes() == (
        sweep_dir / winner / "best_model.pt"
    ).read_bytes()
