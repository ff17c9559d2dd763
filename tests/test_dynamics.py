"""rnnlab.nn.dynamics: the probes against brute force, closed forms and hand counts (float64)."""

import math

import pytest
import torch
import torch.nn.functional as F

from rnnlab.nn import BACKENDS
from rnnlab.nn.cores import CORES, cell_functions, layer_weights
from rnnlab.nn.dynamics import (
    Trace,
    gradient_through_time,
    reach,
    recurrent_spectrum,
    saturation,
    step_jacobian_norm,
    trace,
)
from rnnlab.nn.lm import RNNLM, ModelConfig
from tests.conftest import CELL_BACKENDS, CLASSIC_CELLS

CELLS = tuple(CORES)
VOCAB, B, T = 13, 3, 9


def model(cell: str, backend: str | None = None, layers: int = 1, **settings) -> RNNLM:
    """PyTorch's core where there is one (the probes must not depend on rnnlab's), else ours."""
    backend = backend or ("builtin" if "builtin" in CORES[cell] else "custom")
    torch.manual_seed(0)
    settings = {"hidden_size": 5, "embedding_dim": 4, **settings}
    config = ModelConfig(cell=cell, backend=backend, num_layers=layers, **settings)
    return RNNLM(VOCAB, config).double().eval()


def window(length: int = T) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(VOCAB, (B, length + 1), generator=torch.Generator().manual_seed(1))
    return ids[:, :-1], ids[:, 1:]


@pytest.mark.parametrize(("cell", "backend"), CELL_BACKENDS)
@pytest.mark.parametrize("output", ["softmax", "adaptive"])
def test_the_trace_is_the_model_itself(cell: str, backend: str, output: str):
    """What the probes unroll is what the model computes, on both backends."""
    net = model(
        cell, backend, layers=2, output=output, cutoffs=[4] if output == "adaptive" else None
    )
    tokens, _ = window()
    with torch.no_grad():
        tr = trace(net, tokens)
        feats, _ = net.features(tokens)
        logits, _ = net(tokens)
    top = torch.stack(tr.hidden(1)[1:]).transpose(0, 1)
    torch.testing.assert_close(top, feats, atol=1e-12, rtol=0)
    expected = logits if output == "adaptive" else F.log_softmax(logits, -1)
    torch.testing.assert_close(tr.log_probs, expected, atol=1e-12, rtol=0)


def brute_force_gradient(net: RNNLM, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean_b ||dl_T^b / dh_t^b|| of the top layer by lag, with torch's own core run on from
    each state ``h_t`` (``c_t`` and the lower layers' states held), through jacobian()."""
    emb = net.embedding(tokens.t()).detach()
    lstm = net.config.cell == "lstm"
    norms = []
    for t in range(T + 1):
        state = net.rnn(emb[:t])[1] if t else None
        if state is None:
            zeros = emb.new_zeros(net.config.num_layers, B, net.config.hidden_size)
            state = (zeros, zeros) if lstm else zeros
        h_t = (state[0] if lstm else state)[-1].detach()

        def loss_from(h: torch.Tensor, t: int = t, state=state) -> torch.Tensor:
            if t == T:
                feats = h
            else:
                hs = (state[0] if lstm else state).detach().clone()
                hs = torch.cat([hs[:-1], h[None]])
                carried = (hs, state[1].detach()) if lstm else hs
                feats = net.rnn(emb[t:], carried)[0][-1]
            return -net.log_probs(feats).gather(1, targets[:, -1:]).sum()

        grad = torch.autograd.functional.jacobian(loss_from, h_t)  # (B, H): example b's own
        norms.append(grad.norm(dim=1).mean())
    return torch.stack(norms).flip(0)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_gradient_through_time_is_the_brute_force_jacobian(cell: str, layers: int):
    net = model(cell, layers=layers)
    tokens, targets = window()
    g = gradient_through_time(trace(net, tokens), targets)
    assert g.shape == (layers, T + 1)
    expected = brute_force_gradient(net, tokens, targets)
    torch.testing.assert_close(g[-1], expected, atol=1e-8, rtol=1e-8)
    assert (g[0] > 0).all()


@pytest.mark.parametrize("cell", CLASSIC_CELLS)
def test_both_backends_probe_alike(cell: str):
    tokens, targets = window()
    probes = []
    for backend in BACKENDS:
        net = model(cell, backend, layers=2)
        tr = trace(net, tokens)
        probes.append(
            (gradient_through_time(tr, targets), step_jacobian_norm(net, tr), saturation(net, tr))
        )
    torch.testing.assert_close(probes[0][0], probes[1][0], atol=1e-12, rtol=0)
    assert probes[0][1:] == probes[1][1:]


def linear_recurrence(a: float, steps: int) -> tuple[RNNLM, Trace, torch.Tensor]:
    """relu with W_ih = I, positive inputs and biases: every state positive, so the layer is
    linear, ``h_t = x_t + b + a h_{t-1}``, and ``dh_t / dh_{t-1} = a I`` exactly."""
    net = model("rnn", nonlinearity="relu", embedding_dim=5)
    with torch.no_grad():
        net.rnn.weight_ih_l0.copy_(torch.eye(5, dtype=torch.float64))
        net.rnn.weight_hh_l0.copy_(a * torch.eye(5, dtype=torch.float64))
        net.rnn.bias_ih_l0.fill_(0.1)
        net.rnn.bias_hh_l0.fill_(0.2)
        net.embedding.weight.abs_()
    tokens, targets = window(steps)
    return net, trace(net, tokens), targets


def test_a_linear_recurrence_decays_as_a_to_the_lag():
    a, steps = 0.9, 80
    net, tr, targets = linear_recurrence(a, steps)
    g = gradient_through_time(tr, targets)[0]
    lags = torch.arange(steps + 1, dtype=torch.float64)
    torch.testing.assert_close(g / g[0], a**lags, atol=0, rtol=1e-12)
    assert reach(g) == math.ceil(math.log(1e-3) / math.log(a)) == 66
    assert step_jacobian_norm(net, tr) == pytest.approx([a], rel=1e-12)
    assert recurrent_spectrum(net, tr) == [
        {"h": pytest.approx({"sigma_max": a, "radius": a}, rel=1e-12)}
    ]


@pytest.mark.parametrize("arch", ["stack", "blocks"])
@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_a_linear_cells_gradient_through_time_is_the_product_of_its_decays(cell: str, arch: str):
    """One layer of h_t = a_t h_{t-1} + b_t: dl_T/dh_{T-j} = dl_T/dh_T * a_T ... a_{T-j+1},
    elementwise, so the probe's norms are those of the closed form; its spectrum entry is
    the spread of a_t, and its step Jacobian diag(a_t) has norm max(a_t). In one residual
    block too: h_t reaches the last prediction only through h_T."""
    blocks = {"arch": "blocks", "embedding_dim": None} if arch == "blocks" else {}
    net = model(cell, dropout=0.0, **blocks)
    tokens, targets = window(40)
    tr = trace(net, tokens)
    g = gradient_through_time(tr, targets)[0]
    h_last = tr.states[0][-1].detach().requires_grad_()
    feats = h_last
    if arch == "blocks":  # the stream at T: the block's input there plus its mixer's output
        block, x_last = net.rnn.blocks[0], net.embed(tokens[:, -1])
        feats = net.rnn.norm(block.after_mixer(x_last, h_last))
    nll = -net.log_probs(feats).gather(1, targets[:, -1:])  # (B, 1): each example's own
    (dl_dh,) = torch.autograd.grad(nll.sum(), h_last)
    decays = tr.activations[0]["a"].detach()  # (T, B, H)
    products = torch.cat([torch.ones_like(decays[:1]), decays.flip(0).cumprod(0)])  # lags 0..T
    expected = (dl_dh * products).norm(dim=2).mean(dim=1)
    torch.testing.assert_close(g, expected, atol=0, rtol=1e-10)
    ((spread,),) = (v.values() for v in recurrent_spectrum(net, tr))
    assert spread == {
        "mean": pytest.approx(float(decays.mean()), rel=1e-12),
        "above_0.99": float((decays > 0.99).double().mean()),
    }
    exact = decays.amax(dim=2).mean()
    assert step_jacobian_norm(net, tr, iterations=500) == pytest.approx([float(exact)], rel=1e-4)


def test_reach_is_capped_at_the_window():
    assert reach(torch.tensor([1.0, 0.5, 1e-3, 9e-4])) == 3
    assert reach(torch.tensor([1.0, 0.5, 1e-3])) == 2  # never below: at least T = 2


@pytest.mark.parametrize("cell", CELLS)
def test_step_jacobian_norm_is_the_exact_spectral_norm(cell: str):
    net = model(cell, layers=2)
    tokens, _ = window()
    tr = trace(net, tokens)
    power = step_jacobian_norm(net, tr, iterations=500)
    for layer, got in enumerate(power):
        exact = exact_step_jacobian_norms(net, tr, layer)
        assert got == pytest.approx(float(exact.mean()), rel=1e-8)


def exact_step_jacobian_norms(net: RNNLM, tr: Trace, layer: int) -> torch.Tensor:
    """||d s_t / d s_{t-1}||_2 of every step and example, one jacobian() each."""
    _, step = cell_functions(net.config.cell, net.config.nonlinearity)
    weights = layer_weights(net.rnn, layer)
    lstm = net.config.cell == "lstm"
    norms = []
    for t, a_t in enumerate(tr.projections[layer].detach().unbind(0)):
        previous = tr.states[layer][t]
        for b in range(B):
            s = (torch.cat([previous[0][b], previous[1][b]]) if lstm else previous[b]).detach()

            def f(s: torch.Tensor, a: torch.Tensor = a_t[b : b + 1]) -> torch.Tensor:
                state = (s[None, :5], s[None, 5:]) if lstm else s[None]
                new, _ = step(a, state, weights)
                return torch.cat(new, 1)[0] if lstm else new[0]

            norms.append(torch.linalg.matrix_norm(torch.autograd.functional.jacobian(f, s), 2))
    return torch.stack(norms)


@pytest.mark.parametrize("cell", CLASSIC_CELLS)
def test_orthogonal_init_has_unit_singular_values(cell: str):
    net = model(cell, recurrent_init="orthogonal")
    tr = trace(net, window(4)[0])
    for sigma, radius in (v.values() for v in recurrent_spectrum(net, tr)[0].values()):
        assert sigma == pytest.approx(1.0, abs=1e-6)
        assert radius == pytest.approx(1.0, abs=1e-6)  # an orthogonal matrix's eigenvalues


def constructed(acts: dict[str, list]) -> Trace:
    """A trace holding only hand-made activations (T=2, B=2, H=3)."""
    tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in acts.items()}
    return Trace([], [], [tensors], torch.empty(0))


def test_saturation_is_the_hand_count():
    tanh = [[[0.995, -0.999, 0.5], [0.0, 0.98, -1.0]], [[0.2, 0.3, 0.991], [-0.99, 0.1, 0.0]]]
    # |a| > 0.99: 0.995, -0.999, -1.0, 0.991 -> 4 of 12 (-0.99 is not above)
    assert saturation(model("rnn"), constructed({"h": tanh})) == [{"h": 4 / 12}]
    relu = [[[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.5, 3.0]]]
    # unit 0 never fires, unit 1 and unit 2 do: 1 of 3 units dead
    assert saturation(model("rnn", nonlinearity="relu"), constructed({"h": relu})) == [{"h": 1 / 3}]
    gate = [[[0.005, 0.995, 0.5], [0.01, 0.99, 0.2]], [[0.0, 1.0, 0.009], [0.3, 0.4, 0.999]]]
    # below 0.01 or above 0.99: 0.005, 0.995, 0.0, 1.0, 0.009, 0.999 -> 6 of 12
    lstm = saturation(model("lstm"), constructed({"f": gate, "g": tanh}))
    assert lstm == [{"f": 6 / 12, "g": 4 / 12}]
