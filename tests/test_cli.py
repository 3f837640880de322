"""The command line as Hydra users expect it: --help, --cfg job, overrides, one-line errors,
and the configs found from an editable and from a normal (non-editable) install.

The tables of mistakes go through the entry point's main() in this process (run_main); what
only a fresh interpreter shows runs as `python -m finetune`: which modules an answer imports,
--help, the full Hydra error, the installs' configs and console script."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from finetune.errors import UserError

from conftest import (
    REPO,
    TINY,
    assert_one_line_error,
    assert_run_refuses,
    cli_env,
    compose_config,
    run_cli,
    run_main,
)


def imported_modules(*arguments: str, cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the CLI under `python -X importtime` and return the top-level modules it imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "finetune", *arguments],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    modules = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return result, modules


def assert_hydra_error_in_one_line(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2 and stderr is exactly one `error:` line (Hydra's own report would be 2-20 lines)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    return lines[0]


def test_cfg_job_prints_the_composed_config_quickly(tmp_path):
    result, modules = imported_modules(
        "--cfg", "job", "data=cifar10", "optimizer.lr=0.01", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kind: cifar10" in result.stdout and "lr: 0.01" in result.stdout
    assert "mode: train" in result.stdout
    assert "hydra" in modules and "omegaconf" in modules  # the import log was read
    assert not {"torch", "lightning", "torchvision"} & modules, "heavy imports before composition"
    assert not (tmp_path / "outputs").exists()  # printing the config writes nothing


@pytest.mark.parametrize(
    "arguments",
    [["--help"], ["trainer.max_epoch=3"], ["hydra.run.dir={tmp}/run"]],
    ids=["help", "unknown-key", "existing-run-folder"],
)
def test_help_and_command_line_errors_import_neither_torch_nor_lightning(tmp_path, arguments):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    arguments = [argument.format(tmp=tmp_path) for argument in arguments]
    result, modules = imported_modules(*arguments, cwd=tmp_path)
    assert "hydra" in modules, result.stderr[-3000:]
    assert not {"torch", "lightning", "torchvision"} & modules


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["optimizer.lr=-1", "experiment=demo"], ["optimizer.lr=-1 must be a number > 0"]),
        (["data.loader.batch_size=0", "experiment=demo"], ["data.loader.batch_size=0", ">= 2"]),
        (["optimizer.name=adam", "experiment=demo"], ["optimizer.name='adam'", "sgd, adamw"]),
        # the whole default config passes validation first (trainer.precision=auto included)
        (["mode=eval"], ["ckpt is not set: add ckpt=path/to/best_model.pt (mode=eval)"]),
        (["mode=eval", "ckpt=gone.pt"], ["ckpt=gone.pt does not exist"]),
        (["mode=report"], ["mode=report needs the sweep folder"]),
        (["mode=report", "sweep=."], ["sweep=. is not a sweep folder"]),
    ],
    ids=["lr", "batch-size", "optimizer-name", "no-ckpt", "ckpt-gone", "no-sweep", "not-a-sweep"],
)
def test_config_mistakes_answer_before_torch_and_lightning(tmp_path, arguments, words):
    """A value mistake, or a ckpt / sweep folder not given or not there, is said before the
    task imports torch and Lightning (5 s) and before Hydra makes a run folder: the one `error:`
    line comes in about half a second, and nothing is written."""
    result, modules = imported_modules(*arguments, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert_one_line_error(result, *words)
    assert "hydra" in modules, result.stderr[-3000:]
    assert not {"torch", "lightning", "torchvision"} & modules
    assert not (tmp_path / "outputs").exists()


def test_help_says_what_to_type_before_the_groups_and_the_config(tmp_path):
    """--help: what the package does, the modes and what each needs, the commands people type
    most, the demo, the README and --cfg job; then the config groups; the config last."""
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    intro, groups_header, rest = text.partition("== Config groups ==")
    assert groups_header, text
    assert len(intro.strip().splitlines()) <= 60, intro
    assert "fine-tune" in intro.lower() and "resnet18" in intro.lower()
    modes = {
        "train": ["data.root="],
        "eval": ["ckpt="],
        "analyze": ["ckpt=", "analysis.imagenet_root="],
        "predict": ["ckpt=", "predict.input="],
        "export": ["ckpt=", "export.format="],
    }
    for mode, needs in modes.items():
        line = next((x for x in intro.splitlines() if x.strip().startswith(mode + " ")), "")
        assert line, f"no line for mode {mode}:\n{intro}"
        for need in needs:
            assert need in line, line
    commands = [
        "python -m finetune data.root=/path/to/mandatory1_data",
        "trainer.accelerator=gpu",
        "trainer=gpu",
        "python -m finetune -m data.root=/path/to/mandatory1_data optimizer.lr=",
        "mode=eval ckpt=",
        "eval.reference=",
        "mode=analyze ckpt=",
        "analysis.imagenet_root=",
        "analysis.cifar_root=",
        "python -m finetune experiment=demo",
        "python -m finetune --cfg job",
    ]
    for command in commands:
        assert command in intro, command
    assert "README.md" in intro and "pip show finetune" in intro
    groups, config_header, config = rest.partition("== Config ==")
    assert "$" not in intro + groups  # every template variable was substituted
    for group in ("data: cifar10, demo, scenes", "trainer: cpu, ddp, gpu", "optimizer: adamw, sgd"):
        assert group in groups
    assert "experiment: demo" in groups
    assert "hydra/" not in groups  # the app's groups only
    assert config_header and "mode: train" in config and "lr: 0.001" in config
    assert "Powered by Hydra" not in intro  # Hydra's own blurb is not the first thing shown


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["data=scnes"], ["unknown data=scnes", "scenes"]),
        (["-m", "optimizer=sgd,adam"], ["unknown optimizer=adam", "adamw"]),
        (["mode=bogus"], ["unknown mode", "train, eval"]),
        (["mode=train"], ["data.root is not set", "experiment=demo"]),
    ],
)
def test_user_mistakes_end_in_one_line(tmp_path, capsys, overrides, words):
    """Through the entry point: exit 2, one `error:` line, no traceback."""
    result = run_main(*overrides, cwd=tmp_path, capsys=capsys)
    assert_one_line_error(result, *words)
    assert result.returncode == 2
    assert not (tmp_path / "outputs").exists()  # said before Hydra makes a run folder


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["mode=train", "data.root=/no/such/folder"], ["/no/such/folder", "does not exist"]),
        (["experiment=demo", "data.loader.batch_size=-4"], ["batch_size", ">= 2"]),
        (["experiment=demo", "optimizer.lr=-0.1"], ["optimizer.lr", "> 0"]),
        (["experiment=demo", "optimizer.lr=fast"], ["optimizer.lr", "> 0"]),
        (["experiment=demo", "data.split.test=2.5"], ["data.split.test"]),
        (
            ["experiment=demo", "monitor=val/mAP"],
            ["monitor='val/mAP'", "val/<loss|acc|acc_mean|map>"],
        ),
    ],
)
def test_bad_values_are_one_user_error(user_folder, overrides, words):
    """The same checks in-process (`finetune.run` raises the line the CLI prints after
    `error:`, as test_api proves)."""
    assert_run_refuses(*overrides)(*words)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            ["trainer.max_epoch=3"],
            ["unknown key trainer.max_epoch", "trainer.max_epochs", "+trainer.max_epoch=3"],
        ),
        (["trainer.max_epoch=3"], ["passes it to lightning's trainer"]),
        (["data.rootx=/x"], ["unknown key data.rootx", "did you mean data.root"]),
        (["optimiser.lr=0.1"], ["unknown key optimiser.lr", "did you mean optimizer.lr"]),
        (["+model.foo=1"], ["+model.foo=1 adds key model.foo, which nothing reads", "+trainer."]),
        (["+early_stopping.pat=1"], ["which nothing reads", "early_stopping.patience"]),
        (["++data.rootx=/x"], ["++data.rootx=/x adds key data.rootx", "did you mean data.root"]),
        (["train"], ["bad override 'train'", "did you mean mode=train?"]),
        (["data.root", "=", "/x"], ["no spaces around '='", "write data.root=/x as one word"]),
        (["data.root=", "/x"], ["no spaces around '='", "write data.root=/x as one word"]),
        (["lr=0.1"], ["unknown key lr", "optimizer.lr"]),
        (["hydra.run.dirr=x"], ["unknown key hydra.run.dirr", "hydra.run.dir"]),
        (["-m", "trainer.max_epoch=1,2"], ["unknown key trainer.max_epoch", "trainer.max_epochs"]),
        (["-m", "optimizer.lr=abc,0.1", "experiment=demo"], ["optimizer.lr='abc'", "a number"]),
        (["-m", "optimizer.lr=0.1,0.01"], ["data.root is not set"]),  # not once per run
        (["--cfg", "job", "trainer.max_epoch=3"], ["trainer.max_epochs"]),
        (["optimizer.lr=[1,2"], ["bad override 'optimizer.lr=[1,2'"]),
        (["=3"], ["bad override '=3'", "key=value"]),
        (["foo"], ["bad override 'foo'", "key=value"]),
        (["optimizer.lr=0.1,0.01"], ["optimizer.lr=0.1,0.01", "--multirun"]),
        (["data.root=/d/a,b"], ["a comma makes a list or a sweep", """'data.root="/d/a,b"'"""]),
        (["data.root=/d/k=v"], ["quote the value", """'data.root="/d/k=v"'"""]),
        (["data.root=/d", "-m", "seed=1,2"], ["-m after the overrides: put the flags first"]),
        (["-m", "data.root=/d", 'hydra.sweeper.params={optimizer.lr:"0.1,0.2"}'], ["sweeper"]),
        (
            ["data.root=/d", "hydra.run.dir=${oc.env:NO_SUCH_VARIABLE}/r"],
            ["hydra.run.dir=${oc.env:NO_SUCH_VARIABLE}/r cannot be resolved", "NO_SUCH_VARIABLE"],
        ),
        (["+trainer.max_epochs=3"], ["trainer.max_epochs", "++trainer.max_epochs=3"]),
        (["~trainer.no_such_flag"], ["trainer.no_such_flag"]),
        (["hydra/launcher=nope"], ["hydra/launcher/nope", "basic"]),
        (["--no-such-flag"], ["--no-such-flag"]),
        (["-m", "--cfg", "job"], ["only one of"]),
        (
            ["data.root=/data/scènes"],
            ["LexerNoViableAltException", "quote the value", """'data.root="/data/scènes"'"""],
        ),
        (
            ["experiment=report", "data.root=/data"],
            ["experiment=report", "add -m", "optimizer.lr=1e-2,1e-3,1e-4", "python -m finetune -m"],
        ),
        (["report.after_sweep=true", "data.root=/data"], ["report.after_sweep=true", "add -m"]),
    ],
)
def test_hydra_errors_end_in_one_line_and_write_nothing(tmp_path, capsys, overrides, words):
    assert_hydra_error_in_one_line(run_main(*overrides, cwd=tmp_path, capsys=capsys), *words)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("value", ["/data/scènes", "/data/scènes bad ü", "/data/写真", "/d/it's"])
def test_the_quoting_hint_is_an_override_hydra_reads(value):
    """The override the lexer error suggests composes to the value the user meant."""
    from finetune.choices import check_command_line

    with pytest.raises(UserError) as raised:
        check_command_line([f"data.root={value}"], REPO / "conf")
    suggested = str(raised.value).split("as in '", 1)[1].rsplit("' (the outer", 1)[0]
    check_command_line([suggested], REPO / "conf")
    assert compose_config(suggested).data.root == value


def test_full_hydra_error_is_still_available_for_debugging(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "finetune", "trainer.max_epoch=3"],
        cwd=tmp_path,
        env=cli_env() | {"HYDRA_FULL_ERROR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "key", "value"),
    [
        (["+trainer.max_time=00:00:10:00"], "trainer.max_time", "00:00:10:00"),
        (["++trainer.max_epochs=3"], "trainer.max_epochs", 3),
        (["~trainer.max_steps"], "trainer.max_steps", None),
        (["hydra.job.chdir=false", "hydra/launcher=local"], "mode", "train"),
    ],
)
def test_valid_command_lines_still_compose(tmp_path, capsys, arguments, key, value):
    """Hydra's grammar (+, ++, ~, hydra.* keys and hydra/ groups) passes the pre-check."""
    result = run_main("--cfg", "job", *arguments, cwd=tmp_path, capsys=capsys)
    assert result.returncode == 0, result.stderr
    assert OmegaConf.select(OmegaConf.create(result.stdout), key) == value


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "optimizer.lr=0.1,0.01", "data=demo,cifar10"],
        ["-m", "hparams_search=optuna", "optimizer.lr=interval(0.001,0.1)"],
        ["-m", "optimizer.lr=range(1,3)", "data=glob(*)", "+trainer.max_time=choice(a,b)"],
        ["-m", "hydra/launcher=local", "seed=1,2", "hydra.sweep.dir={tmp}/new"],
        ["-m", "experiment=report", "data.root=/data"],
        ["hydra.mode=MULTIRUN", "experiment=report", "data.root=/data"],  # -m, set as a value
        ["--cfg", "job", "experiment=report"],
    ],
)
def test_sweeps_pass_the_pre_check(tmp_path, argv):
    from hydra.core.global_hydra import GlobalHydra

    from finetune.choices import check_command_line

    check_command_line([argument.format(tmp=tmp_path) for argument in argv], REPO / "conf")
    assert not GlobalHydra.instance().is_initialized()  # the real run starts from scratch


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA GPU here")
def test_gpu_requested_without_gpu(user_folder, scene_root):
    assert_run_refuses(
        f"data.root={scene_root}",
        "data.split.test=12",
        "data.split.val=12",
        "model.weights=none",
        "trainer.accelerator=gpu",
        *TINY,
    )("trainer.accelerator=gpu", "no GPU is usable here", "trainer=cpu")


def trainer_cfg(**trainer: object) -> DictConfig:
    """The config build_trainer reads: conf/trainer/cpu.yaml with `trainer` changed (and the
    precision resolved, as the tasks do before they build a Trainer)."""
    return OmegaConf.merge(
        OmegaConf.load(REPO / "conf" / "trainer" / "cpu.yaml"),
        {"trainer": {"precision": "32-true", **trainer}},
    )


@pytest.fixture
def one_cuda_gpu(monkeypatch):
    """A machine with one CUDA GPU, as torch and Lightning see it (Trainer() only counts them)."""
    import lightning.fabric.accelerators.cuda

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(lightning.fabric.accelerators.cuda, "num_cuda_devices", lambda: 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA GPU here")
@pytest.mark.parametrize(
    "trainer",
    [{"accelerator": "gpu"}, {"accelerator": "cuda"}, {"accelerator": "gpu", "devices": 4}],
)
def test_no_cuda_device_at_all_says_so(tmp_path, trainer):
    from finetune.trainer import build_trainer

    with pytest.raises(UserError, match="no GPU is usable here.*use trainer=cpu"):
        build_trainer(trainer_cfg(**trainer), tmp_path)


@pytest.mark.parametrize(
    ("trainer", "reason"),
    [
        (
            {"accelerator": "gpu", "devices": 4},
            "You requested gpu: [0, 1, 2, 3] But your machine only has: [0]",
        ),
        ({"accelerator": "gpu", "strategy": "ddp", "devices": 2}, "only has: [0]"),
        ({"accelerator": "gpu", "devices": 0}, "Trainer(devices=0)` value is not a valid input"),
        ({"accelerator": "cuda", "devices": "0,0"}, "Device ID's (GPU) must be unique"),
    ],
)
def test_lightnings_gpu_reason_is_kept_where_a_gpu_exists(tmp_path, one_cuda_gpu, trainer, reason):
    from finetune.trainer import build_trainer

    with pytest.raises(UserError) as raised:
        build_trainer(trainer_cfg(**trainer), tmp_path)
    message = str(raised.value)
    assert reason in message and "\n" not in message
    assert "no GPU is usable" not in message


def test_lightnings_reason_is_kept_on_cpu(tmp_path):
    from finetune.trainer import build_trainer

    with pytest.raises(UserError, match=r"rejected by Lightning: `Trainer\(devices=0\)`"):
        build_trainer(trainer_cfg(devices=0), tmp_path)


@pytest.mark.gpu
def test_more_devices_than_gpus_names_lightnings_reason(tmp_path):
    from finetune.trainer import build_trainer

    count = torch.cuda.device_count()
    with pytest.raises(UserError, match=f"But your machine only has: {list(range(count))}"):
        build_trainer(trainer_cfg(accelerator="gpu", devices=count + 1), tmp_path)


def test_non_editable_install_finds_its_configs(tmp_path):
    """`pip install .` (no editable link to the checkout), run from another folder."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "finetune" / "conf" / "config.yaml").is_file()
    assert (target / "finetune" / "conf" / "data" / "scenes.yaml").is_file()
    env = cli_env() | {"PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import finetune; print(finetune.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(target))
    result = subprocess.run(
        [sys.executable, "-m", "finetune", "--cfg", "job", "data=demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "kind: demo" in result.stdout
    assert (
        f"file://{target}/finetune/conf"
        in subprocess.run(
            [sys.executable, "-m", "finetune", "--info", "searchpath"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )


def test_console_script_of_the_editable_install(tmp_path):
    script = Path(sys.executable).parent / "finetune"
    result = subprocess.run(
        [str(script), "--cfg", "job"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "kind: folder" in result.stdout


def test_the_entry_point_freezes_the_collector_before_the_interpreter_exits(tmp_path, monkeypatch):
    """After its run, main() moves every object to the collector's permanent generation: the
    interpreter's exit then skips walking torch's and Lightning's ~500k objects (~1 s a run)."""
    import gc

    from finetune.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["finetune", "--cfg", "job", "data=demo"])
    gc.unfreeze()
    try:
        main()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # this test process goes on collecting as before


def test_version_names_the_package_and_its_libraries(tmp_path, capsys):
    result = run_main("--version", cwd=tmp_path, capsys=capsys)
    line = result.stdout.strip()
    assert result.returncode == 0 and "\n" not in line, result
    assert line.startswith("finetune 0.") and f"torch {torch.__version__.split('+')[0]}" in line
    assert "hydra-core 1.3" in line and "lightning " in line


def test_shell_completion_without_what_to_do_is_one_line(tmp_path, capsys):
    result = run_main("--shell-completion", cwd=tmp_path, capsys=capsys)
    assert_hydra_error_in_one_line(result, "install=bash", "uninstall=bash", "query=bash")
    installed = run_main("-sc", "install=bash", cwd=tmp_path, capsys=capsys)
    assert installed.returncode == 0 and "hydra_bash_completion" in installed.stdout
