"""``rnnlab-inspect ckpt_path=... text="..." [units=[3,17]]``: what a model's units track.

Runs the checkpoint's model over the text once (from a zero state, through the probes'
:func:`rnnlab.nn.dynamics.trace`, so both backends give the same page), and writes
``inspect.html`` and ``inspect.png`` in the run's output directory
(:mod:`rnnlab.report.units` draws them). An attention model reads the text as sampling
does, through a key/value cache over its window, and its units are each attention mixer's
output. Tokens the model never saw are refused or mapped to ``<unk>`` as in ``rnnlab-sample``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import hydra
import numpy as np
import rich
import torch
from omegaconf import DictConfig
from torch import Tensor

from rnnlab.cli.app import config_dir, exit_on_user_error
from rnnlab.cli.checks import check_inspect
from rnnlab.cli.sample import torch_device
from rnnlab.data.vocab import EOS, Vocab
from rnnlab.errors import UserError
from rnnlab.nn.attention import key_value_cache
from rnnlab.nn.dynamics import trace
from rnnlab.nn.lm import RNNLM
from rnnlab.nn.sampling import Reader
from rnnlab.report.units import pick_units, text_features, write_page, write_png
from rnnlab.training.module import RNNLMModule

TOP_K = 5


@dataclasses.dataclass
class Inspection:
    """One text through a model: a piece of text per token, the layer's activations
    ``(T, H)``, each token's loss (NaN for the first: nothing predicts it) and each
    position's top-5 next tokens with their probabilities."""

    pieces: list[str]
    acts: np.ndarray
    losses: np.ndarray
    top5: list[list[tuple[str, float]]]


def read_text(text: str) -> str:
    """``text`` itself, or the contents of the file it names.

    One word with a ``/`` or a file suffix in it that names no file is taken for a
    mistyped path, not for a text to inspect.
    """
    path = Path(text)
    looks_like_path = not any(c.isspace() for c in text) and ("/" in text or path.suffix)
    try:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    except OSError:  # a text too long to be a path, say
        pass
    if looks_like_path:
        raise UserError(f"text={text} names no file; give an existing file's path or the text.")
    return text


def display_pieces(vocab: Vocab, ids: list[int], text: str) -> list[str]:
    """The text each token stands for: the text's own characters at char level (an unknown
    one included), words followed by a space or a newline at word level, where an unknown
    word reads ``<unk>``, as the model saw it."""
    if vocab.level == "char":
        return list(text[: len(ids)])
    tokens = [vocab.itos[i] for i in ids]
    return [
        "\n" if tok == EOS else tok + ("" if nxt == EOS else " ")
        for tok, nxt in zip(tokens, [*tokens[1:], EOS], strict=True)
    ]


@torch.no_grad()
def inspect(module: RNNLMModule, text: str, layer: int, allow_unknown: bool) -> Inspection:
    """Run ``module``'s model over ``text`` and read what inspection shows."""
    net, vocab = module.net, module.vocab
    if not -1 <= layer < net.config.num_layers:
        raise UserError(
            f"layer must be -1 or 0 .. {net.config.num_layers - 1} "
            f"(the model has {net.config.num_layers}), got {layer}."
        )
    if not text:
        raise UserError("text is empty; give the text to inspect or a file's path.")
    ids = vocab.prompt_ids(text, allow_unknown)
    if net.window is None:
        tr = trace(net, torch.tensor([ids], device=next(net.parameters()).device))
        acts = torch.stack(tr.hidden(layer)[1:])[:, 0]  # (T, H)
        log_probs = tr.log_probs[0]  # (T, V): the next token's, at each position
    else:
        acts, log_probs = read_through_windows(net, ids, layer)
    acts, log_probs = acts.double().cpu().numpy(), log_probs.double().cpu()
    losses = np.full(len(ids), np.nan)
    losses[1:] = (-log_probs[:-1].gather(1, torch.tensor(ids[1:])[:, None])).squeeze(1).numpy()
    top = log_probs.exp().topk(min(TOP_K, log_probs.shape[1]), dim=1)
    top5 = [
        [(vocab.itos[int(i)], float(p)) for p, i in zip(ps, ix, strict=True)]
        for ps, ix in zip(top.values, top.indices, strict=True)
    ]
    return Inspection(display_pieces(vocab, ids, text), acts, losses, top5)


def read_through_windows(net: RNNLM, ids: list[int], layer: int) -> tuple[Tensor, Tensor]:
    """An attention model's units and next-token log-probabilities at each of ``ids``, read
    as sampling reads (:class:`~rnnlab.nn.sampling.Reader`: a key/value cache over the
    training window). A layer's units are its mixer's output, as a recurrent block's are its
    state: ``(T, H)`` and ``(T, V)``."""
    outputs: list[Tensor] = []
    mixer = net.rnn.blocks[layer].mixer
    hook = mixer.register_forward_hook(lambda module, args, out: outputs.append(out[0]))
    training = net.training
    net.eval()
    try:
        with key_value_cache(net):
            reader = Reader(net, ids[: net.window])
            acts, logits = [outputs[-1][:, 0]], [reader.logits[0]]
            for token in ids[net.window :]:
                reader.feed(token)
                acts.append(outputs[-1][-1:, 0])
                logits.append(reader.logits[0, -1:])
    finally:
        hook.remove()
        net.train(training)
    return torch.cat(acts), torch.cat(logits).log_softmax(-1)


def run(cfg: DictConfig, out_dir: Path) -> tuple[Path, Path]:
    """Inspect and write the page and the picture into ``out_dir``."""
    check_inspect(cfg)
    module = RNNLMModule.from_checkpoint(cfg.ckpt_path, cfg.backend, torch_device(cfg.device))
    text = read_text(cfg.text)
    seen = inspect(module, text, cfg.layer, cfg.unknown == "unk")
    hidden = seen.acts.shape[1]
    units = None if cfg.units is None else list(cfg.units)
    if units is not None and not all(0 <= u < hidden for u in units):
        raise UserError(
            f"units must lie in 0 .. {hidden - 1} (the layer has {hidden}), got {units}."
        )
    chosen = pick_units(seen.acts, text_features(seen.pieces), units)
    if not chosen:
        raise UserError(
            "the text has no lines, quotes, brackets or indentation to correlate units "
            "with; give a longer text or name units=[...]."
        )
    config = module.net.config
    title = f"{config.cell} ({config.backend}), layer {cfg.layer}: {Path(cfg.ckpt_path).name}"
    page = write_page(
        out_dir / "inspect.html", title, seen.pieces, seen.acts, chosen, seen.losses, seen.top5
    )
    return page, write_png(out_dir / "inspect.png", seen.acts, chosen, seen.losses)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="inspect")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    page, picture = run(cfg, Path(cfg.paths.output_dir))
    rich.print(f"wrote {page} and {picture}")


if __name__ == "__main__":
    main()
