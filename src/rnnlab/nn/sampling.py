"""Generation from a language model: prompt, temperature, top-k, greedy, seed.

Needs a model that maps ``(tokens (1, T), hidden) -> (logits (1, T, V), hidden)`` and,
for text, anything that turns a prompt into ids and ids back into text
(:class:`Codec`, which :class:`rnnlab.data.vocab.Vocab` is). A private
``torch.Generator`` draws the tokens, so sampling never disturbs the global random
state that training relies on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
from torch import nn

from rnnlab.errors import UserError
from rnnlab.nn.attention import key_value_cache


class Codec(Protocol):
    """Text to ids and back, as sampling needs it."""

    def prompt_ids(self, prompt: str, allow_unknown: bool = False) -> list[int]: ...

    def continue_text(self, prompt: str, ids: Iterable[int]) -> str: ...


def next_token(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator
) -> int:
    """Draw one id from ``softmax(logits / temperature)``, keeping only the ``top_k`` largest."""
    if top_k is not None and 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class Reader:
    """A model reading a stream of tokens one after another, as it read them in training.

    A recurrent model carries its state, which holds everything before. A model with a
    ``window`` (attention) reads a window as it was trained to: its state is the window's
    keys and values (:func:`~rnnlab.nn.attention.key_value_cache`, which must be on); when
    the window is full it starts again from its latest half, recomputed. So every token
    is read with between ``window // 2`` and ``window`` tokens before it, and gives what a
    fresh window would.

    ``logits`` are the model's ``(1, T, V)`` from its last call; their last position is the
    last token read.
    """

    def __init__(self, model: nn.Module, ids: list[int]) -> None:
        self.model, self.window = model, getattr(model, "window", None)
        self.device = next(model.parameters()).device
        self.context = list(ids[-self.window :] if self.window else ids)
        self.logits, self.hidden = model(torch.tensor([self.context], device=self.device))

    def feed(self, token: int) -> None:
        """Read one more token."""
        self.context.append(token)
        if self.window and len(self.context) > self.window:  # from the latest half again
            self.context = self.context[-max(1, self.window // 2) :]
            self.logits, self.hidden = self.model(torch.tensor([self.context], device=self.device))
        else:
            self.logits, self.hidden = self.model(
                torch.tensor([[token]], device=self.device), self.hidden
            )


@torch.no_grad()
def generate(
    model: nn.Module,
    ids: list[int],
    num_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    greedy: bool = False,
    seed: int = 0,
) -> list[int]:
    """``num_tokens`` ids continuing ``ids``, each read back as :class:`Reader` reads."""
    if temperature <= 0:
        raise UserError(f"temperature must be above 0, got {temperature}; use greedy=true instead.")
    was_training = model.training
    model.eval()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out: list[int] = []
    with key_value_cache(model):
        reader = Reader(model, ids)
        while len(out) < num_tokens:
            if out:  # the last token, read back before the next is drawn
                reader.feed(out[-1])
            last = reader.logits[0, -1].float().cpu()
            token = (
                int(last.argmax()) if greedy else next_token(last, temperature, top_k, generator)
            )
            out.append(token)
    model.train(was_training)
    return out


def sample_text(
    model: nn.Module,
    codec: Codec,
    prompt: str = "",
    num_tokens: int = 200,
    allow_unknown: bool = False,
    **options: object,
) -> str:
    """The prompt followed by ``num_tokens`` generated tokens, as text.

    ``options`` are :func:`generate`'s: temperature, top_k, greedy, seed.
    """
    ids = codec.prompt_ids(prompt, allow_unknown)
    generated = generate(model, ids, num_tokens, **options)  # type: ignore[arg-type]
    return codec.continue_text(prompt, generated)
