"""Correctness of rnnlab.nn.rnn.CustomRNN against torch.nn.RNN and a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from rnnlab.nn.rnn import CustomRNN, ElmanBPTT

F64 = torch.float64
TOL = 1e-10
INPUT, HIDDEN, BATCH = 3, 5, 4


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def make_pair(seed: int = 0, dtype: torch.dtype = F64, **kwargs) -> tuple[nn.RNN, CustomRNN]:
    """nn.RNN and a CustomRNN carrying the very same weights (copied from nn.RNN)."""
    bptt = kwargs.pop("bptt", "manual")
    torch.manual_seed(seed)
    reference = nn.RNN(INPUT, HIDDEN, **kwargs).to(dtype)
    custom = CustomRNN(INPUT, HIDDEN, bptt=bptt, **kwargs).to(dtype)
    custom.load_state_dict(reference.state_dict())
    return reference, custom


def make_inputs(
    steps: int, num_layers: int, batch_first: bool, batched: bool, with_h0: bool, dtype=F64
):
    """Random input (and h0 or None), both requiring grad, shaped as nn.RNN wants them."""
    if batched:
        shape = (BATCH, steps, INPUT) if batch_first else (steps, BATCH, INPUT)
        h_shape = (num_layers, BATCH, HIDDEN)
    else:
        shape, h_shape = (steps, INPUT), (num_layers, HIDDEN)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    h0 = torch.randn(h_shape, dtype=dtype, requires_grad=True) if with_h0 else None
    return x, h0


def loss_and_grads(rnn: nn.Module, x, h0, grad_out, grad_hn):
    """Run, contract output and h_n with fixed random tensors, return (output, h_n, grads)."""
    output, h_n = rnn(x, h0)
    loss = (output * grad_out).sum() + (h_n * grad_hn).sum()
    wrt = [x] + ([h0] if h0 is not None else []) + list(rnn.parameters())
    return output, h_n, torch.autograd.grad(loss, wrt)


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("steps", [1, 50])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_forward_matches_nn_rnn(
    num_layers, nonlinearity, bias, batch_first, batched, with_h0, steps
):
    kwargs = dict(
        num_layers=num_layers, nonlinearity=nonlinearity, bias=bias, batch_first=batch_first
    )
    reference, custom = make_pair(**kwargs)
    x, h0 = make_inputs(steps, num_layers, batch_first, batched, with_h0)
    with torch.no_grad():
        expected_out, expected_hn = reference(x, h0)
        out, h_n = custom(x, h0)
    assert max_diff(out, expected_out) <= TOL
    assert max_diff(h_n, expected_hn) <= TOL
    assert h_n.abs().max() > 0.01  # not trivially zero (a deep relu stack may output zeros)


def test_initial_state_matters_and_carries_over():
    """Two chunks with h_n fed back as h0 equal one run over the whole sequence."""
    _, custom = make_pair(num_layers=2)
    x = torch.randn(30, BATCH, INPUT, dtype=F64)
    full_out, full_hn = custom(x)
    first_out, first_hn = custom(x[:12])
    second_out, second_hn = custom(x[12:], first_hn)
    assert max_diff(torch.cat([first_out, second_out]), full_out) <= TOL
    assert max_diff(second_hn, full_hn) <= TOL
    fresh_out, _ = custom(x[12:])
    assert max_diff(fresh_out, second_out) > 1e-3


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("with_h0", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bptt", ["manual", "autograd"])
def test_gradients_match_nn_rnn(bptt, num_layers, nonlinearity, bias, batch_first, with_h0):
    kwargs = dict(
        num_layers=num_layers, nonlinearity=nonlinearity, bias=bias, batch_first=batch_first
    )
    reference, custom = make_pair(bptt=bptt, **kwargs)
    x, h0 = make_inputs(20, num_layers, batch_first, True, with_h0)
    out, h_n = reference(x, h0)
    grad_out, grad_hn = torch.randn_like(out), torch.randn_like(h_n)
    _, _, expected = loss_and_grads(reference, x, h0, grad_out, grad_hn)
    _, _, actual = loss_and_grads(custom, x, h0, grad_out, grad_hn)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert want.abs().max() > 0  # every gradient is exercised
        assert max_diff(got, want) <= TOL


@pytest.mark.parametrize("bptt", ["manual", "autograd"])
@pytest.mark.parametrize("used", ["output", "h_n"])
def test_gradients_when_only_one_result_is_used(bptt, used):
    reference, custom = make_pair(bptt=bptt, num_layers=2)
    x, h0 = make_inputs(15, 2, False, True, True)
    results = []
    for rnn in (reference, custom):
        out, h_n = rnn(x, h0)
        loss = out.sin().sum() if used == "output" else h_n.sin().sum()
        results.append(torch.autograd.grad(loss, [x, h0, *rnn.parameters()]))
    for got, want in zip(results[1], results[0], strict=True):
        assert max_diff(got, want) <= TOL


@pytest.mark.parametrize("bptt", ["manual", "autograd"])
def test_gradients_unbatched(bptt):
    reference, custom = make_pair(bptt=bptt, num_layers=2, batch_first=True)
    x, h0 = make_inputs(10, 2, True, False, True)
    grad_out, grad_hn = torch.randn(10, HIDDEN, dtype=F64), torch.randn(2, HIDDEN, dtype=F64)
    _, _, expected = loss_and_grads(reference, x, h0, grad_out, grad_hn)
    _, _, actual = loss_and_grads(custom, x, h0, grad_out, grad_hn)
    for got, want in zip(actual, expected, strict=True):
        assert max_diff(got, want) <= TOL


def test_gradient_accumulates_over_two_backwards():
    """.grad after two identical backwards is twice one: no gradient tensor is shared or reused."""
    _, custom = make_pair(num_layers=2)
    x = torch.randn(8, BATCH, INPUT, dtype=F64)
    custom(x)[0].square().sum().backward()
    once = {name: p.grad.clone() for name, p in custom.named_parameters()}
    custom(x)[0].square().sum().backward()
    for name, p in custom.named_parameters():
        assert max_diff(p.grad, 2 * once[name]) <= TOL


def test_frozen_weights_or_constant_input():
    """needs_input_grad paths: only what is asked for is computed, and it is right."""
    reference, custom = make_pair()
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


def test_manual_forward_builds_no_graph():
    """The whole layer is one autograd node whose inputs are the leaves themselves."""
    _, custom = make_pair()
    x = torch.randn(40, BATCH, INPUT, dtype=F64, requires_grad=True)
    h0 = torch.randn(1, BATCH, HIDDEN, dtype=F64, requires_grad=True)
    out, _ = custom(x, h0)
    node = out.grad_fn
    assert "ElmanBPTT" in node.name()
    kinds = [fn.name() if fn is not None else None for fn, _ in node.next_functions]
    # x, h0[0] (a select of the leaf h0), W_ih, W_hh, then the two biases.
    assert kinds[0] == "torch::autograd::AccumulateGrad"
    assert kinds[1] == "SelectBackward0"
    assert kinds[2:6] == ["torch::autograd::AccumulateGrad"] * 4


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_gradcheck_manual_layer(nonlinearity, bias):
    torch.manual_seed(0)
    steps, batch, inputs, hidden = 4, 2, 3, 4

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(shape, dtype=F64).mul_(0.5).requires_grad_()

    args = [
        leaf(steps, batch, inputs),
        leaf(batch, hidden),
        leaf(hidden, inputs),
        leaf(hidden, hidden),
    ]
    args += [leaf(hidden), leaf(hidden)] if bias else [None, None]

    def layer(*args):
        return ElmanBPTT.apply(*args, nonlinearity)

    assert torch.autograd.gradcheck(layer, args, eps=1e-6, atol=1e-7)


def test_gradcheck_manual_module_with_h0():
    _, custom = make_pair(num_layers=2, batch_first=True)
    names = [name for name, _ in custom.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in custom.parameters()]
    x = torch.randn(2, 5, INPUT, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 2, HIDDEN, dtype=F64, requires_grad=True)

    def run(x, h0, *params):
        return functional_call(custom, dict(zip(names, params, strict=True)), (x, h0))

    assert torch.autograd.gradcheck(run, (x, h0, *params), eps=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- NumPy reference


def numpy_rnn_reference(x, h0, w_ih, w_hh, b_ih, b_hh, grad_out, grad_hn, nonlinearity):
    """Textbook forward and BPTT of one Elman layer, step by step, in NumPy."""
    phi = np.tanh if nonlinearity == "tanh" else (lambda z: np.maximum(z, 0.0))
    steps = x.shape[0]
    hs, h = [], h0
    for t in range(steps):
        h = phi(x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        hs.append(h)
    dw_ih, dw_hh, db = np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros_like(b_ih)
    dx = np.zeros_like(x)
    dh_next = grad_hn
    for t in reversed(range(steps)):
        dh = grad_out[t] + dh_next
        dphi = 1.0 - hs[t] ** 2 if nonlinearity == "tanh" else (hs[t] > 0).astype(float)
        dz = dh * dphi
        h_prev = hs[t - 1] if t > 0 else h0
        dw_ih += dz.T @ x[t]
        dw_hh += dz.T @ h_prev
        db += dz.sum(axis=0)
        dx[t] = dz @ w_ih
        dh_next = dz @ w_hh
    grads = {"x": dx, "h0": dh_next, "weight_ih_l0": dw_ih, "weight_hh_l0": dw_hh}
    grads |= {"bias_ih_l0": db, "bias_hh_l0": db}
    return np.stack(hs), hs[-1], grads


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bptt", ["manual", "autograd"])
def test_matches_numpy_reference(bptt, nonlinearity):
    _, custom = make_pair(bptt=bptt, nonlinearity=nonlinearity)
    rng = np.random.default_rng(1)
    x_np = rng.standard_normal((25, BATCH, INPUT))
    h0_np = rng.standard_normal((BATCH, HIDDEN))
    grad_out_np = rng.standard_normal((25, BATCH, HIDDEN))
    grad_hn_np = rng.standard_normal((BATCH, HIDDEN))
    params = {name: p.detach().numpy() for name, p in custom.named_parameters()}
    out_np, hn_np, grads_np = numpy_rnn_reference(
        x_np, h0_np, *params.values(), grad_out_np, grad_hn_np, nonlinearity
    )

    x = torch.tensor(x_np, requires_grad=True)
    h0 = torch.tensor(h0_np[None], requires_grad=True)
    grad_out, grad_hn = torch.tensor(grad_out_np), torch.tensor(grad_hn_np[None])
    out, h_n, grads = loss_and_grads(custom, x, h0, grad_out, grad_hn)
    assert np.abs(out.detach().numpy() - out_np).max() <= TOL
    assert np.abs(h_n[0].detach().numpy() - hn_np).max() <= TOL
    names = ["x", "h0", *params]
    for name, got in zip(names, grads, strict=True):
        got = got[0] if name == "h0" else got
        assert np.abs(got.numpy() - grads_np[name]).max() <= TOL, name


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("bias", [True, False])
def test_same_seed_same_initial_weights(bias):
    torch.manual_seed(123)
    reference = nn.RNN(7, 11, num_layers=3, bias=bias)
    torch.manual_seed(123)
    custom = CustomRNN(7, 11, num_layers=3, bias=bias)
    ref_state, state = reference.state_dict(), custom.state_dict()
    assert list(state) == list(ref_state)
    for name in ref_state:
        assert torch.equal(state[name], ref_state[name]), name
    bound = 1 / 11**0.5
    assert all(p.abs().max() <= bound for p in custom.parameters())
    assert not any(isinstance(m, nn.RNNBase) for m in custom.modules())


def test_state_dict_round_trip_both_ways():
    reference, _ = make_pair(num_layers=2, nonlinearity="relu")
    custom = CustomRNN(INPUT, HIDDEN, num_layers=2, nonlinearity="relu").to(F64)
    custom.load_state_dict(reference.state_dict())  # strict: same names and shapes
    back = nn.RNN(INPUT, HIDDEN, num_layers=2, nonlinearity="relu").to(F64)
    back.load_state_dict(custom.state_dict())
    for name, value in reference.state_dict().items():
        assert torch.equal(back.state_dict()[name], value)
    x = torch.randn(9, BATCH, INPUT, dtype=F64)
    assert max_diff(back(x)[0], custom(x)[0]) <= TOL


# --------------------------------------------------------------------------- dropout and modes


@pytest.mark.parametrize("bptt", ["manual", "autograd"])
def test_dropout_random_in_training_and_off_in_eval(bptt):
    reference, custom = make_pair(bptt=bptt, num_layers=3, dropout=0.5)
    x = torch.randn(10, BATCH, INPUT, dtype=F64)
    first, second = custom(x)[0], custom(x)[0]
    assert max_diff(first, second) > 1e-3
    reference.eval()
    custom.eval()
    assert max_diff(custom(x)[0], reference(x)[0]) <= TOL
    assert max_diff(custom(x)[0], custom(x)[0]) == 0


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bptt", ["manual", "autograd"])
def test_dropout_matches_nn_rnn_under_same_seed(bptt, batch_first):
    """Dropout masks are drawn in nn.RNN's order, so the same seed gives the same result."""
    reference, custom = make_pair(bptt=bptt, num_layers=3, dropout=0.4, batch_first=batch_first)
    x, h0 = make_inputs(12, 3, batch_first, True, True)
    grad_out = torch.randn(x.shape[:2] + (HIDDEN,), dtype=F64)
    grad_hn = torch.randn(3, BATCH, HIDDEN, dtype=F64)
    torch.manual_seed(7)
    expected = loss_and_grads(reference, x, h0, grad_out, grad_hn)
    torch.manual_seed(7)
    actual = loss_and_grads(custom, x, h0, grad_out, grad_hn)
    assert max_diff(actual[0], expected[0]) <= TOL
    assert max_diff(actual[1], expected[1]) <= TOL
    for got, want in zip(actual[2], expected[2], strict=True):
        assert max_diff(got, want) <= TOL


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="no effect"):
        CustomRNN(INPUT, HIDDEN, num_layers=1, dropout=0.3)


@pytest.mark.parametrize("bptt", ["manual", "autograd"])
def test_no_grad_and_eval(bptt):
    reference, custom = make_pair(bptt=bptt, num_layers=2)
    reference.eval()
    custom.eval()
    x = torch.randn(10, BATCH, INPUT, dtype=F64)
    with torch.no_grad():
        out, h_n = custom(x)
    assert out.grad_fn is None and h_n.grad_fn is None
    assert max_diff(out, reference(x)[0]) <= TOL


@pytest.mark.parametrize("bptt", ["manual", "autograd"])
def test_float32(bptt):
    reference, custom = make_pair(dtype=torch.float32, bptt=bptt, num_layers=2)
    x, h0 = make_inputs(30, 2, False, True, True, dtype=torch.float32)
    grad_out, grad_hn = torch.randn(30, BATCH, HIDDEN), torch.randn(2, BATCH, HIDDEN)
    out_ref, hn_ref, expected = loss_and_grads(reference, x, h0, grad_out, grad_hn)
    out, h_n, actual = loss_and_grads(custom, x, h0, grad_out, grad_hn)
    assert out.dtype == torch.float32 and h_n.dtype == torch.float32
    assert max_diff(out, out_ref) <= 1e-5
    for got, want in zip(actual, expected, strict=True):
        assert got.dtype == torch.float32
        assert max_diff(got, want) <= 1e-4


@pytest.mark.parametrize("bptt", ["manual", "autograd"])
def test_autocast_bfloat16_follows_nn_rnn(bptt):
    """Under CPU autocast both run in bfloat16 and agree to bfloat16 precision."""
    reference, custom = make_pair(dtype=torch.float32, bptt=bptt, num_layers=2)
    x = torch.randn(20, BATCH, INPUT, requires_grad=True)
    results = []
    for rnn in (reference, custom):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, h_n = rnn(x)
        grads = torch.autograd.grad(out.float().square().sum(), [x, *rnn.parameters()])
        results.append((out, h_n, grads))
    (ref_out, ref_hn, ref_grads), (out, h_n, grads) = results
    assert out.dtype == ref_out.dtype == torch.bfloat16
    assert h_n.dtype == ref_hn.dtype == torch.bfloat16
    assert max_diff(out.float(), ref_out.float()) <= 0.05
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.dtype == want.dtype == torch.float32
        assert max_diff(got, want) <= 0.05 * want.abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bptt", ["manual", "autograd"])
def test_cuda_matches_cpu(bptt):
    reference, custom = make_pair(bptt=bptt, num_layers=2, batch_first=True)
    x, h0 = make_inputs(20, 2, True, True, True)
    grad_out = torch.randn(BATCH, 20, HIDDEN, dtype=F64)
    grad_hn = torch.randn(2, BATCH, HIDDEN, dtype=F64)
    _, _, expected = loss_and_grads(reference, x, h0, grad_out, grad_hn)
    device = torch.device("cuda")
    custom.to(device)
    x_cuda = x.detach().to(device).requires_grad_()
    h0_cuda = h0.detach().to(device).requires_grad_()
    grad_out, grad_hn = grad_out.to(device), grad_hn.to(device)
    out, h_n, actual = loss_and_grads(custom, x_cuda, h0_cuda, grad_out, grad_hn)
    assert out.device.type == "cuda" and h_n.device.type == "cuda"
    for got, want in zip(actual, expected, strict=True):
        assert got.device.type == "cuda"
        assert max_diff(got.cpu(), want) <= 1e-8


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bidirectional=True), "bidirectional"),
        (dict(proj_size=2), "proj_size"),
        (dict(nonlinearity="tahn"), "nonlinearity"),
        (dict(bptt="truncated"), "bptt"),
        (dict(hidden_size=0), "hidden_size"),
        (dict(input_size=-1), "input_size"),
        (dict(num_layers=0), "num_layers"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    arguments = dict(input_size=INPUT, hidden_size=HIDDEN) | kwargs
    with pytest.raises(ValueError, match=message):
        CustomRNN(**arguments)


@pytest.mark.parametrize(
    "x_shape, h_shape",
    [
        ((5, BATCH, INPUT + 1), None),  # wrong feature size
        ((2, 5, BATCH, INPUT), None),  # 4-D input
        ((5, BATCH, INPUT), (1, HIDDEN)),  # 2-D hx for batched input
        ((5, BATCH, INPUT), (2, BATCH, HIDDEN)),  # wrong number of layers
        ((5, INPUT), (1, BATCH, HIDDEN)),  # 3-D hx for unbatched input
        ((5, INPUT), (1, 1, HIDDEN)),  # 3-D hx for unbatched input, even with batch 1
        ((0, BATCH, INPUT), None),  # empty sequence
    ],
)
def test_bad_shapes_raise_value_error(x_shape, h_shape):
    custom = CustomRNN(INPUT, HIDDEN)
    hx = torch.zeros(h_shape) if h_shape else None
    with pytest.raises(ValueError, match="CustomRNN expects"):
        custom(torch.zeros(x_shape), hx)


def test_double_backward_raises():
    _, custom = make_pair()
    x = torch.randn(6, BATCH, INPUT, dtype=F64, requires_grad=True)
    (grad_x,) = torch.autograd.grad(custom(x)[0].square().sum(), [x], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        grad_x.sum().backward()
