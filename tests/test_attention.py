"""model.cell=attention: the hand-written causal attention against PyTorch's (1e-10 in
float64, outputs and every gradient), gradcheck, a NumPy reference written from the
equations, causality, sampling over the window, and the settings that belong to it."""

import math

import numpy as np
import pytest
import torch

from rnnlab.cli.inspect import read_through_windows
from rnnlab.errors import UserError
from rnnlab.nn.attention import (
    CausalAttention,
    SelfAttention,
    default_heads,
    key_value_cache,
    rotate,
)
from rnnlab.nn.export import ChunkLM
from rnnlab.nn.lm import RNNLM, ModelConfig
from rnnlab.nn.sampling import generate
from tests.conftest import TINY_RUN, TINY_TEXT, compose_train

VOCAB = 13


def attention_model(backend: str = "builtin", **settings) -> RNNLM:
    torch.manual_seed(0)
    options = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "window": 6, **settings}
    return RNNLM(VOCAB, ModelConfig(cell="attention", arch="blocks", backend=backend, **options))


def qkv(batch: int = 2, heads: int = 3, steps: int = 7, size: int = 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn(
            batch, heads, steps, size, generator=generator, dtype=torch.float64
        ).requires_grad_()
        for _ in range(3)
    ]


def test_gradcheck_of_the_hand_written_attention():
    assert torch.autograd.gradcheck(CausalAttention.apply, tuple(qkv()))


@pytest.mark.parametrize("steps", [1, 2, 33])
def test_the_mixer_matches_pytorchs_in_output_and_every_gradient(steps: int):
    """The same parameters through both backends: outputs, the input's gradient and each
    parameter's, to 1e-10 in float64."""
    x = torch.randn(steps, 3, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads = {}
    for backend in ("builtin", "custom"):
        torch.manual_seed(0)
        mixer = SelfAttention(16, 4, backend).double()
        inputs = x.clone().requires_grad_()
        y, state = mixer(inputs)
        assert state == ()
        weights = torch.randn_like(y, generator=torch.Generator().manual_seed(2))
        (y * weights).sum().backward()
        grads[backend] = [y, inputs.grad, *(p.grad for p in mixer.parameters())]
    for built, custom in zip(grads["builtin"], grads["custom"], strict=True):
        assert float((built - custom).detach().abs().max()) <= 1e-10


def numpy_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, grad_o: np.ndarray):
    """The module docstring's equations, forward and backward, one head at a time."""
    out, dq, dk, dv = (np.zeros_like(q) for _ in range(4))
    steps, size = q.shape[-2:]
    for index in np.ndindex(q.shape[:-2]):
        s = q[index] @ k[index].T / math.sqrt(size)
        s[np.triu_indices(steps, 1)] = -np.inf
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        out[index] = p @ v[index]
        dv[index] = p.T @ grad_o[index]
        dp = grad_o[index] @ v[index].T
        ds = p * (dp - (dp * p).sum(1, keepdims=True))
        dq[index] = ds @ k[index] / math.sqrt(size)
        dk[index] = ds.T @ q[index] / math.sqrt(size)
    return out, dq, dk, dv


def test_a_numpy_reference_written_from_the_equations_agrees():
    q, k, v = qkv()
    out = CausalAttention.apply(q, k, v)
    grad_o = torch.randn_like(out, generator=torch.Generator().manual_seed(3))
    out.backward(grad_o)
    expected = numpy_attention(*(t.detach().numpy() for t in (q, k, v, grad_o)))
    for got, want in zip((out, q.grad, k.grad, v.grad), expected, strict=True):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=0, atol=1e-12)


def test_rotary_scores_depend_on_the_distance_alone():
    """``R_t q . R_s k`` is the same for every pair at the same ``t - s``: a key keeps its
    meaning wherever the window starts."""
    generator = torch.Generator().manual_seed(4)
    q, k = torch.randn(2, 8, dtype=torch.float64, generator=generator)
    steps = 9
    rotated_q = rotate(q.expand(1, 1, steps, 8))[0, 0]
    rotated_k = rotate(k.expand(1, 1, steps, 8))[0, 0]
    scores = rotated_q @ rotated_k.T
    for lag in range(steps):
        diagonal = scores.diagonal(-lag)
        assert float((diagonal - diagonal[0]).abs().max()) <= 1e-12


@pytest.mark.parametrize("backend", ["builtin", "custom"])
def test_a_token_reads_nothing_after_it(backend: str):
    net = attention_model(backend).double().eval()
    tokens = torch.randint(VOCAB, (2, 10), generator=torch.Generator().manual_seed(5))
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % VOCAB
    with torch.no_grad():
        before, after = net(tokens)[0], net(changed)[0]
    assert float((before[:, :6] - after[:, :6]).abs().max()) == 0.0
    assert float((before[:, 6:] - after[:, 6:]).abs().max()) > 1e-6


@pytest.mark.parametrize("backend", ["builtin", "custom"])
def test_a_window_fed_token_by_token_through_the_cache_is_the_window_at_once(backend: str):
    net = attention_model(backend).double().eval()
    tokens = torch.randint(VOCAB, (2, 9), generator=torch.Generator().manual_seed(6))
    with torch.no_grad(), key_value_cache(net):
        whole, _ = net(tokens)
        first, state = net(tokens[:, :4])
        steps = [first]
        for t in range(4, 9):
            logits, state = net(tokens[:, t : t + 1], state)
            steps.append(logits)
        keys = state[0][0][0]  # block 0's mixer: (keys, values)
    assert keys.shape == (2, 2, 9, 8)  # (B, heads, every step so far, head size)
    assert float((torch.cat(steps, 1) - whole).abs().max()) <= 1e-12


def windows_recomputed(net: RNNLM, ids: list[int], num_tokens: int, window: int) -> list[int]:
    """Greedy decoding without a cache: every step computes its window from scratch, the
    window starting again from its latest half when full."""
    context, out = ids[-window:], []
    for _ in range(num_tokens):
        with torch.no_grad():
            token = int(net(torch.tensor([context]))[0][0, -1].argmax())
        out.append(token)
        keep = context if len(context) < window else context[len(context) - window // 2 + 1 :]
        context = [*keep, token]
    return out


@pytest.mark.parametrize("backend", ["builtin", "custom"])
def test_greedy_decoding_with_the_cache_is_recomputing_the_window_at_every_step(backend: str):
    net = attention_model(backend, window=6).double()
    with torch.no_grad():  # large weights, so that the greedy choice moves with the context
        net.embedding.weight.mul_(30)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    cached = generate(net, prompt, 40, greedy=True)
    assert cached == windows_recomputed(net.eval(), prompt, 40, window=6)
    assert len(set(cached)) > 2  # it did not just repeat one token
    differs_before_the_window = generate(net, [7, 7, *prompt[2:]], 40, greedy=True)
    assert differs_before_the_window == cached


def test_default_heads_are_64_units_wide_where_the_width_allows():
    assert [default_heads(w) for w in (16, 64, 96, 192, 256, 512)] == [1, 1, 2, 3, 4, 8]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cell": "attention"}, "model.cell=attention is a mixer of residual blocks"),
        (
            {"cell": "attention", "arch": "blocks", "hidden_size": 30, "num_heads": 2},
            "does not split into 2 attention heads of an even size",
        ),
        ({"num_heads": 4}, "model.num_heads=4 has no effect here"),
        ({"window": 64}, "model.window=64 has no effect here"),
        (
            {"cell": "attention", "arch": "blocks", "recurrent_init": "orthogonal"},
            "shapes W_hh, which model.cell=attention does not have",
        ),
        (
            {"cell": "attention", "arch": "blocks", "backend": "custom", "bptt": "autograd"},
            "model.bptt=autograd has no effect here",
        ),
    ],
)
def test_each_bad_setting_is_one_sentence(settings: dict, message: str):
    with pytest.raises(UserError, match=message):
        ModelConfig(**settings)


def test_the_export_and_the_probes_refuse_or_skip_attention_in_one_sentence():
    with pytest.raises(UserError, match="model.cell=attention cannot be exported"):
        ChunkLM(attention_model())


def test_an_attention_run_trains_samples_and_resolves_its_window(
    tmp_path, cli, monkeypatch, caplog
):
    """rnnlab-train with attention mixers on the custom backend: the sampling window is the
    training window unless set, the run's record names it, and the probes say in one line
    that they have nothing to probe."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    attention = ["model.cell=attention", "model.arch=blocks", "model.backend=custom"]
    args = [f"data.path={corpus}", *TINY_RUN, *attention, "callbacks=dynamics", "logger=csv"]
    result = cli("train", *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.code == 0, result.err[-3000:]
    assert "an attention model has none: it probes nothing" in caplog.text
    config = compose_train(args, output_dir=tmp_path / "composed")
    assert ModelConfig.from_settings(config.model).for_window(config.data.seq_len).window == 16
    sampled = cli("sample", f"ckpt_path={tmp_path / 'run/checkpoints/last.ckpt'}", "num_tokens=30")
    assert sampled.code == 0, sampled.err[-3000:]
    text = tmp_path / "text.txt"  # three lines, longer than the window of 16
    text.write_text("".join(TINY_TEXT.splitlines(keepends=True)[:3]), encoding="utf-8")
    inspected = cli(
        "inspect",
        f"ckpt_path={tmp_path / 'run/checkpoints/last.ckpt'}",
        f"text={text}",
        f"hydra.run.dir={tmp_path / 'inspect'}",
    )
    assert inspected.code == 0, inspected.err[-3000:]
    assert (tmp_path / "inspect/inspect.html").is_file()


@pytest.mark.parametrize("layer", [0, -1])
def test_inspecting_attention_reads_each_token_as_sampling_does(layer: int):
    """Each token's units (its block's attention output) and next-token log-probabilities
    are those of the window sampling reads it in: the whole text at once while it fits,
    then windows restarted from their latest half, recomputed here from scratch."""
    net = attention_model(window=6).double().eval()
    ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3]
    acts, log_probs = read_through_windows(net, ids, layer)
    assert acts.shape == (len(ids), 16) and log_probs.shape == (len(ids), VOCAB)
    outputs = []
    mixer = net.rnn.blocks[layer].mixer
    hook = mixer.register_forward_hook(lambda module, args, out: outputs.append(out[0]))
    start = 0  # the window's first token, as Reader moves it
    with torch.no_grad():
        for t in range(len(ids)):
            if t - start >= 6:
                start = t - 6 // 2 + 1
            logits = net(torch.tensor([ids[start : t + 1]]))[0][0, -1]
            assert float((log_probs[t] - logits.log_softmax(-1)).abs().max()) < 1e-10
            assert float((acts[t] - outputs[-1][-1, 0]).abs().max()) < 1e-10
    hook.remove()
