"""``rnnlab-export ckpt_path=... format=onnx|pt2 [out=DIR]``: a trained model, runnable
without rnnlab.

Writes three files into ``out`` (by default this run's directory,
``logs/export/runs/<stamp>/``), each whole or not at all, the manifest last:

- ``model.onnx`` (for onnxruntime, from any language) or ``model.pt2`` (for
  ``torch.export.load``, torch alone): :class:`rnnlab.nn.export.ChunkLM`, a chunk of
  tokens and the state in, log-probabilities and the new state out, batch and time free;
- ``vocab.json``: the checkpoint's vocabulary, ``{"level": ..., "itos": [...]}``;
- ``manifest.json``: what a runner needs (cell, sizes, level, special tokens, the
  inputs and outputs by name, the rnnlab and torch versions) and both files' SHA-256.

With ``verify=true`` it then reloads the model file (onnxruntime, or ``torch.export.load``)
and compares it with the checkpoint's own model, on its own backend, over a random chunk
from a random state. ``scripts/onnx_generate.py`` generates text from the three files
with numpy and onnxruntime alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
import rich
import torch
from omegaconf import DictConfig

import rnnlab
from rnnlab.atomic import write_atomically, write_text_atomically
from rnnlab.cli.app import config_dir, exit_on_user_error
from rnnlab.cli.checks import check_option
from rnnlab.data.vocab import CHAR_UNK, EOS, UNK, Vocab
from rnnlab.errors import UserError
from rnnlab.nn.export import (
    export_program,
    input_names,
    onnx_bytes,
    output_names,
    reference_outputs,
    state_shapes,
)
from rnnlab.nn.lm import RNNLM
from rnnlab.training.module import RNNLMModule

#: what ``format=`` takes, and the model file each writes
MODEL_FILES = {"onnx": "model.onnx", "pt2": "model.pt2"}
VOCAB_FILE, MANIFEST_FILE = "vocab.json", "manifest.json"
#: what marks a manifest as rnnlab-export's, and the layout it follows
MANIFEST_KIND, MANIFEST_VERSION = "rnnlab-export", 2
#: the export extra; onnxruntime is needed only to verify or to run the model
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
#: the largest difference in log-probability or state ``verify`` lets through (float32)
TOLERANCE = 1e-5


def require_onnx_packages() -> None:
    """``format=onnx`` without the ``[export]`` extra: one sentence naming what is missing."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"format=onnx needs {', '.join(missing)} (the export extra): "
            "pip install 'rnnlab[export]', or use format=pt2, which needs torch alone."
        )


def sha256(path: Path) -> str:
    """The file's SHA-256 in hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_model(net: RNNLM, fmt: str, path: Path) -> None:
    """Export ``net`` to ``path`` in ``fmt``; what the exporter refuses, in one sentence."""
    try:
        with quiet_exporter():
            program = export_program(net)
            onnx_model = onnx_bytes(program, net) if fmt == "onnx" else None
    except UserError:
        raise
    except Exception as exc:  # the exporters' own errors run to pages; their first line says why
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        other = "pt2" if fmt == "onnx" else "onnx"
        raise UserError(
            f"torch {torch.__version__} could not export this {net.config.cell} model to "
            f"{fmt} ({reason}); try format={other}, or torch 2.13, with which every cell exports."
        ) from None
    if onnx_model is None:
        write_atomically(path, lambda file: torch.export.save(program, file))
    else:
        write_atomically(path, lambda file: file.write(onnx_model))


#: the exporters' loggers: progress, the optional packages skipped, each optimiser pass
EXPORTER_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Hold back the exporters' warnings and log lines: the command's own say what happened."""
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def manifest(net: RNNLM, vocab: Vocab, fmt: str, out: Path, ckpt_path: str) -> dict[str, Any]:
    """What a runner of the files needs to know, and what they must hash to."""
    model_file, config = MODEL_FILES[fmt], net.config
    return {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "format": fmt,
        "model_file": model_file,
        "model_sha256": sha256(out / model_file),
        "vocab_file": VOCAB_FILE,
        "vocab_sha256": sha256(out / VOCAB_FILE),
        "vocab_size": len(vocab),
        "level": vocab.level,
        "special_tokens": {
            "unk": UNK,
            "unk_id": vocab.unk_id,
            "eos": EOS if vocab.eos_id is not None else None,
            "eos_id": vocab.eos_id,
            "char_unk": CHAR_UNK,
        },
        "cell": config.cell,
        "num_layers": config.num_layers,
        "hidden_size": config.hidden_size,
        "inputs": input_names(net),
        "outputs": output_names(net),
        "state_shapes": {name: list(shape) for name, shape in state_shapes(net, "batch").items()},
        "model": dataclasses.asdict(config),
        "checkpoint": str(ckpt_path),
        "rnnlab_version": rnnlab.__version__,
        "torch_version": torch.__version__,
    }


def runner(fmt: str, path: Path) -> Callable[..., list[torch.Tensor]]:
    """The written model reloaded: a function of the inputs' tensors to the outputs'."""
    if fmt == "pt2":
        module = torch.export.load(path).module()
        return lambda *inputs: list(module(*inputs))
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: torch.Tensor) -> list[torch.Tensor]:
        feeds = {name: t.numpy() for name, t in zip(names, inputs, strict=True)}
        return [torch.from_numpy(a) for a in session.run(None, feeds)]

    return run


@torch.no_grad()
def largest_difference(net: RNNLM, run: Callable[..., list[torch.Tensor]]) -> float:
    """The largest gap between ``run``'s outputs and ``net``'s own (on its own backend) over
    a random chunk of 3 x 17 tokens from a random state."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(net.vocab_size, (3, 17), generator=generator)
    shapes = state_shapes(net, 3).values()
    state = [0.5 * torch.randn(shape, generator=generator) for shape in shapes]
    expected = reference_outputs(net, tokens, *state)
    got = run(tokens, *state)
    return max(float((a - b).abs().max()) for a, b in zip(expected, got, strict=True))


def run(cfg: DictConfig, default_out: Path) -> tuple[Path, dict[str, Any], float, float | None]:
    """Export, write the three files, verify: (out, manifest, seconds, largest difference)."""
    check_option("format", cfg.format, tuple(MODEL_FILES))
    if cfg.format == "onnx":
        require_onnx_packages()
    out = default_out if cfg.out is None else Path(str(cfg.out)).expanduser()
    if (out / MANIFEST_FILE).exists():
        raise UserError(
            f"{out} already holds an export ({MANIFEST_FILE}); choose another out= or remove it."
        )
    module = RNNLMModule.from_checkpoint(cfg.ckpt_path)
    net, vocab = module.net.eval(), module.vocab
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    write_model(net, cfg.format, out / MODEL_FILES[cfg.format])
    seconds = time.perf_counter() - start
    write_text_atomically(out / VOCAB_FILE, json.dumps(vocab.to_dict(), ensure_ascii=False))
    info = manifest(net, vocab, cfg.format, out, cfg.ckpt_path)
    write_text_atomically(out / MANIFEST_FILE, json.dumps(info, indent=2, ensure_ascii=False))
    difference = None
    if cfg.verify:
        difference = largest_difference(net, runner(cfg.format, out / MODEL_FILES[cfg.format]))
        if difference > TOLERANCE:
            raise UserError(
                f"the exported model differs from the checkpoint's by {difference:.2e} "
                f"(more than {TOLERANCE:g}); the files are in {out}, please report this."
            )
    return out, info, seconds, difference


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    out, info, seconds, difference = run(cfg, Path(cfg.paths.output_dir))
    rich.print(
        f"exported {info['cell']} ({info['num_layers']} x {info['hidden_size']}, "
        f"{info['vocab_size']} {info['level']} tokens) to {out / info['model_file']} "
        f"in {seconds:.1f} s, with {VOCAB_FILE} and {MANIFEST_FILE}"
    )
    if difference is not None:
        rich.print(f"verified: largest difference from the checkpoint's model {difference:.1e}")


if __name__ == "__main__":
    main()
