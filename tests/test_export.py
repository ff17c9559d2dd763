"""rnnlab-export: the exported function against the PyTorch model (float32, within 1e-5)
for batch 1 and 7 and chunks of 1 and 50, the state carried across calls, the standalone
ONNX generator against rnnlab-sample, and each mistake in one sentence."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rnnlab.cli.export import sha256
from rnnlab.cli.sample import samples
from rnnlab.cli.train import train
from rnnlab.nn.export import (
    ChunkLM,
    export_program,
    input_names,
    onnx_bytes,
    reference_outputs,
    state_shapes,
)
from rnnlab.nn.lm import RNNLM, ModelConfig
from rnnlab.training.module import RNNLMModule
from tests.conftest import (
    CELL_BACKENDS,
    REPO,
    TINY_RUN,
    TINY_TEXT,
    compose_train,
    invoke,
    one_sentence,
)

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="the export extra is not installed")
FORMATS = ["pt2", pytest.param("onnx", marks=needs_onnx)]
VOCAB = 23
#: each classic cell, backend and output once, the LSTM on both backends, two layers, both
#: kinds of tied embeddings, and residual blocks with a convolution, whose state is all
#: three of h, c and m (cell, backend, output, layers, tie_weights, arch)
MODELS = [
    ("rnn", "builtin", "softmax", 1, True, "stack"),
    ("gru", "custom", "adaptive", 1, False, "stack"),
    ("lstm", "builtin", "adaptive", 2, True, "stack"),
    ("lstm", "custom", "softmax", 2, False, "blocks"),
]
#: what a blocks model has besides its mixer: an MLP, and a convolution that the state carries
BLOCKS = {"mlp_ratio": 2, "conv_kernel": 3}
Run = Callable[..., list[torch.Tensor]]


def model(
    cell: str,
    backend: str,
    output: str,
    layers: int,
    tie: bool = False,
    arch: str = "stack",
    dtype=torch.float32,
) -> RNNLM:
    torch.manual_seed(0)
    config = ModelConfig(
        cell=cell,
        backend=backend,
        output=output,
        num_layers=layers,
        hidden_size=12,
        tie_weights=tie,
        arch=arch,
        **({"cutoffs": (5, 11), "div_value": 2.0} if output == "adaptive" else {}),
        **(BLOCKS if arch == "blocks" else {}),
    )
    return RNNLM(VOCAB, config).to(dtype).eval()


def inputs(net: RNNLM, batch: int, steps: int, seed: int = 1, dtype=torch.float32) -> list:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(VOCAB, (batch, steps), generator=generator)
    shapes = state_shapes(net, batch).values()
    return [tokens, *(torch.randn(shape, generator=generator, dtype=dtype) for shape in shapes)]


@dataclasses.dataclass
class Exported:
    net: RNNLM
    runs: dict[str, Run]


@pytest.fixture(scope="module", params=MODELS, ids=lambda m: "-".join(map(str, m)))
def exported(request, tmp_path_factory) -> Exported:
    """One model exported both ways and read back: torch.export.load and onnxruntime."""
    net = model(*request.param)
    program = export_program(net)
    path = tmp_path_factory.mktemp("export") / "model.pt2"
    torch.export.save(program, path)
    module = torch.export.load(path).module()
    runs: dict[str, Run] = {"pt2": torch.no_grad()(lambda *xs: list(module(*xs)))}
    if HAS_ONNX:
        import onnxruntime

        session = onnxruntime.InferenceSession(onnx_bytes(program, net))
        names = input_names(net)

        def run_onnx(*xs: torch.Tensor) -> list[torch.Tensor]:
            feeds = {n: x.numpy() for n, x in zip(names, xs, strict=True)}
            return [torch.from_numpy(a) for a in session.run(None, feeds)]

        runs["onnx"] = run_onnx
    return Exported(net, runs)


def largest_gap(a: list[torch.Tensor], b: list[torch.Tensor] | tuple) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("steps", [1, 50])
def test_the_export_gives_the_models_log_probabilities(
    exported: Exported, fmt: str, batch: int, steps: int
):
    xs = inputs(exported.net, batch, steps)
    with torch.no_grad():
        expected = reference_outputs(exported.net, *xs)
    got = exported.runs[fmt](*xs)
    assert got[0].shape == (batch, steps, VOCAB)
    assert largest_gap(got, expected) < 1e-5
    assert torch.allclose(got[0].exp().sum(-1), torch.ones(batch, steps), atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_state_carried_across_two_calls_is_one_call_over_both(exported: Exported, fmt: str):
    run = exported.runs[fmt]
    tokens, *state = inputs(exported.net, 7, 50)
    whole = run(tokens, *state)
    first = run(tokens[:, :20], *state)
    second = run(tokens[:, 20:], *first[1:])
    assert largest_gap([torch.cat([first[0], second[0]], 1), *second[1:]], whole) < 1e-5


@pytest.mark.parametrize(("cell", "backend"), CELL_BACKENDS)
@pytest.mark.parametrize("output", ["softmax", "adaptive"])
@pytest.mark.parametrize("arch", ["stack", "blocks"])
def test_the_scan_over_time_is_the_model_itself_in_float64(
    cell: str, backend: str, output: str, arch: str
):
    """What is exported, unexported: every cell, backend, output and arch, to 1e-10."""
    net = model(cell, backend, output, 2, tie=True, arch=arch, dtype=torch.float64)
    xs = inputs(net, 3, 9, dtype=torch.float64)
    with torch.no_grad():
        assert largest_gap(list(ChunkLM(net)(*xs)), reference_outputs(net, *xs)) < 1e-10


# -- the command and the standalone generator -------------------------------------------

GENERATOR = REPO / "scripts" / "onnx_generate.py"


def generator():
    """scripts/onnx_generate.py as a module (it is a script, not part of rnnlab)."""
    spec = importlib.util.spec_from_file_location("onnx_generate", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def checkpoint(run: Path) -> Path:
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def word_run(tmp_path_factory) -> Path:
    """A tiny word-level GRU in residual blocks with a convolution: the generator's other
    tokenization, another cell, and a state of two kinds (h and m)."""
    root = tmp_path_factory.mktemp("word")
    (root / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    blocks = ["model.arch=blocks", "model.num_layers=2", "model.conv_kernel=3"]
    overrides = [
        f"data.path={root / 'tiny.txt'}",
        "data.level=word",
        "model.cell=gru",
        *blocks,
        *TINY_RUN,
    ]
    train(compose_train(overrides, output_dir=root / "run"))
    return root / "run"


def export(cli, ckpt: Path, out: Path, *args: str):
    return cli("export", f"ckpt_path={ckpt}", f"out={out}", f"hydra.run.dir={out}.hydra", *args)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, trained_run: Path) -> Path:
    """The tiny char model exported to ONNX once, for the generator's refusals to spoil."""
    out = tmp_path_factory.mktemp("onnx") / "out"
    code = invoke(
        "export",
        f"ckpt_path={checkpoint(trained_run)}",
        f"out={out}",
        f"hydra.run.dir={out}.hydra",
        "verify=false",
    )
    assert code == 0
    return out


@needs_onnx
@pytest.mark.parametrize(("level", "prompt"), [("char", "line 1"), ("word", "the quick")])
def test_the_generator_prints_what_rnnlab_sample_prints(
    level: str, prompt: str, request, tmp_path: Path, cli, capsys
):
    if level == "char":
        ckpt = checkpoint(request.getfixturevalue("trained_run"))
        out = request.getfixturevalue("onnx_dir")
    else:
        ckpt, out = checkpoint(request.getfixturevalue("word_run")), tmp_path / "out"
        result = export(cli, ckpt, out)
        assert result.code == 0, result.err[-2000:]
        assert "verified" in result.out  # onnxruntime against the checkpoint's model
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["model_sha256"] == sha256(out / "model.onnx")
    module = RNNLMModule.from_checkpoint(ckpt)
    assert (manifest["level"], manifest["vocab_size"]) == (level, len(module.vocab))
    assert manifest["cell"] == module.net.config.cell
    assert list(manifest["state_shapes"]) == (["h", "m"] if level == "word" else ["h"])

    overrides = [f"ckpt_path={ckpt}", f"prompt='{prompt}'", "num_tokens=80", "greedy=true"]
    expected = samples(compose_train(overrides, name="sample"))[0]
    capsys.readouterr()
    generator().main([str(out), "--prompt", prompt, "--num-tokens", "80", "--greedy"])
    assert capsys.readouterr().out == expected + "\n"
    assert len(module.vocab.prompt_ids(expected)) > 60  # it did generate


def test_pt2_export_reloads_with_torch_alone(trained_run: Path, tmp_path: Path, cli):
    result = export(cli, checkpoint(trained_run), tmp_path / "out", "format=pt2")
    assert result.code == 0, result.err[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "pt2"
    assert manifest["model_sha256"] == sha256(tmp_path / "out" / "model.pt2")
    program = torch.export.load(tmp_path / "out" / "model.pt2").module()
    net = RNNLMModule.from_checkpoint(checkpoint(trained_run)).net.eval()
    xs = inputs(net, 2, 5)
    xs[0] = xs[0] % net.embedding.num_embeddings
    with torch.no_grad():
        assert largest_gap(list(program(*xs)), reference_outputs(net, *xs)) < 1e-5


def test_a_bad_format_an_occupied_out_a_refusal_and_a_missing_extra_are_one_sentence(
    trained_run: Path, tmp_path: Path, cli, monkeypatch
):
    ckpt = checkpoint(trained_run)
    assert "format='tflite' is not a choice" in one_sentence(
        export(cli, ckpt, tmp_path / "a", "format=tflite")
    )
    occupied = tmp_path / "b"
    occupied.mkdir()
    (occupied / "manifest.json").write_text("{}", encoding="utf-8")
    assert "already holds an export" in one_sentence(export(cli, ckpt, occupied, "format=pt2"))
    assert (occupied / "manifest.json").read_text(encoding="utf-8") == "{}"
    assert not (occupied / "model.pt2").exists()

    def refuse(net):
        raise RuntimeError("Dynamic control flow is not supported\n(a page of details)")

    monkeypatch.setattr("rnnlab.cli.export.export_program", refuse)
    sentence = one_sentence(export(cli, ckpt, tmp_path / "d", "format=pt2"))
    assert "could not export this rnn model to pt2 (Dynamic control flow" in sentence
    assert "try format=onnx" in sentence and not (tmp_path / "d" / "manifest.json").exists()

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxscript" else real(name, *a),
    )
    sentence = one_sentence(export(cli, ckpt, tmp_path / "c", "format=onnx"))
    assert "needs onnxscript" in sentence and "rnnlab[export]" in sentence


def spoiled(onnx_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    copy.mkdir(parents=True)
    for name in ("model.onnx", "vocab.json", "manifest.json"):
        (copy / name).write_bytes((onnx_dir / name).read_bytes())
    return copy


def refusal(directory: Path, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        generator().main([str(directory), "--num-tokens", "5", *args])
    message = exit_.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message
    return message


def rewrite_manifest(directory: Path, **changes) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**manifest, **changes}), encoding="utf-8")


@needs_onnx
def test_the_generator_refuses_corrupt_and_foreign_files_in_one_sentence(
    onnx_dir: Path, tmp_path: Path
):
    corrupt = spoiled(onnx_dir, tmp_path / "1")
    data = bytearray((corrupt / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / "model.onnx").write_bytes(bytes(data))
    assert "does not match the SHA-256" in refusal(corrupt)

    foreign = spoiled(onnx_dir, tmp_path / "2")  # another model, its hash written in
    net = model("lstm", "custom", "softmax", 1)
    (foreign / "model.onnx").write_bytes(onnx_bytes(export_program(net), net))
    rewrite_manifest(foreign, model_sha256=sha256(foreign / "model.onnx"))
    assert "was not written by rnnlab-export" in refusal(foreign)

    stranger = spoiled(onnx_dir, tmp_path / "3")
    (stranger / "manifest.json").write_text('{"name": "resnet"}', encoding="utf-8")
    assert "is not an rnnlab-export manifest" in refusal(stranger)


@needs_onnx
def test_the_generator_refuses_a_vocabulary_that_does_not_match(onnx_dir: Path, tmp_path: Path):
    shorter = spoiled(onnx_dir, tmp_path / "1")
    vocab = json.loads((shorter / "vocab.json").read_text(encoding="utf-8"))
    (shorter / "vocab.json").write_text(json.dumps({**vocab, "itos": vocab["itos"][:-1]}))
    assert "does not match the SHA-256" in refusal(shorter)
    rewrite_manifest(shorter, vocab_sha256=sha256(shorter / "vocab.json"))
    assert "tokens where manifest.json says" in refusal(shorter)
    assert "never saw: 'é'" in refusal(onnx_dir, "--prompt", "é")


#: runs the generator with torch and rnnlab (or onnxruntime) made impossible to import
BLOCKED_RUN = """
import runpy, sys
BLOCKED = sys.argv[1].split(",")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}", name=name)
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@needs_onnx
def test_the_generator_needs_neither_torch_nor_rnnlab(onnx_dir: Path, capsys):
    def run(blocked: str) -> subprocess.CompletedProcess[str]:
        argv = [blocked, str(GENERATOR), str(onnx_dir), "--prompt", "line", "--greedy"]
        return subprocess.run(
            [sys.executable, "-c", BLOCKED_RUN, *argv], capture_output=True, text=True, timeout=120
        )

    alone = run("torch,rnnlab,lightning")
    assert alone.returncode == 0, alone.stderr[-2000:]
    generator().main([str(onnx_dir), "--prompt", "line", "--greedy"])
    assert alone.stdout == capsys.readouterr().out
    assert "needs numpy and onnxruntime" in one_sentence(run("onnxruntime"))
