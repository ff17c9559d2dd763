"""``rnnlab-sample ckpt_path=... prompt="ROMEO:"`` (or ``python -m rnnlab.cli.sample``).

Everything comes from the checkpoint (weights, vocabulary, model sizes), so a
checkpoint is all it needs; it samples on CPU by default, whichever device and
backend trained it.
"""

from __future__ import annotations

import hydra
import rich
import rich.panel
import rich.text
import torch
from omegaconf import DictConfig

from rnnlab.cli.app import config_dir, exit_on_user_error
from rnnlab.cli.checks import check_sample
from rnnlab.nn.sampling import sample_text
from rnnlab.training.module import RNNLMModule


def torch_device(device: str) -> str:
    """``cpu | gpu | auto`` (what rnnlab-eval takes too) as a torch device."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device == "gpu" else "cpu"


def samples(cfg: DictConfig) -> list[str]:
    """``cfg.num_samples`` texts; sample *i* uses seed ``cfg.seed + i``."""
    check_sample(cfg)
    module = RNNLMModule.from_checkpoint(cfg.ckpt_path, cfg.backend, torch_device(cfg.device))
    return [
        sample_text(
            module.net,
            module.vocab,
            cfg.prompt,
            cfg.num_tokens,
            allow_unknown=cfg.unknown == "unk",
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            greedy=cfg.greedy,
            seed=cfg.seed + i,
        )
        for i in range(cfg.num_samples)
    ]


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="sample")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    for i, text in enumerate(samples(cfg)):
        title = f"sample {i + 1} (seed {cfg.seed + i})"
        rich.print(rich.panel.Panel(rich.text.Text(text), title=title))


if __name__ == "__main__":
    main()
