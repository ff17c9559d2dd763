r"""A hand-written LSTM, a drop-in for :class:`torch.nn.LSTM`.

Shapes, noted once (``T`` steps, ``B`` batch, ``I`` input size, ``H`` hidden
size, ``L`` layers; ``batch_first=True`` swaps the first two axes of input and
output; unbatched input drops the ``B`` axis everywhere)::

    input   (T, B, I)        h0, c0, h_n, c_n  (L, B, H)        output  (T, B, H)

One layer, gates in PyTorch's order i (input), f (forget), g (cell), o (output):
``W_ih`` (4H, I) and ``W_hh`` (4H, H) stack the four gates' weights, ``a`` is a gate's
pre-activation, ``sigma`` the logistic function::

    a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
    i_t = sigma(a_t^i)    f_t = sigma(a_t^f)    g_t = tanh(a_t^g)    o_t = sigma(a_t^o)
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)

The layer's output is ``(h_1 .. h_T)`` and its final state ``(h_n, c_n) = (h_T, c_T)``.
Layer ``k > 0`` reads layer ``k - 1``'s output, through dropout in training.

Backpropagation through time. With ``dy_t = dL/dh_t`` arriving from the output,
``g_t`` and ``e_t`` the total gradients reaching ``h_t`` and ``c_t``, and ``k_t = tanh(c_t)``::

    g_T     = dy_T + dL/dh_n                    e_T = dL/dc_n + g_T o_T (1 - k_T^2)
    da^o    = g_t k_t o_t (1 - o_t)
    da^i    = e_t g_t i_t (1 - i_t)             da^g = e_t i_t (1 - g_t^2)
    da^f    = e_t c_{t-1} f_t (1 - f_t)
    g_{t-1} = dy_{t-1} + da_t W_hh              e_{t-1} = e_t f_t + g_{t-1} o_{t-1} (1 - k_{t-1}^2)
    dL/dh_0 = da_1 W_hh                         dL/dc_0 = e_1 f_1

Only that chain is sequential. Everything else sums over steps, so it is one
matrix product over all ``T * B`` rows once the deltas are known::

    dL/dW_ih = sum_t da_t^T x_t        dL/dx_t = da_t W_ih
    dL/dW_hh = sum_t da_t^T h_{t-1}    dL/db_ih = dL/db_hh = sum_t sum_batch da_t

``bptt="manual"`` runs the forward without building an autograd graph and the
backward above (:class:`LSTMBPTT`); ``bptt="autograd"`` unrolls the same cell under
autograd (:func:`lstm_layer_autograd`). Both give the same numbers. The file imports
torch only: copy it anywhere.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

BPTT_MODES = ("manual", "autograd")

#: one layer's ``(W_ih, W_hh, b_ih, b_hh)``; both biases are ``None`` without bias
Weights = tuple[Tensor, Tensor, Tensor | None, Tensor | None]
#: an LSTM's state ``(h, c)``
State = tuple[Tensor, Tensor]


def _steps(*tensors: Tensor) -> list[tuple[Tensor, ...]]:
    """Each (T, ...) tensor as its T per-step views."""
    return [t.unbind(0) for t in tensors]


def input_projection(x: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """``x_t W_ih^T + b_ih + b_hh`` for every step in one product: (T, B, 4H)."""
    steps, batch, _ = x.shape
    projected = torch.mm(x.reshape(steps * batch, -1), w_ih.t())
    if b_ih is not None and b_hh is not None:
        projected = projected.add_(b_ih + b_hh)
    return projected.view(steps, batch, -1)


class LSTMBPTT(torch.autograd.Function):
    """One LSTM layer over a whole sequence, with hand-written BPTT.

    ``apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> (output, h_n, c_n)`` with ``x``
    (T, B, I), ``h0`` and ``c0`` (B, H); the biases may both be ``None``. The forward
    builds no graph and saves the gates, the cell states and their tanh; the backward
    is the module docstring's equations. Double backward is not supported.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        x = x.contiguous()
        steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[-1]
        # the pre-activations without their recurrent term; each step adds it, then squashes
        gates = input_projection(x, w_ih, b_ih, b_hh)
        hs, cs, ks = (x.new_empty(steps, batch, hidden) for _ in range(3))
        w_hh_t = w_hh.t()
        h, c = h0, c0
        # Every step's views are made here, once: in the loop they would cost as much as the math.
        for a, a_if, i, f, g, o, h_t, c_t, k_t in zip(
            *_steps(gates),
            *_steps(gates[..., : 2 * hidden], *gates.split(hidden, dim=2)),
            *_steps(hs, cs, ks),
            strict=True,
        ):
            a.addmm_(h, w_hh_t)
            a_if.sigmoid_()
            g.tanh_()
            o.sigmoid_()
            c = torch.mul(f, c, out=c_t).addcmul_(i, g)  # c_t = f_t c_{t-1} + i_t g_t
            h = torch.mul(o, torch.tanh(c, out=k_t), out=h_t)  # h_t = o_t tanh(c_t)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, hs, cs, ks, gates)
        return hs, hs[-1].clone(), cs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: Tensor, grad_hn: Tensor, grad_cn: Tensor
    ) -> tuple[Tensor | None, ...]:
        x, h0, c0, w_ih, w_hh, hs, cs, ks, gates = ctx.saved_tensors
        need_x, need_h0, need_c0, need_w_ih, need_w_hh, need_b_ih, need_b_hh = ctx.needs_input_grad
        steps, batch, hidden = hs.shape
        i, f, g, o = gates.split(hidden, dim=2)
        c_prev = torch.cat([c0.unsqueeze(0), cs[:-1]])
        # The local derivatives of every step at once, so that each step only multiplies:
        # e_t += g_t dk, da^{i,f,g} = e_t (p_i, p_f, p_g), da^o = g_t p_o.
        dk = o * (1 - ks * ks)
        p = torch.empty_like(gates)
        p_i, p_f, p_g, p_o = p.split(hidden, dim=2)
        torch.mul(g, i * (1 - i), out=p_i)
        torch.mul(c_prev, f * (1 - f), out=p_f)
        torch.mul(i, 1 - g * g, out=p_g)
        torch.mul(ks, o * (1 - o), out=p_o)
        p_ifg = p.view(steps, batch, 4, hidden)[:, :, :3]
        da = torch.empty_like(gates)  # the pre-activation deltas of every step
        da_ifg, da_o = da.view(steps, batch, 4, hidden)[:, :, :3], da[..., 3 * hidden :]
        dy, dk_s, p_ifg_s, p_o_s, da_ifg_s, da_o_s, da_s, f_s = _steps(
            grad_out, dk, p_ifg, p_o, da_ifg, da_o, da, f
        )
        g_h, e = dy[-1] + grad_hn, grad_cn.clone()
        for t in range(steps - 1, -1, -1):
            e.addcmul_(g_h, dk_s[t])  # e_t: from c_{t+1} and through h_t
            torch.mul(e.unsqueeze(1), p_ifg_s[t], out=da_ifg_s[t])
            torch.mul(g_h, p_o_s[t], out=da_o_s[t])
            e.mul_(f_s[t])  # the part of e_{t-1} that flows through c
            if t > 0:
                g_h = torch.addmm(dy[t - 1], da_s[t], w_hh)  # g_{t-1}
        g_h = torch.mm(da_s[0], w_hh)  # dL/dh_0
        flat = da.view(-1, 4 * hidden)
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]]).view(-1, hidden)

        grad_x = torch.mm(flat, w_ih).view_as(x) if need_x else None
        grad_w_ih = torch.mm(flat.t(), x.view(flat.shape[0], -1)) if need_w_ih else None
        grad_w_hh = torch.mm(flat.t(), h_prev) if need_w_hh else None
        # One tensor for both biases is safe: autograd copies it before accumulating in place.
        grad_b = flat.sum(0) if need_b_ih or need_b_hh else None
        return (
            grad_x,
            g_h if need_h0 else None,
            e if need_c0 else None,
            grad_w_ih,
            grad_w_hh,
            grad_b if need_b_ih else None,
            grad_b if need_b_hh else None,
        )


def lstm_layer_autograd(x: Tensor, state: State, weights: Weights) -> tuple[Tensor, State]:
    """The same layer as :class:`LSTMBPTT`, unrolled under autograd (``unbind``, never ``x[t]``)."""
    hs = []
    for a in input_projection(x, weights[0], weights[2], weights[3]).unbind(0):
        state, _ = lstm_step(a, state, weights)
        hs.append(state[0])
    return torch.stack(hs), state


def lstm_step(a: Tensor, state: State, weights: Weights) -> tuple[State, dict[str, Tensor]]:
    """One step from ``(h_{t-1}, c_{t-1})`` to ``(h_t, c_t)``, ``a`` a step of
    :func:`input_projection`.

    Returns the new state and the gates ``i``, ``f``, ``g``, ``o`` and ``tanh_c``
    (``tanh(c_t)``) by name, which is what :mod:`rnnlab.nn.dynamics` reads saturation from.
    """
    h, c = state
    i, f, g, o = torch.addmm(a, h, weights[1].t()).chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    tanh_c = torch.tanh(c)
    return (o * tanh_c, c), {"i": i, "f": f, "g": g, "o": o, "tanh_c": tanh_c}


def lstm_layer_manual(x: Tensor, state: State, weights: Weights) -> tuple[Tensor, State]:
    """:class:`LSTMBPTT`, made to follow autocast as nn.LSTM does.

    Autocast would cast each product inside the function separately and mix
    dtypes with the in-place updates, so the inputs are cast once up front.
    """
    tensors = (x, *state, *weights)
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        tensors = tuple(
            t if t is None or not t.is_floating_point() else t.to(dtype) for t in tensors
        )
        with torch.autocast(device_type, enabled=False):
            output, h_n, c_n = LSTMBPTT.apply(*tensors)
    else:
        output, h_n, c_n = LSTMBPTT.apply(*tensors)
    return output, (h_n, c_n)


_LAYERS = {"manual": lstm_layer_manual, "autograd": lstm_layer_autograd}


class CustomLSTM(nn.Module):
    """Multi-layer LSTM with the interface, parameters and init of :class:`torch.nn.LSTM`.

    ``bptt`` picks the backward: ``"manual"`` (hand-written, see the module docstring)
    or ``"autograd"`` (the cell unrolled under autograd). ``bidirectional`` and
    ``proj_size`` are accepted only to refuse them clearly.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bptt: str = "manual",
        *,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_arguments(
            input_size, hidden_size, num_layers, dropout, bptt, bidirectional, proj_size
        )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout acts between recurrent layers, so it has no effect with num_layers=1.",
                UserWarning,
                stacklevel=2,
            )
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bptt = (
            bias,
            batch_first,
            float(dropout),
            bptt,
        )
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        # Registration order is nn.LSTM's, so that reset_parameters draws the same numbers.
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size
            shapes = {
                "weight_ih": (4 * hidden_size, layer_input),
                "weight_hh": (4 * hidden_size, hidden_size),
            }
            if bias:
                shapes |= {"bias_ih": (4 * hidden_size,), "bias_hh": (4 * hidden_size,)}
            for name, shape in shapes.items():
                self.register_parameter(
                    f"{name}_l{layer}", nn.Parameter(torch.empty(shape, **factory))
                )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) over every parameter in order, as nn.LSTM."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, for code written against nn.LSTM (there is no cuDNN weight buffer here)."""

    def layer_parameters(self, layer: int) -> Weights:
        """``(W_ih, W_hh, b_ih, b_hh)`` of one layer; biases are ``None`` without bias."""
        w_ih, w_hh = getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}")
        if not self.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(self, f"bias_ih_l{layer}"), getattr(self, f"bias_hh_l{layer}")

    def forward(self, input: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        """``(output, (h_n, c_n))`` exactly as nn.LSTM returns them, batched or unbatched."""
        x, (h0, c0), unbatched = self._to_time_major(input, hx)
        run_layer = _LAYERS[self.bptt]
        finals = []
        for layer in range(self.num_layers):
            if layer > 0 and self.training and self.dropout > 0:
                x = F.dropout(x, self.dropout, training=True)
            x, final = run_layer(x, (h0[layer], c0[layer]), self.layer_parameters(layer))
            finals.append(final)
        h_n, c_n = torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals])
        if unbatched:
            return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return (x.transpose(0, 1) if self.batch_first else x), (h_n, c_n)

    def _to_time_major(self, input: Tensor, hx: State | None) -> tuple[Tensor, State, bool]:
        """Input as (T, B, I), h0 and c0 as (L, B, H) (zeros if not given), and if unbatched."""
        if input.dim() not in (2, 3):
            raise ValueError(
                f"CustomLSTM expects 2-D (unbatched) or 3-D input, got {input.dim()}-D."
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"CustomLSTM expects {self.input_size} input features, got {input.shape[-1]}."
            )
        unbatched = input.dim() == 2
        x = (
            input.unsqueeze(1)
            if unbatched
            else (input.transpose(0, 1) if self.batch_first else input)
        )
        if x.shape[0] == 0:
            raise ValueError("CustomLSTM expects a sequence of at least one step.")
        expected = (self.num_layers, x.shape[1], self.hidden_size)
        if hx is None:
            zeros = x.new_zeros(expected)
            return x, (zeros, zeros), unbatched
        if not isinstance(hx, tuple | list) or len(hx) != 2:
            raise ValueError("CustomLSTM expects hx as a pair (h0, c0).")
        state = tuple(h.unsqueeze(1) if unbatched else h for h in hx)
        if any(
            h.dim() != input.dim() or s.shape != expected for h, s in zip(hx, state, strict=True)
        ):
            wanted = (self.num_layers, self.hidden_size) if unbatched else expected
            shapes = [tuple(h.shape) for h in hx]
            raise ValueError(f"CustomLSTM expects h0 and c0 of shape {wanted}, got {shapes}.")
        return x, (state[0], state[1]), unbatched

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        return text + f", bptt={self.bptt!r}"


def _check_arguments(
    input_size: int,
    hidden_size: int,
    num_layers: int,
    dropout: float,
    bptt: str,
    bidirectional: bool,
    proj_size: int,
) -> None:
    """Refuse, with one sentence each, what CustomLSTM cannot do."""
    if bidirectional:
        raise ValueError("CustomLSTM does not support bidirectional=True; use torch.nn.LSTM.")
    if proj_size:
        raise ValueError("CustomLSTM does not support proj_size; use torch.nn.LSTM.")
    sizes = {"input_size": input_size, "hidden_size": hidden_size, "num_layers": num_layers}
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"CustomLSTM needs {name} to be a positive integer, got {value!r}.")
    if bptt not in BPTT_MODES:
        raise ValueError(f"CustomLSTM bptt must be 'manual' or 'autograd', got {bptt!r}.")
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, numbers.Number)
        or not 0 <= dropout <= 1
    ):
        raise ValueError(f"CustomLSTM dropout must be a number in [0, 1], got {dropout!r}.")
