"""Sweeps: the summary lists every job, one bad job never stops the others; Optuna; launchers."""

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from rnnlab.cli.app import job_dir
from rnnlab.report.runs import holds_runs
from rnnlab.report.sweep import SweepReport
from tests.conftest import CONFIG_DIR, TINY_RUN

SMALL = [o for o in TINY_RUN if not o.startswith("model.hidden_size")]


def test_sweep_summary_lists_every_job_with_failures(cli, tiny_corpus: Path, tmp_path: Path):
    sweep = tmp_path / "sweep"
    result = cli(
        "train",
        "-m",
        f"data.path={tiny_corpus}",
        *SMALL,
        "model.hidden_size=0,16",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.code == 0, result.err[-2000:]
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    # each job (and its TensorBoard run) is named by what it varies, not by its number alone
    names = ["0_model.hidden_size-0", "1_model.hidden_size-16"]
    assert [(r["run"], r["status"]) for r in rows] == [(names[0], "failed"), (names[1], "done")]
    assert (sweep / names[1] / "tensorboard").is_dir()
    assert rows[0]["error"] == "model.hidden_size must be at least 1, got 0."
    assert "model.hidden_size=0" in rows[0]["overrides"]
    assert rows[1]["hidden_size"] == "16" and math.isfinite(float(rows[1]["best_val_ppl"]))
    assert (sweep / "summary.md").read_text().count("\n") == 2 + 2
    # the path of a job, as printed, is a path on rnnlab's own command line
    checkpoint = sweep / names[1] / "checkpoints" / "last.ckpt"
    sampled = cli("sample", f"ckpt_path={checkpoint}", "num_tokens=5")
    assert sampled.code == 0, sampled.err[-2000:]


def test_a_crashed_job_gets_its_one_line_error(tmp_path: Path):
    job_dir = tmp_path / "0"
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra/overrides.yaml").write_text("- model.hidden_size=8\n")
    config = OmegaConf.create(
        {
            "hydra": {
                "mode": RunMode.MULTIRUN,
                "runtime": {"output_dir": str(job_dir)},
                "sweep": {"dir": str(tmp_path)},
            }
        }
    )
    failed = JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("boom\nstack"))
    SweepReport().on_job_end(config, failed)
    assert (job_dir / "error.txt").read_text() == "RuntimeError: boom"
    (row,) = csv.DictReader((tmp_path / "summary.csv").open())
    assert row["status"] == "failed" and row["overrides"] == "model.hidden_size=8"


def test_a_sweep_dir_without_runs_gets_no_summary(tmp_path: Path):
    (tmp_path / "notes").mkdir()  # a directory, but no job's
    assert not holds_runs(tmp_path)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    SweepReport().on_multirun_end(config)
    assert not (tmp_path / "summary.csv").exists()
    (tmp_path / "0/.hydra").mkdir(parents=True)
    assert holds_runs(tmp_path)


def test_optuna_search_runs_trials_and_keeps_its_study_in_sqlite(
    cli, tiny_corpus: Path, tmp_path: Path
):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    def search(n_trials: int, sweep: Path, seed: int):
        return cli(
            "train",
            "-m",
            "hparams_search=optuna",
            f"data.path={tiny_corpus}",
            *[o for o in SMALL if not o.startswith("data.seq_len")],
            "trainer.max_epochs=1",
            "model.hidden_size=choice(8,16)",
            "data.seq_len=choice(8,16)",
            f"hydra.sweeper.n_trials={n_trials}",
            f"hydra.sweeper.sampler.seed={seed}",
            f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=tiny",
            f"hydra.sweep.dir={sweep}",
        )

    result = search(3, tmp_path / "first", seed=1)
    assert result.code == 0, result.err[-3000:]
    rows = list(csv.DictReader((tmp_path / "first/summary.csv").open()))
    assert [r["status"] for r in rows] == ["done"] * 3
    assert {r["hidden_size"] for r in rows} <= {"8", "16"}
    best = yaml.safe_load((tmp_path / "first/optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(float(r["best_val_ppl"]) for r in rows))
    assert 3e-4 <= best["best_params"]["model.optimizer.lr"] <= 1e-2

    # the same study goes on from the database, with a new seed so as not to repeat trial 0
    result = search(1, tmp_path / "second", seed=2)
    assert result.code == 0, result.err[-3000:]
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.trials[3].params != study.trials[0].params  # the same seed would repeat it
    assert sorted(t.value for t in study.trials[:3]) == pytest.approx(
        sorted(float(r["best_val_ppl"]) for r in rows)
    )


def test_joblib_launcher_runs_jobs_in_parallel_with_one_thread_each(
    cli, tiny_corpus: Path, tmp_path: Path
):
    """The jobs run in joblib's worker processes, each with one torch thread."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    result = cli(
        "train",
        "-m",
        "launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"data.path={tiny_corpus}",
        *SMALL,
        "trainer.max_epochs=1",
        "model.hidden_size=8,16",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.code == 0, result.err[-3000:]
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [(r["hidden_size"], r["status"]) for r in rows] == [("8", "done"), ("16", "done")]
    for row in rows:
        assert json.loads((sweep / row["run"] / "metrics.json").read_text())["torch_threads"] == 1


def test_slurm_launcher_asks_for_one_task_per_device(tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(
            "train",
            ["launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
            return_hydra_config=True,
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["nodes"]) == (4, 4, 2)


@pytest.mark.parametrize(
    ("num", "overrides", "name"),
    [
        (
            3,
            "model.backend-custom+model.hidden_size-128",
            "3_model.backend-custom+model.hidden_size-128",
        ),
        (0, "", "0"),
        (1, "prompt-a/b", "1_prompt-a_b"),
        (2, "data.split-[0.9,0.1,0]+prompt-'a b'", "2_data.split-_0.9_0.1_0_+prompt-_a_b_"),
        (5, "model.optimizer.lr-1e-3+seed--1", "5_model.optimizer.lr-1e-3+seed--1"),
        (12, "x-" + "9" * 300, "12_x-" + "9" * 145 + "..."),
    ],
)
def test_a_jobs_directory_is_its_number_and_overrides(num: int, overrides: str, name: str):
    """Named by what the job varies, in characters Hydra's grammar takes as a plain value."""
    assert job_dir(num, overrides) == name
    path = f"logs/train/multiruns/2026-12-07_02-21-17/{name}/checkpoints/last.ckpt"
    assert OverridesParser.create().parse_override(f"ckpt_path={path}").value() == path
