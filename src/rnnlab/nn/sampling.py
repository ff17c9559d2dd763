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
    """``num_tokens`` ids continuing ``ids``, carrying the state token by token.

    A recurrent model's state carries everything before. A model with a ``window``
    (attention) reads a window as it was trained to: its state is the window's keys and
    values (:func:`~rnnlab.nn.attention.key_value_cache`); when the window is full it
    starts again from its latest half, recomputed. So every step sees between
    ``window // 2`` and ``window`` tokens, and computes what a fresh window would.
    """
    if temperature <= 0:
        raise UserError(f"temperature must be above 0, got {temperature}; use greedy=true instead.")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    window: int | None = getattr(model, "window", None)
    context = list(ids[-window:] if window else ids)
    out: list[int] = []
    with key_value_cache(model):
        logits, hidden = model(torch.tensor([context], device=device))
        for _ in range(num_tokens):
            last = logits[0, -1].float().cpu()
            token = (
                int(last.argmax()) if greedy else next_token(last, temperature, top_k, generator)
            )
            out.append(token)
            context.append(token)
            if window and len(context) > window:  # a new window from the latest half
                context = context[-max(1, window // 2) :]
                logits, hidden = model(torch.tensor([context], device=device))
            else:
                logits, hidden = model(torch.tensor([[token]], device=device), hidden)
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
