"""CustomGRU and CustomLSTM against torch.nn.GRU / nn.LSTM, gradcheck and NumPy references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from rnnlab.nn.gru import GRUBPTT, CustomGRU
from rnnlab.nn.lstm import LSTMBPTT, CustomLSTM

F64 = torch.float64
TOL = 1e-10
INPUT, HIDDEN, BATCH = 3, 5, 4
#: cell -> (PyTorch's module, rnnlab's, rnnlab's autograd.Function, states per layer)
CELLS = {"gru": (nn.GRU, CustomGRU, GRUBPTT, 1), "lstm": (nn.LSTM, CustomLSTM, LSTMBPTT, 2)}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def make_pair(
    cell: str, seed: int = 0, dtype: torch.dtype = F64, **kwargs
) -> tuple[nn.Module, nn.Module]:
    """PyTorch's module and rnnlab's, carrying the very same weights (copied from PyTorch's)."""
    bptt = kwargs.pop("bptt", "manual")
    reference_cls, custom_cls, _, _ = CELLS[cell]
    torch.manual_seed(seed)
    reference = reference_cls(INPUT, HIDDEN, **kwargs).to(dtype)
    custom = custom_cls(INPUT, HIDDEN, bptt=bptt, **kwargs).to(dtype)
    custom.load_state_dict(reference.state_dict())
    return reference, custom


def make_inputs(cell, steps, num_layers, batch_first, batched, with_state, dtype=F64):
    """Random input and initial state (h0, or (h0, c0), or None), all requiring grad."""
    if batched:
        shape = (BATCH, steps, INPUT) if batch_first else (steps, BATCH, INPUT)
        state_shape = (num_layers, BATCH, HIDDEN)
    else:
        shape, state_shape = (steps, INPUT), (num_layers, HIDDEN)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    if not with_state:
        return x, None
    states = [
        torch.randn(state_shape, dtype=dtype, requires_grad=True) for _ in range(CELLS[cell][3])
    ]
    return x, states[0] if cell == "gru" else tuple(states)


def leaves(state) -> list[torch.Tensor]:
    """The state's tensors: none, ``[h]`` or ``[h, c]``."""
    if state is None:
        return []
    return [state] if isinstance(state, torch.Tensor) else list(state)


def loss_and_grads(rnn, x, state, grad_out, grad_finals):
    """Run, contract output and final states with fixed tensors; (output, finals, grads)."""
    output, final = rnn(x, state)
    finals = leaves(final)
    loss = (output * grad_out).sum() + sum(
        (f * g).sum() for f, g in zip(finals, grad_finals, strict=True)
    )
    wrt = [x, *leaves(state), *rnn.parameters()]
    return output, finals, torch.autograd.grad(loss, wrt)


def fixed_grads(reference, x, state):
    """Random tensors shaped like the reference's output and final states."""
    output, final = reference(x, state)
    return torch.randn_like(output), [torch.randn_like(f) for f in leaves(final)]


GRID = list(
    itertools.product(
        ["gru", "lstm"],
        ["manual", "autograd"],
        [1, 2, 3],
        [True, False],
        [False, True],
        [True, False],
        [False, True],
        [1, 50],
    )
)


@pytest.mark.parametrize(
    ("cell", "bptt", "num_layers", "bias", "batch_first", "batched", "with_state", "steps"), GRID
)
def test_outputs_states_and_every_gradient_match_pytorch(
    cell, bptt, num_layers, bias, batch_first, batched, with_state, steps
):
    reference, custom = make_pair(
        cell, bptt=bptt, num_layers=num_layers, bias=bias, batch_first=batch_first
    )
    x, state = make_inputs(cell, steps, num_layers, batch_first, batched, with_state)
    grad_out, grad_finals = fixed_grads(reference, x, state)
    expected = loss_and_grads(reference, x, state, grad_out, grad_finals)
    actual = loss_and_grads(custom, x, state, grad_out, grad_finals)
    assert max_diff(actual[0], expected[0]) <= TOL
    for got, want in zip(actual[1], expected[1], strict=True):
        assert max_diff(got, want) <= TOL
    assert len(actual[2]) == len(expected[2])
    first_step_from_zeros = steps == 1 and not with_state  # dL/dW_hh = ds^T h_0 = 0 then
    for got, want in zip(actual[2], expected[2], strict=True):
        assert want.abs().max() > 0 or first_step_from_zeros  # every gradient is exercised
        assert max_diff(got, want) <= TOL


@pytest.mark.parametrize("cell", CELLS)
def test_initial_state_matters_and_carries_over(cell):
    """Two chunks with the final state fed back equal one run over the whole sequence."""
    _, custom = make_pair(cell, num_layers=2)
    x = torch.randn(30, BATCH, INPUT, dtype=F64)
    full_out, full_final = custom(x)
    first_out, first_final = custom(x[:12])
    second_out, second_final = custom(x[12:], first_final)
    assert max_diff(torch.cat([first_out, second_out]), full_out) <= TOL
    for got, want in zip(leaves(second_final), leaves(full_final), strict=True):
        assert max_diff(got, want) <= TOL
    assert max_diff(custom(x[12:])[0], second_out) > 1e-3


@pytest.mark.parametrize("bptt", ["manual", "autograd"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_when_only_one_result_is_used(cell, bptt):
    reference, custom = make_pair(cell, bptt=bptt, num_layers=2)
    x, state = make_inputs(cell, 15, 2, False, True, True)
    for used in range(1 + CELLS[cell][3]):  # the output, h_n, (c_n)
        results = []
        for rnn in (reference, custom):
            output, final = rnn(x, state)
            loss = [output, *leaves(final)][used].sin().sum()
            results.append(torch.autograd.grad(loss, [x, *leaves(state), *rnn.parameters()]))
        for got, want in zip(results[1], results[0], strict=True):
            assert max_diff(got, want) <= TOL


@pytest.mark.parametrize("cell", CELLS)
def test_only_what_is_asked_for_is_computed_and_it_is_right(cell):
    reference, custom = make_pair(cell)
    x = torch.randn(12, BATCH, INPUT, dtype=F64, requires_grad=True)
    (expected_x,) = torch.autograd.grad(reference(x)[0].sum(), [x])
    custom.requires_grad_(False)
    (got_x,) = torch.autograd.grad(custom(x)[0].sum(), [x])
    assert max_diff(got_x, expected_x) <= TOL
    custom.requires_grad_(True)
    x_const = x.detach()
    expected = torch.autograd.grad(reference(x_const)[0].sum(), list(reference.parameters()))
    got = torch.autograd.grad(custom(x_const)[0].sum(), list(custom.parameters()))
    for g, e in zip(got, expected, strict=True):
        assert max_diff(g, e) <= TOL


@pytest.mark.parametrize("cell", CELLS)
def test_the_manual_forward_is_one_autograd_node(cell):
    _, custom = make_pair(cell)
    x = torch.randn(40, BATCH, INPUT, dtype=F64, requires_grad=True)
    output, _ = custom(x)
    assert CELLS[cell][2].__name__ in output.grad_fn.name()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_manual_layer(cell, bias):
    torch.manual_seed(0)
    steps, batch, gates = 4, 2, {"gru": 3, "lstm": 4}[cell]

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(shape, dtype=F64).mul_(0.5).requires_grad_()

    states = [leaf(batch, HIDDEN) for _ in range(CELLS[cell][3])]
    args = [
        leaf(steps, batch, INPUT),
        *states,
        leaf(gates * HIDDEN, INPUT),
        leaf(gates * HIDDEN, HIDDEN),
    ]
    args += [leaf(gates * HIDDEN), leaf(gates * HIDDEN)] if bias else [None, None]
    assert torch.autograd.gradcheck(CELLS[cell][2].apply, args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_manual_module_with_a_state(cell):
    _, custom = make_pair(cell, num_layers=2, batch_first=True)
    names = [name for name, _ in custom.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in custom.parameters()]
    x, state = make_inputs(cell, 5, 2, True, True, True)
    count = len(leaves(state))

    def run(x, *tensors):
        state = tensors[0] if count == 1 else tuple(tensors[:count])
        weights = dict(zip(names, tensors[count:], strict=True))
        output, final = functional_call(custom, weights, (x, state))
        return output, *leaves(final)

    inputs = (
        x.detach().requires_grad_(),
        *[s.detach().requires_grad_() for s in leaves(state)],
        *params,
    )
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- NumPy references


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def numpy_gru(x, h0, w_ih, w_hh, b_ih, b_hh, grad_out, grad_hn):
    """Textbook forward and BPTT of one GRU layer, step by step and gate by gate, in NumPy."""
    (w_ir, w_iz, w_in), (w_hr, w_hz, w_hn) = np.split(w_ih, 3), np.split(w_hh, 3)
    (b_ir, b_iz, b_in), (b_hr, b_hz, b_hn) = np.split(b_ih, 3), np.split(b_hh, 3)
    steps, hs, cache, h = x.shape[0], [], [], h0
    for t in range(steps):
        r = sigmoid(x[t] @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
        z = sigmoid(x[t] @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
        hn = h @ w_hn.T + b_hn
        n = np.tanh(x[t] @ w_in.T + b_in + r * hn)
        cache.append((h, r, z, n, hn))
        h = (1 - z) * n + z * h
        hs.append(h)
    grads = {
        k: np.zeros_like(v) for k, v in dict(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh).items()
    }
    dx, dh_next = np.zeros_like(x), grad_hn
    for t in reversed(range(steps)):
        h_prev, r, z, n, hn = cache[t]
        dh = grad_out[t] + dh_next
        dn = dh * (1 - z)
        dz = dh * (h_prev - n)
        dan = dn * (1 - n**2)
        dr = dan * hn
        dar, daz = dr * r * (1 - r), dz * z * (1 - z)
        dhn = dan * r
        d_in, d_hid = np.concatenate([dar, daz, dan], 1), np.concatenate([dar, daz, dhn], 1)
        grads["w_ih"] += d_in.T @ x[t]
        grads["w_hh"] += d_hid.T @ h_prev
        grads["b_ih"] += d_in.sum(0)
        grads["b_hh"] += d_hid.sum(0)
        dx[t] = d_in @ w_ih
        dh_next = dh * z + d_hid @ w_hh
    return np.stack(hs), [hs[-1]], {"x": dx, "states": [dh_next], **grads}


def numpy_lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, grad_out, grad_hn, grad_cn):
    """Textbook forward and BPTT of one LSTM layer, step by step, in NumPy."""
    steps, hs, cache, h, c = x.shape[0], [], [], h0, c0
    for t in range(steps):
        a_i, a_f, a_g, a_o = np.split(x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=1)
        i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
        c_prev, c = c, f * c + i * g
        cache.append((h, c_prev, c, i, f, g, o))
        h = o * np.tanh(c)
        hs.append(h)
    finals = [h, c]
    grads = {
        k: np.zeros_like(v) for k, v in dict(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh).items()
    }
    dx, dh_next, dc_next = np.zeros_like(x), grad_hn, grad_cn
    for t in reversed(range(steps)):
        h_prev, c_prev, c, i, f, g, o = cache[t]
        dh = grad_out[t] + dh_next
        dc = dc_next + dh * o * (1 - np.tanh(c) ** 2)
        d_a = np.concatenate(
            [
                dc * g * i * (1 - i),
                dc * c_prev * f * (1 - f),
                dc * i * (1 - g**2),
                dh * np.tanh(c) * o * (1 - o),
            ],
            axis=1,
        )
        grads["w_ih"] += d_a.T @ x[t]
        grads["w_hh"] += d_a.T @ h_prev
        grads["b_ih"] += d_a.sum(0)
        grads["b_hh"] += d_a.sum(0)
        dx[t] = d_a @ w_ih
        dh_next, dc_next = d_a @ w_hh, dc * f
    return np.stack(hs), finals, {"x": dx, "states": [dh_next, dc_next], **grads}


@pytest.mark.parametrize("bptt", ["manual", "autograd"])
@pytest.mark.parametrize("cell", CELLS)
def test_matches_a_numpy_reference(cell, bptt):
    _, custom = make_pair(cell, bptt=bptt)
    rng = np.random.default_rng(1)
    count = CELLS[cell][3]
    x_np = rng.standard_normal((25, BATCH, INPUT))
    states_np = [rng.standard_normal((BATCH, HIDDEN)) for _ in range(count)]
    grad_out_np = rng.standard_normal((25, BATCH, HIDDEN))
    grad_finals_np = [rng.standard_normal((BATCH, HIDDEN)) for _ in range(count)]
    params = [p.detach().numpy() for p in custom.parameters()]
    reference = numpy_gru if cell == "gru" else numpy_lstm
    out_np, finals_np, grads_np = reference(x_np, *states_np, *params, grad_out_np, *grad_finals_np)

    x = torch.tensor(x_np, requires_grad=True)
    states = [torch.tensor(s[None], requires_grad=True) for s in states_np]
    state = states[0] if count == 1 else tuple(states)
    grad_finals = [torch.tensor(g[None]) for g in grad_finals_np]
    out, finals, grads = loss_and_grads(custom, x, state, torch.tensor(grad_out_np), grad_finals)
    assert np.abs(out.detach().numpy() - out_np).max() <= TOL
    for got, want in zip(finals, finals_np, strict=True):
        assert np.abs(got[0].detach().numpy() - want).max() <= TOL
    expected = [
        grads_np["x"],
        *grads_np["states"],
        *(grads_np[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")),
    ]
    for got, want in zip(grads, expected, strict=True):
        got = got[0] if got.dim() == 3 and got.shape[0] == 1 else got
        assert np.abs(got.numpy() - want).max() <= TOL


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_same_seed_same_initial_weights(cell, bias):
    reference_cls, custom_cls, _, _ = CELLS[cell]
    torch.manual_seed(123)
    reference = reference_cls(7, 11, num_layers=3, bias=bias)
    torch.manual_seed(123)
    custom = custom_cls(7, 11, num_layers=3, bias=bias)
    ref_state, state = reference.state_dict(), custom.state_dict()
    assert list(state) == list(ref_state)
    for name in ref_state:
        assert torch.equal(state[name], ref_state[name]), name
    assert all(p.abs().max() <= 1 / 11**0.5 for p in custom.parameters())
    assert not any(isinstance(m, nn.RNNBase) for m in custom.modules())


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_round_trip_both_ways(cell):
    reference_cls, custom_cls, _, _ = CELLS[cell]
    reference, _ = make_pair(cell, num_layers=2)
    custom = custom_cls(INPUT, HIDDEN, num_layers=2).to(F64)
    custom.load_state_dict(reference.state_dict())
    back = reference_cls(INPUT, HIDDEN, num_layers=2).to(F64)
    back.load_state_dict(custom.state_dict())
    x = torch.randn(9, BATCH, INPUT, dtype=F64)
    assert max_diff(back(x)[0], custom(x)[0]) <= TOL


# --------------------------------------------------------------------------- dropout and modes


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bptt", ["manual", "autograd"])
@pytest.mark.parametrize("cell", CELLS)
def test_dropout_matches_pytorch_under_the_same_seed(cell, bptt, batch_first):
    """Dropout masks are drawn in PyTorch's order, so the same seed gives the same result."""
    reference, custom = make_pair(
        cell, bptt=bptt, num_layers=3, dropout=0.4, batch_first=batch_first
    )
    x, state = make_inputs(cell, 12, 3, batch_first, True, True)
    grad_out, grad_finals = fixed_grads(reference, x, state)
    torch.manual_seed(7)
    expected = loss_and_grads(reference, x, state, grad_out, grad_finals)
    torch.manual_seed(7)
    actual = loss_and_grads(custom, x, state, grad_out, grad_finals)
    assert max_diff(actual[0], expected[0]) <= TOL
    for got, want in zip([*actual[1], *actual[2]], [*expected[1], *expected[2]], strict=True):
        assert max_diff(got, want) <= TOL
    reference.eval()
    custom.eval()
    assert max_diff(custom(x, state)[0], reference(x, state)[0]) <= TOL
    assert max_diff(custom(x, state)[0], custom(x, state)[0]) == 0


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_with_one_layer_warns(cell):
    with pytest.warns(UserWarning, match="no effect"):
        CELLS[cell][1](INPUT, HIDDEN, num_layers=1, dropout=0.3)


@pytest.mark.parametrize("bptt", ["manual", "autograd"])
@pytest.mark.parametrize("cell", CELLS)
def test_no_grad_builds_no_graph(cell, bptt):
    reference, custom = make_pair(cell, bptt=bptt, num_layers=2)
    x = torch.randn(10, BATCH, INPUT, dtype=F64)
    with torch.no_grad():
        out, final = custom(x)
    assert out.grad_fn is None and all(f.grad_fn is None for f in leaves(final))
    assert max_diff(out, reference(x)[0]) <= TOL


@pytest.mark.parametrize("bptt", ["manual", "autograd"])
@pytest.mark.parametrize("cell", CELLS)
def test_float32(cell, bptt):
    reference, custom = make_pair(cell, dtype=torch.float32, bptt=bptt, num_layers=2)
    x, state = make_inputs(cell, 30, 2, False, True, True, dtype=torch.float32)
    grad_out, grad_finals = fixed_grads(reference, x, state)
    expected = loss_and_grads(reference, x, state, grad_out, grad_finals)
    actual = loss_and_grads(custom, x, state, grad_out, grad_finals)
    assert actual[0].dtype == torch.float32
    assert max_diff(actual[0], expected[0]) <= 1e-5
    for got, want in zip(actual[2], expected[2], strict=True):
        assert got.dtype == torch.float32
        assert max_diff(got, want) <= 1e-4


@pytest.mark.parametrize("bptt", ["manual", "autograd"])
@pytest.mark.parametrize("cell", CELLS)
def test_autocast_bfloat16_follows_pytorch(cell, bptt):
    """Under CPU autocast both agree with PyTorch to bfloat16 precision. The manual layer
    runs whole in the autocast dtype, as fused kernels (oneDNN's LSTM, cuDNN) do; the
    autograd one follows autocast op by op (nn.GRU's CPU loop does too: it promotes its
    state back to float32)."""
    reference, custom = make_pair(cell, dtype=torch.float32, bptt=bptt, num_layers=2)
    x = torch.randn(20, BATCH, INPUT, requires_grad=True)
    results = []
    for rnn in (reference, custom):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, final = rnn(x)
        grads = torch.autograd.grad(out.float().square().sum(), [x, *rnn.parameters()])
        results.append((out, leaves(final), grads))
    (ref_out, _, ref_grads), (out, finals, grads) = results
    if bptt == "manual":
        assert out.dtype == torch.bfloat16 and all(f.dtype == torch.bfloat16 for f in finals)
    assert max_diff(out.float(), ref_out.float()) <= 0.05
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.dtype == want.dtype == torch.float32
        assert max_diff(got, want) <= 0.05 * want.abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bptt", ["manual", "autograd"])
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_matches_cpu(cell, bptt):
    reference, custom = make_pair(cell, bptt=bptt, num_layers=2, batch_first=True)
    x, state = make_inputs(cell, 20, 2, True, True, True)
    grad_out, grad_finals = fixed_grads(reference, x, state)
    _, _, expected = loss_and_grads(reference, x, state, grad_out, grad_finals)
    cuda = torch.device("cuda")
    custom.to(cuda)
    x_cuda = x.detach().to(cuda).requires_grad_()
    state_cuda = [s.detach().to(cuda).requires_grad_() for s in leaves(state)]
    state_cuda = state_cuda[0] if cell == "gru" else tuple(state_cuda)
    grad_finals = [g.to(cuda) for g in grad_finals]
    _, _, actual = loss_and_grads(custom, x_cuda, state_cuda, grad_out.to(cuda), grad_finals)
    for got, want in zip(actual, expected, strict=True):
        assert got.device.type == "cuda"
        assert max_diff(got.cpu(), want) <= 1e-8


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("cell", "kwargs", "message"),
    [
        ("gru", {"bidirectional": True}, "CustomGRU does not support bidirectional=True"),
        ("lstm", {"bidirectional": True}, "CustomLSTM does not support bidirectional=True"),
        ("lstm", {"proj_size": 2}, "CustomLSTM does not support proj_size"),
        ("gru", {"bptt": "truncated"}, "bptt"),
        ("lstm", {"hidden_size": 0}, "hidden_size"),
        ("gru", {"num_layers": 0}, "num_layers"),
        ("lstm", {"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_arguments_are_one_sentence(cell, kwargs, message):
    arguments = {"input_size": INPUT, "hidden_size": HIDDEN} | kwargs
    with pytest.raises(ValueError, match=message):
        CELLS[cell][1](**arguments)


@pytest.mark.parametrize(
    ("cell", "x_shape", "state_shapes", "message"),
    [
        ("gru", (5, BATCH, INPUT + 1), None, "input features"),
        ("lstm", (2, 5, BATCH, INPUT), None, "2-D .* or 3-D input"),
        ("gru", (5, BATCH, INPUT), [(2, BATCH, HIDDEN)], "hx of shape"),
        ("lstm", (5, BATCH, INPUT), [(1, BATCH, HIDDEN)], r"hx as a pair \(h0, c0\)"),
        ("lstm", (5, INPUT), [(1, BATCH, HIDDEN), (1, BATCH, HIDDEN)], "h0 and c0 of shape"),
        ("gru", (0, BATCH, INPUT), None, "at least one step"),
    ],
)
def test_bad_shapes_are_one_sentence(cell, x_shape, state_shapes, message):
    custom = CELLS[cell][1](INPUT, HIDDEN)
    state = None
    if state_shapes:
        tensors = [torch.zeros(shape) for shape in state_shapes]
        state = tensors[0] if cell == "gru" else tuple(tensors)
    with pytest.raises(ValueError, match=message):
        custom(torch.zeros(x_shape), state)


@pytest.mark.parametrize("cell", CELLS)
def test_double_backward_raises(cell):
    _, custom = make_pair(cell)
    x = torch.randn(6, BATCH, INPUT, dtype=F64, requires_grad=True)
    (grad_x,) = torch.autograd.grad(custom(x)[0].square().sum(), [x], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        grad_x.sum().backward()
