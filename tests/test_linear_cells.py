"""minGRU and minLSTM: both scans alike, the hand-written BPTT against autograd and against
NumPy written from the equations, and the settings that cannot apply to them."""

import numpy as np
import pytest
import torch

from rnnlab.errors import UserError
from rnnlab.nn.lm import RNNLM, ModelConfig
from rnnlab.nn.mingru import MinGRU
from rnnlab.nn.minlstm import MinLSTM
from rnnlab.nn.scan import parallel_scan, reverse_scan, sequential_scan

F64 = torch.float64
CELLS = {"mingru": MinGRU, "minlstm": MinLSTM}
INPUT, HIDDEN = 3, 4


def make(cell: str, layers: int = 1, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return CELLS[cell](INPUT, HIDDEN, num_layers=layers, **options).to(F64)


def inputs(steps: int, batch: int | None, layers: int, with_state: bool, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x_shape = (steps, INPUT) if batch is None else (steps, batch, INPUT)
    h_shape = (layers, HIDDEN) if batch is None else (layers, batch, HIDDEN)
    x = torch.randn(x_shape, generator=generator, dtype=F64)
    h0 = torch.randn(h_shape, generator=generator, dtype=F64) if with_state else None
    return x, h0


def grads(core: torch.nn.Module, x: torch.Tensor, h0: torch.Tensor | None) -> list:
    """The output, the final state and every gradient of a fixed, non-trivial loss."""
    x = x.detach().requires_grad_()
    h0 = None if h0 is None else h0.detach().requires_grad_()
    core.zero_grad()
    output, h_n = core(x, h0)
    weights = torch.linspace(-1, 1, output.numel(), dtype=F64).view_as(output)
    ((output * weights).sum() + h_n.square().sum()).backward()
    leaves = [x.grad] + ([] if h0 is None else [h0.grad])
    return [output.detach(), h_n.detach(), *leaves, *(p.grad for p in core.parameters())]


def gap(a: list, b: list) -> float:
    return max(float((u - v).abs().max()) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("steps", [1, 2, 50, 1000, 4096])
def test_the_parallel_scan_is_the_sequential_one(steps: int):
    generator = torch.Generator().manual_seed(steps)
    a = torch.rand(steps, 2, 3, generator=generator, dtype=F64)
    b = torch.randn(steps, 2, 3, generator=generator, dtype=F64)
    h0 = torch.randn(2, 3, generator=generator, dtype=F64)
    expected = sequential_scan(a, b, h0)
    assert float((parallel_scan(a, b, h0) - expected).abs().max()) <= 1e-10
    loop = torch.empty_like(b)  # G_t = g_t + a_{t+1} G_{t+1}, written out
    loop[-1] = b[-1]
    for t in range(steps - 2, -1, -1):
        loop[t] = b[t] + a[t + 1] * loop[t + 1]
    for mode in ("sequential", "parallel"):
        assert float((reverse_scan(a, b.clone(), mode) - loop).abs().max()) <= 1e-10


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("steps", [1, 2, 50, 1000, 4096])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize(("batch", "with_state"), [(2, True), (2, False), (None, True)])
def test_parallel_equals_sequential_in_every_output_and_gradient(
    cell: str, steps: int, layers: int, batch: int | None, with_state: bool
):
    x, h0 = inputs(steps, batch, layers, with_state)
    sequential = grads(make(cell, layers, scan="sequential"), x, h0)
    parallel = grads(make(cell, layers, scan="parallel"), x, h0)
    assert gap(sequential, parallel) <= 1e-10


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("scan", ["sequential", "parallel"])
@pytest.mark.parametrize("layers", [1, 2])
def test_the_hand_written_backward_is_autograds(cell: str, scan: str, layers: int):
    x, h0 = inputs(30, 3, layers, True)
    manual = grads(make(cell, layers, scan=scan), x, h0)
    autograd = grads(make(cell, layers, scan=scan, bptt="autograd"), x, h0)
    assert gap(manual, autograd) <= 1e-10


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("scan", ["sequential", "parallel"])
def test_gradcheck(cell: str, scan: str):
    core = make(cell, 2, scan=scan)
    x, h0 = inputs(6, 2, 2, True)
    params = tuple(core.parameters())

    def run(x, h0, *weights):
        state = dict(zip((n for n, _ in core.named_parameters()), weights, strict=True))
        output, h_n = torch.func.functional_call(core, state, (x, h0))
        return output, h_n

    args = (x.requires_grad_(), h0.requires_grad_(), *(p.detach().requires_grad_() for p in params))
    assert torch.autograd.gradcheck(run, args)


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-v))


def numpy_layer(cell: str, x: np.ndarray, h0: np.ndarray, w: np.ndarray, b: np.ndarray, dy):
    """One layer from the module docstrings' equations, step by step, and its BPTT by hand:
    returns the states and dL/dx, dL/dh0, dL/dW_ih, dL/db_ih for L = sum(dy * h)."""
    steps, hidden = x.shape[0], h0.shape[-1]
    p = x @ w.T + b
    hs, coeffs, h = [], [], h0
    for t in range(steps):
        if cell == "mingru":
            z, cand = sigmoid(p[t, :, :hidden]), p[t, :, hidden:]
            a, bt = 1 - z, z * cand
        else:
            f, i, cand = (
                sigmoid(p[t, :, :hidden]),
                sigmoid(p[t, :, hidden : 2 * hidden]),
                p[t, :, 2 * hidden :],
            )
            a, bt = f / (f + i), i / (f + i) * cand
        h = a * h + bt
        hs.append(h)
        coeffs.append(a)
    dp = np.zeros_like(p)
    g_next = np.zeros_like(h0)
    for t in range(steps - 1, -1, -1):
        g = dy[t] + (coeffs[t + 1] * g_next if t + 1 < steps else 0)
        h_prev = hs[t - 1] if t else h0
        da, db = g * h_prev, g
        if cell == "mingru":
            z, cand = sigmoid(p[t, :, :hidden]), p[t, :, hidden:]
            dp[t, :, :hidden] = (db * cand - da) * z * (1 - z)
            dp[t, :, hidden:] = db * z
        else:
            f, i = sigmoid(p[t, :, :hidden]), sigmoid(p[t, :, hidden : 2 * hidden])
            cand, s = p[t, :, 2 * hidden :], f + i
            d_inorm = db * cand
            df = (da - d_inorm) * i / s**2
            di = (d_inorm - da) * f / s**2
            dp[t, :, :hidden] = df * f * (1 - f)
            dp[t, :, hidden : 2 * hidden] = di * i * (1 - i)
            dp[t, :, 2 * hidden :] = db * i / s
        g_next = g
    dh0 = coeffs[0] * g_next
    flat = dp.reshape(-1, dp.shape[-1])
    return (np.stack(hs), (dp @ w), dh0, flat.T @ x.reshape(flat.shape[0], -1), flat.sum(0))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("scan", ["sequential", "parallel"])
def test_numpy_from_the_equations_agrees(cell: str, scan: str):
    core = make(cell, 1, scan=scan)
    x, h0 = inputs(12, 3, 1, True)
    dy = torch.linspace(-1, 1, 12 * 3 * HIDDEN, dtype=F64).view(12, 3, HIDDEN)
    x_, h0_ = x.clone().requires_grad_(), h0.clone().requires_grad_()
    output, _ = core(x_, h0_)
    (output * dy).sum().backward()
    w, b = core.weight_ih_l0.detach().numpy(), core.bias_ih_l0.detach().numpy()
    hs, dx, dh0, dw, db = numpy_layer(cell, x.numpy(), h0[0].numpy(), w, b, dy.numpy())
    np.testing.assert_allclose(output.detach().numpy(), hs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(x_.grad.numpy(), dx, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h0_.grad[0].numpy(), dh0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(core.weight_ih_l0.grad.numpy(), dw, rtol=0, atol=1e-12)
    np.testing.assert_allclose(core.bias_ih_l0.grad.numpy(), db, rtol=0, atol=1e-12)


def test_the_weights_are_the_input_blocks_in_the_order_of_the_equations():
    gru, lstm = make("mingru", 2), make("minlstm", 1)
    assert {n: tuple(p.shape) for n, p in gru.named_parameters()} == {
        "weight_ih_l0": (2 * HIDDEN, INPUT),
        "bias_ih_l0": (2 * HIDDEN,),
        "weight_ih_l1": (2 * HIDDEN, HIDDEN),
        "bias_ih_l1": (2 * HIDDEN,),
    }
    assert tuple(lstm.weight_ih_l0.shape) == (3 * HIDDEN, INPUT)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"cell": "mingru"},
            "model.cell=mingru has no torch.nn layer to run it; use model.backend=custom",
        ),
        (
            {"cell": "minlstm", "backend": "custom", "recurrent_init": "orthogonal"},
            "model.recurrent_init=orthogonal shapes W_hh, which model.cell=minlstm does not have",
        ),
        ({"cell": "mingru", "backend": "custom", "scan": "fft"}, "unknown model.scan 'fft'"),
        ({"cell": "gru", "scan": "parallel"}, "model.scan=parallel has no effect here"),
    ],
)
def test_a_setting_that_cannot_apply_to_a_linear_cell_is_one_sentence(settings: dict, message):
    with pytest.raises(UserError, match=message):
        ModelConfig(**settings)


def test_the_language_model_runs_either_scan_to_the_same_numbers():
    """The scan is the model's setting: one language model, two scans, one set of numbers."""
    tokens = torch.randint(11, (2, 40), generator=torch.Generator().manual_seed(3))
    results = []
    for scan in ("sequential", "parallel"):
        torch.manual_seed(0)
        net = RNNLM(
            11,
            ModelConfig(cell="minlstm", backend="custom", scan=scan, num_layers=2, hidden_size=8),
        ).double()
        loss, _ = net.loss(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        results.append([loss.detach(), *(p.grad for p in net.parameters())])
    assert gap(*results) <= 1e-12
