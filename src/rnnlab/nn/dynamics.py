r"""Probes of a language model's recurrent dynamics: why it learns or fails.

Every probe unrolls the model's own core over one window of tokens, step by step,
through the cell's step function (:func:`~rnnlab.nn.rnn.elman_step`,
:func:`~rnnlab.nn.gru.gru_step`, :func:`~rnnlab.nn.lstm.lstm_step`) with the core's
parameters read by their PyTorch names. So the numbers are the same whichever backend
holds the weights, and every step's state is a node of the graph. The window starts
from a zero state and runs without dropout (the model's deterministic dynamics).

Shapes, noted once: tokens ``(B, T)``; per layer ``k`` the states ``h_t^k`` ``(B, H)``
for ``t = 0 .. T`` (``h_0`` the zero start); ``G`` the gate blocks of the cell.

- **gradient through time** (:func:`gradient_through_time`): with ``l_T^b`` the loss of
  example ``b`` at the window's last position, ``g^k[j] = mean_b ||dl_T^b / dh_{T-j}^k||``
  for lags ``j = 0 .. T``: how much the last prediction still depends on the state ``j``
  steps back. For the LSTM ``h`` is the output half of the state (``c`` held fixed);
  :func:`reach` is the lag at which ``g`` first falls below ``1e-3`` of ``g[0]``;
- **recurrent spectrum** (:func:`recurrent_spectrum`): largest singular value and
  spectral radius of each gate's ``(H, H)`` block of ``W_hh``; for minGRU and minLSTM,
  which have no ``W_hh``, the spread of the decays ``a_t`` (the step Jacobian is
  ``diag(a_t)``): their mean and the share above 0.99;
- **step Jacobian** (:func:`step_jacobian_norm`): the mean over the window of the
  spectral norm of ``d s_t / d s_{t-1}`` (``s = h``, or ``(h, c)`` for the LSTM), by power
  iteration with Jacobian-vector products: above 1 a perturbation grows per step, below 1
  it fades;
- **saturation** (:func:`saturation`): the share of tanh units with ``|a| > 0.99``, of
  relu units that never fire over the window, and of sigmoid gates below 0.01 or above
  0.99, for each activation the step function names.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from torch.func import jvp, vjp

from rnnlab.nn.blocks import Blocks
from rnnlab.nn.cores import GATES, LINEAR, PAIRED_STATE, State, cell_functions, layer_weights
from rnnlab.nn.lm import RNNLM

#: what saturation means for each activation a step function names (``h``: the nonlinearity)
ACTIVATION_KINDS = {
    "r": "sigmoid",
    "z": "sigmoid",
    "n": "tanh",
    "i": "sigmoid",
    "f": "sigmoid",
    "g": "tanh",
    "o": "sigmoid",
    "tanh_c": "tanh",
    "a": "sigmoid",
}
#: the gradient's reach ends where it falls below this share of its value at lag 0
REACH_THRESHOLD = 1e-3
#: where :func:`saturation` calls a unit saturated
TANH_SATURATED, SIGMOID_LOW, SIGMOID_HIGH = 0.99, 0.01, 0.99


@dataclasses.dataclass
class Trace:
    """One window unrolled: per layer its input projections ``(T, B, G*H)``, its states
    ``s_0 .. s_T`` and its named activations ``(T, B, H)``; the log-probabilities
    ``(B, T, V)`` the top layer's states give."""

    projections: list[Tensor]
    states: list[list[State]]
    activations: list[dict[str, Tensor]]
    log_probs: Tensor

    def hidden(self, layer: int) -> list[Tensor]:
        """``h_0 .. h_T`` of ``layer``."""
        return [hidden_of(s) for s in self.states[layer]]


def hidden_of(state: State) -> Tensor:
    """What a layer outputs: its state ``h``, or the output half of an LSTM's ``(h, c)``."""
    return state if isinstance(state, Tensor) else state[0]


def flat_state(state: State) -> Tensor:
    """A state as one tensor: ``h``, or ``[h, c]`` side by side for the LSTM."""
    return state if isinstance(state, Tensor) else torch.cat(state, -1)


def unit_rows(v: Tensor) -> Tensor:
    """Each row of ``v`` scaled to norm 1 (a zero row stays zero)."""
    return v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


def zero_state(model: RNNLM, batch: int, like: Tensor) -> State:
    """A zero start that requires grad, so that ``dl/dh_0`` is defined too."""
    h = like.new_zeros(batch, model.config.hidden_size).requires_grad_()
    if model.config.cell in PAIRED_STATE:
        return h, like.new_zeros(batch, model.config.hidden_size).requires_grad_()
    return h


def trace(model: RNNLM, tokens: Tensor) -> Trace:
    """Unroll ``model`` over ``tokens`` ``(B, T)`` from a zero state, keeping every step.

    In residual blocks each layer is a block's mixer: its input is the block's ``LN_1``
    (and convolution) of the stream, and its output rejoins the stream through the block's
    residual additions and MLP, which act on each step alone.
    """
    training = model.training
    model.eval()  # the blocks' dropout: the probes read the deterministic dynamics
    try:
        return unrolled(model, tokens)
    finally:
        model.train(training)


def unrolled(model: RNNLM, tokens: Tensor) -> Trace:
    """:func:`trace`'s work, on a model in eval mode."""
    project, step = cell_functions(model.config.cell, model.config.nonlinearity)
    blocks = model.rnn.blocks if isinstance(model.rnn, Blocks) else None
    x = model.embed(tokens.t())  # (T, B, E)
    projections, states, activations = [], [], []
    for layer, (core, index) in enumerate(model.recurrent_layers()):
        weights = layer_weights(core, index)
        u = x if blocks is None else blocks[layer].mixer_input(x)[0]
        a = project(u, weights)  # (T, B, G*H)
        state, layer_states, layer_acts = zero_state(model, x.shape[1], x), [], []
        layer_states.append(state)
        for a_t in a.unbind(0):
            state, acts = step(a_t, state, weights)
            layer_states.append(state)
            layer_acts.append(acts)
        projections.append(a)
        states.append(layer_states)
        activations.append({k: torch.stack([s[k] for s in layer_acts]) for k in layer_acts[0]})
        h = torch.stack([hidden_of(s) for s in layer_states[1:]])  # (T, B, H)
        x = h if blocks is None else blocks[layer].after_mixer(x, h)
    if blocks is not None:
        x = model.rnn.norm(x)
    return Trace(projections, states, activations, model.log_probs(x.transpose(0, 1)))


def last_token_loss(tr: Trace, targets: Tensor) -> Tensor:
    """``sum_b l_T^b``: summed, not averaged, so each example's gradient is its own loss's."""
    return -tr.log_probs[:, -1].gather(1, targets[:, -1:]).sum()


def gradient_through_time(tr: Trace, targets: Tensor) -> Tensor:
    """``g[k, j] = mean_b ||dl_T^b / dh_{T-j}^k||`` for each layer ``k``, lag ``j = 0 .. T``:
    ``(L, T + 1)``. ``tr`` must have been traced with grad enabled."""
    hidden = [tr.hidden(layer) for layer in range(len(tr.states))]
    flat = [h for layer in hidden for h in layer]
    grads = torch.autograd.grad(last_token_loss(tr, targets), flat)
    norms = torch.stack([g.norm(dim=1) for g in grads])  # (L * (T+1), B)
    per_step = norms.view(len(hidden), len(hidden[0]), -1).mean(-1)  # by time
    return per_step.flip(1).detach()  # (L, T+1) by lag


def reach(g: Tensor, threshold: float = REACH_THRESHOLD) -> int:
    """The first lag at which ``g`` (one layer's, by lag) falls below ``threshold * g[0]``;
    the window's length ``T`` when it never does there (the reach is at least ``T``)."""
    below = (g < threshold * g[0]).nonzero()
    return int(below[0]) if len(below) else len(g) - 1


def recurrent_spectrum(model: RNNLM, tr: Trace) -> list[dict[str, dict[str, float]]]:
    """Per layer, each gate block's ``sigma_max`` and spectral ``radius`` of ``W_hh``; for a
    cell linear in its state, which has none, the spread of its decays ``a_t`` over the
    window instead: their ``mean`` and the share ``above_0.99`` (channels that keep their
    state for about a hundred steps or more), since its step Jacobian is ``diag(a_t)``."""
    if model.config.cell in LINEAR:
        return [
            {"a": {"mean": float(a.mean()), "above_0.99": float((a > 0.99).double().mean())}}
            for a in (acts["a"].detach() for acts in tr.activations)
        ]
    hidden, names = model.config.hidden_size, GATES[model.config.cell]
    spectra = []
    with torch.no_grad():
        for core, index in model.recurrent_layers():
            blocks = layer_weights(core, index)[1].split(hidden)
            spectra.append(
                {
                    name: {
                        "sigma_max": float(torch.linalg.matrix_norm(w, ord=2)),
                        "radius": float(torch.linalg.eigvals(w).abs().max()),
                    }
                    for name, w in zip(names, blocks, strict=True)
                }
            )
    return spectra


def step_jacobian_norm(model: RNNLM, tr: Trace, iterations: int = 20, seed: int = 0) -> list[float]:
    """Per layer, the mean over the window's ``T * B`` steps of ``||d s_t / d s_{t-1}||_2``.

    Each step's Jacobian is its own: the steps are stacked as one batch of ``T * B``
    rows, and each row's vector is normalised on its own, so one power iteration runs
    them all. Starts from a private generator's draw: the global random state is untouched.
    """
    _, step = cell_functions(model.config.cell, model.config.nonlinearity)
    lstm_state = model.config.cell in PAIRED_STATE
    hidden = model.config.hidden_size
    generator = torch.Generator().manual_seed(seed)
    norms = []
    for layer, (a, (core, index)) in enumerate(
        zip(tr.projections, model.recurrent_layers(), strict=True)
    ):
        weights = tuple(None if w is None else w.detach() for w in layer_weights(core, index))
        a_flat = a.detach().reshape(-1, a.shape[-1])  # (T*B, G*H)
        previous = torch.stack([flat_state(s) for s in tr.states[layer][:-1]])
        s = previous.detach().reshape(a_flat.shape[0], -1)  # (T*B, H), or (T*B, 2H) for (h, c)

        def f(state: Tensor, a_flat: Tensor = a_flat, weights: tuple = weights) -> Tensor:
            carried = tuple(state.split(hidden, dim=1)) if lstm_state else state
            return flat_state(step(a_flat, carried, weights)[0])

        v = unit_rows(torch.randn(s.shape, generator=generator, dtype=torch.float64).to(s))
        _, pullback = vjp(f, s)
        for _ in range(iterations):
            v = unit_rows(pullback(jvp(f, (s,), (v,))[1])[0])  # J^T J v, normalised
        norms.append(float(jvp(f, (s,), (v,))[1].norm(dim=1).mean()))
    return norms


def saturation(model: RNNLM, tr: Trace) -> list[dict[str, float]]:
    """Per layer, the share of each named activation that is saturated (see module doc)."""
    shares = []
    for acts in tr.activations:
        layer: dict[str, float] = {}
        for name, a in acts.items():
            kind = model.config.nonlinearity if name == "h" else ACTIVATION_KINDS[name]
            a = a.detach()
            if kind == "tanh":
                share = (a.abs() > TANH_SATURATED).double().mean()
            elif kind == "relu":
                share = (~(a > 0).flatten(0, 1).any(0)).double().mean()  # never fired, per unit
            else:
                share = ((a < SIGMOID_LOW) | (a > SIGMOID_HIGH)).double().mean()
            layer[name] = float(share)
        shares.append(layer)
    return shares
