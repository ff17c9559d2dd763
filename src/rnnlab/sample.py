"""Hydra entry point: ``rnnlab-sample ckpt_path=... prompt="ROMEO:"``.

Everything comes from the checkpoint (weights, vocabulary, model sizes), so a
checkpoint is all it needs; it samples on CPU by default, whichever device and
backend trained it.
"""

from __future__ import annotations

import hydra
import rich
import rich.panel
import rich.text
from omegaconf import DictConfig

from rnnlab import config_dir
from rnnlab.errors import UserError, exit_on_user_error
from rnnlab.module import RNNLMModule
from rnnlab.sampling import sample_text

UNKNOWN_POLICIES = ("error", "unk")


def samples(cfg: DictConfig) -> list[str]:
    """``cfg.num_samples`` texts; sample *i* uses seed ``cfg.seed + i``."""
    if cfg.unknown not in UNKNOWN_POLICIES:
        raise UserError(f"unknown={cfg.unknown!r} is not a choice; use one of: error, unk.")
    if cfg.num_tokens < 0 or cfg.num_samples < 1:
        raise UserError("num_tokens must be at least 0 and num_samples at least 1.")
    module = RNNLMModule.from_checkpoint(cfg.ckpt_path, cfg.backend, cfg.device)
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
