"""Every config composes; every experiment and debug preset builds its data, model and trainer."""

import dataclasses
import json
import math
from pathlib import Path

import hydra
import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from rnnlab.cli import model_settings
from rnnlab.cli.app import instantiate_all
from rnnlab.cli.train import lm_module, train
from rnnlab.data.vocab import Vocab
from rnnlab.nn.lm import MIXERS, RNNLM, ModelConfig
from tests.conftest import CONFIG_DIR, REPO, TINY_RUN, compose_train


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


GROUP_OVERRIDES = [
    f"{group}={option}"
    for group in (
        *("data", "model", "model/scheduler", "trainer", "logger", "callbacks", "checkpoint"),
        "paths",
        *("experiment", "debug"),
    )
    for option in group_options(group)
]


@pytest.mark.parametrize("override", GROUP_OVERRIDES)
def test_every_config_composes_and_resolves(override: str, tmp_path: Path):
    cfg = compose_train([override], output_dir=tmp_path)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert cfg.model.backend in ("builtin", "custom")


@pytest.mark.parametrize(
    "override",
    [f"experiment={o}" for o in group_options("experiment")]
    + [f"debug={o}" for o in group_options("debug")]
    + ["trainer=ddp", "model.backend=custom"],
)
def test_presets_instantiate_data_model_trainer(override: str, tmp_path: Path):
    cfg = compose_train([override], output_dir=tmp_path)
    datamodule = hydra.utils.instantiate(cfg.data)  # no download: that happens in prepare_data
    vocab = Vocab.build("a tiny corpus\n", datamodule.level)
    module = lm_module(cfg.model, ModelConfig.from_settings(cfg.model), vocab.to_dict())
    assert module.net.backend == cfg.model.backend
    trainer_cfg = cfg.trainer
    if cfg.trainer.get("strategy") == "ddp":  # building a DDP trainer needs no processes yet
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"accelerator": "cpu"})
    trainer = hydra.utils.instantiate(
        trainer_cfg, callbacks=instantiate_all(cfg.callbacks), logger=instantiate_all(cfg.logger)
    )
    assert trainer.max_epochs == cfg.trainer.max_epochs or cfg.trainer.get("fast_dev_run")


def test_train_defaults_are_the_main_job(tmp_path: Path):
    cfg = compose_train(output_dir=tmp_path)
    assert (cfg.data.source, cfg.data.level, cfg.model.backend) == ("embedded", "char", "builtin")
    assert cfg.trainer.use_distributed_sampler is False
    assert HydraConfig.get().run.dir.startswith("logs/train/runs/")
    assert HydraConfig.get().sweep.dir.startswith("logs/train/multiruns/")


@pytest.mark.parametrize(
    "override",
    [f"debug={o}" for o in group_options("debug")]
    + [f"logger={o}" for o in group_options("logger")]
    + ["callbacks=none", "checkpoint=none", "model.scheduler=null"],
)
def test_presets_train_a_tiny_run(override: str, tiny_corpus: Path, tmp_path: Path):
    """Composing is not enough: each preset runs train() to the end on a tiny corpus."""
    cfg = compose_train(
        [
            override,
            f"data.path={tiny_corpus}",
            *TINY_RUN,
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=2",
            "trainer.limit_test_batches=2",
            "trainer.log_every_n_steps=1",
        ],
        output_dir=tmp_path,
    )
    metrics = train(cfg)
    assert (tmp_path / "metrics.json").is_file()
    assert math.isfinite(metrics["test"]["loss"])


def test_the_model_group_takes_its_settings_and_defaults_from_the_dataclass(tmp_path: Path):
    """ModelConfig is the one place a model setting is written: every field is a key of
    the model group with the dataclass's default, and a preset's values reach it."""
    model = compose_train(output_dir=tmp_path).model
    assert ModelConfig.from_settings(model) == ModelConfig()
    for field in dataclasses.fields(ModelConfig):
        assert field.name in model, field.name
    text = model_settings.default_yaml().read_text()
    assert model_settings.rendered(text) == text, "run: python -m rnnlab.cli.model_settings"
    assert "\n# units of each recurrent layer (H)\nhidden_size: 256\n" in text
    preset = compose_train(["experiment=word_rnn"], output_dir=tmp_path).model
    assert ModelConfig.from_settings(preset) == ModelConfig(
        output="auto", tie_weights=True, hidden_size=512, dropout=0.25
    )
    # WikiText-2's 33,278 types get the adaptive softmax, a 10k cut the full one
    resolved = ModelConfig.from_settings(preset)
    assert resolved.for_vocab(33_278).output == "adaptive"
    assert resolved.for_vocab(10_000).output == "softmax"
    rnn = compose_train(["experiment=word_rnn"], output_dir=tmp_path).model.optimizer
    assert (rnn._target_, rnn.weight_decay) == ("torch.optim.AdamW", 0.1)
    # the LSTM preset takes AdamW too, since it held there side by side with Adam
    lstm = compose_train(["experiment=word_lstm"], output_dir=tmp_path).model
    assert (lstm.optimizer._target_, lstm.optimizer.weight_decay, lstm.cell) == (
        "torch.optim.AdamW",
        0.1,
        "lstm",
    )


def test_the_shakespeare_presets_are_the_runs_the_readme_measured(tmp_path: Path):
    """The tanh preset is two layers over a 29-minute budget, half of it held at the first
    rate; the LSTM preset keeps the settings its record was measured with (the plateau
    rule), not whatever the tanh preset becomes."""
    tanh = compose_train(["experiment=shakespeare_char"], output_dir=tmp_path)
    assert ModelConfig.from_settings(tanh.model) == ModelConfig(
        hidden_size=512, num_layers=2, dropout=0.25
    )
    assert (tanh.data.batch_size, tanh.data.seq_len) == (32, 100)
    assert (tanh.trainer.max_time, tanh.trainer.max_epochs) == ("00:00:29:00", -1)
    lstm = compose_train(["experiment=shakespeare_char_lstm"], output_dir=tmp_path)
    assert ModelConfig.from_settings(lstm.model) == ModelConfig(
        cell="lstm", hidden_size=512, num_layers=1, dropout=0.25
    )
    assert (lstm.data.batch_size, lstm.trainer.max_time) == (64, "00:00:43:00")
    assert tanh.model.scheduler._target_.endswith("BudgetDecay")
    assert (tanh.model.scheduler.shape, tanh.model.scheduler.hold) == ("linear", 0.5)
    assert lstm.model.scheduler._target_.endswith("ReduceLROnPlateau")
    for cfg in (tanh, lstm):
        assert (cfg.data.seq_len, cfg.data.split) == (100, [0.9, 0.1, 0.0])


def test_wikitext2_word_is_an_alias_of_word_rnn(tmp_path: Path):
    """The former preset's name composes the very same run."""
    alias = compose_train(["experiment=wikitext2_word"], output_dir=tmp_path)
    preset = compose_train(["experiment=word_rnn"], output_dir=tmp_path)
    assert OmegaConf.to_container(alias) == OmegaConf.to_container(preset)


def test_the_checkpoint_directory_is_named_once(tmp_path: Path):
    cfg = compose_train(output_dir=tmp_path)
    assert cfg.paths.ckpt_dir == f"{tmp_path}/checkpoints"
    assert cfg.checkpoint.dirpath == cfg.paths.ckpt_dir
    lines = [line for p in CONFIG_DIR.rglob("*.yaml") for line in p.read_text().splitlines()]
    assert sum("/checkpoints" in line.split("#")[0] for line in lines) == 1


def test_data_embedded_is_data_source_embedded(tmp_path: Path):
    """One word, one meaning: the default data option is the embedded corpus by name."""
    by_option = compose_train(["data=embedded"], output_dir=tmp_path).data
    by_source = compose_train(["data.source=embedded"], output_dir=tmp_path).data
    assert by_option == by_source == compose_train(output_dir=tmp_path).data
    assert by_option.source == "embedded"


def test_compare_cells_sweeps_every_cell_on_both_backends_and_three_seeds(tmp_path: Path):
    cfg = compose_train(["experiment=compare_cells"], output_dir=tmp_path)
    params = dict(HydraConfig.get().sweeper.params)
    assert params == {
        "model.backend": "builtin,custom",
        "seed": "1,2,3",
        "model.cell": "rnn,gru,lstm",
    }
    assert (cfg.task_name, cfg.trainer.max_epochs) == ("compare_cells", 10)
    assert HydraConfig.get().callbacks.sweep_report.compare is True


def test_experiment_mixers_gives_every_mixer_about_the_same_parameters(tmp_path: Path):
    """Each mixer of the equal-budget comparison, at its own width, within 10% of the
    others in parameters (on tiny-shakespeare's 65 characters); the sweep runs them all."""
    counts = {}
    for mixer in MIXERS:
        cfg = compose_train(["experiment=mixers", f"mixer={mixer}"], output_dir=tmp_path)
        config = ModelConfig.from_settings(cfg.model)
        assert (config.cell, config.arch, cfg.trainer.max_time) == (mixer, "blocks", "00:00:29:00")
        counts[mixer] = sum(p.numel() for p in RNNLM(65, config).parameters())
    assert max(counts.values()) <= 1.10 * min(counts.values()), counts
    compose_train(["experiment=mixers"], output_dir=tmp_path)
    assert HydraConfig.get().sweeper.params.mixer.split(",") == list(MIXERS)
    assert HydraConfig.get().launcher.n_jobs == 2


def test_each_mixer_trains_at_the_best_rate_of_its_search(tmp_path: Path):
    """The rates in configs/mixer/ are the search's best (docs/results/mixers_search.json,
    lowest val loss per cell); they reach the experiment whether the mixer is named or is
    the experiment's own, and a rate on the command line still goes over them."""
    record = json.loads((REPO / "docs/results/mixers_search.json").read_text())
    cell, lr, loss = (record["columns"].index(c) for c in ("cell", "lr", "val loss (nats)"))
    assert {row[cell] for row in record["rows"]} == set(MIXERS)
    tried = {m: [row for row in record["rows"] if row[cell] == m] for m in MIXERS}
    best = {m: min(rows, key=lambda row: row[loss])[lr] for m, rows in tried.items()}
    for mixer in MIXERS:
        cfg = compose_train(["experiment=mixers", f"mixer={mixer}"], output_dir=tmp_path)
        assert cfg.model.optimizer.lr == best[mixer], mixer
    own = compose_train(["experiment=shakespeare_char_mingru"], output_dir=tmp_path)
    assert own.model.optimizer.lr == best["mingru"]
    overridden = ["experiment=mixers", "mixer=gru", "model.optimizer.lr=0.01"]
    cfg = compose_train(overridden, output_dir=tmp_path)
    assert cfg.model.optimizer.lr == 0.01


def test_a_mixer_goes_over_any_experiments_core(tmp_path: Path):
    """mixer=<name> sets the cell, backend and width over what the experiment chose, and
    the rest of the experiment stays: the word leg runs the mixers on word_mingru's blocks."""
    word = compose_train(["experiment=word_mingru"], output_dir=tmp_path)
    cfg = compose_train(["experiment=word_mingru", "mixer=attention"], output_dir=tmp_path)
    assert (cfg.model.cell, cfg.model.backend, cfg.model.hidden_size) == (
        "attention",
        "builtin",
        240,
    )
    assert (cfg.data.seq_len, cfg.model.num_layers) == (word.data.seq_len, word.model.num_layers)
    assert cfg.trainer.max_time == word.trainer.max_time
    compose_train(["experiment=word_mixers"], output_dir=tmp_path)
    assert HydraConfig.get().sweeper.params.mixer == "mingru,gru,lstm,attention"
