"""What rnnlab-export costs, and how fast its ONNX model generates, side by side with
rnnlab-sample on the same weights.

For each cell: the time to export (``torch.export``, then ONNX from that program), and
greedy generation of ``--tokens`` tokens after a 20-token prompt, one token per call with
the state carried, by rnnlab-sample's loop (:func:`rnnlab.nn.sampling.generate`, PyTorch,
on the builtin and the custom backend) and by ``scripts/onnx_generate.py``'s
(onnxruntime), and whether all three chose the same ids. Medians of ``--repeats``
interleaved runs. A checkpoint (``--ckpt``) exports that model; otherwise each cell gets
a fresh one of ``--hidden`` units over a ``--vocab`` vocabulary (speed does not depend on
training).

    PYTHONPATH=src python scripts/bench_export.py --cells rnn gru lstm --out bench_export.json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch
from rich.console import Console
from rich.table import Table

from rnnlab.cli.export import quiet_exporter
from rnnlab.nn.export import export_program, onnx_bytes
from rnnlab.nn.lm import RNNLM, ModelConfig
from rnnlab.nn.sampling import generate
from rnnlab.training.module import RNNLMModule

GENERATOR = Path(__file__).with_name("onnx_generate.py")


def onnx_generator():
    spec = importlib.util.spec_from_file_location("onnx_generate", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def measure(net: RNNLM, tokens: int, repeats: int) -> dict[str, float]:
    with quiet_exporter():
        pt2_s, program = timed(lambda: export_program(net))
        onnx_s, model = timed(lambda: onnx_bytes(program, net))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.onnx").write_bytes(model)
        session = onnxruntime.InferenceSession(str(Path(tmp) / "model.onnx"))
    generator = onnx_generator()
    config = net.config
    manifest = {
        "inputs": [i.name for i in session.get_inputs()],
        "num_layers": config.num_layers,
        "hidden_size": config.hidden_size,
        "level": "char",
        "special_tokens": {},
    }
    exported = generator.Exported(session, manifest, [])
    custom = RNNLM(net.vocab_size, dataclasses.replace(config, backend="custom"))
    custom.load_state_dict(net.state_dict())
    prompt = torch.randint(net.vocab_size, (20,), generator=torch.Generator())
    ids = prompt.tolist()
    runs = {
        "builtin": lambda: generate(net, ids, tokens, greedy=True),
        "custom": lambda: generate(custom, ids, tokens, greedy=True),
        "onnx": lambda: generator.generate(exported, ids, tokens, greedy=True),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs = {name: run() for name, run in runs.items()}  # warm-up
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run)[0])
    speed = {name: tokens / statistics.median(t) for name, t in times.items()}
    return {
        "export_pt2_s": pt2_s,
        "export_onnx_s": onnx_s,
        **{f"{name}_tokens_per_s": s for name, s in speed.items()},
        "onnx_over_builtin": speed["onnx"] / speed["builtin"],
        "onnx_over_custom": speed["onnx"] / speed["custom"],
        "same_ids": len({tuple(out) for out in outputs.values()}) == 1,
    }


def models(args: argparse.Namespace) -> dict[str, RNNLM]:
    if args.ckpt:
        net = RNNLMModule.from_checkpoint(args.ckpt, "builtin").net.eval()
        return {f"{net.config.cell} (ckpt)": net}
    torch.manual_seed(0)
    return {
        cell: RNNLM(args.vocab, ModelConfig(cell=cell, hidden_size=args.hidden)).eval()
        for cell in args.cells
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="export this checkpoint instead")
    parser.add_argument("--cells", nargs="+", default=["rnn", "gru", "lstm"])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench_export.json")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    rows = {name: measure(net, args.tokens, args.repeats) for name, net in models(args).items()}
    table = Table(title=f"export, and greedy generation of {args.tokens} tokens (medians)")
    columns = ("model", "pt2 s", "+ onnx s", "builtin tok/s", "custom tok/s", "onnx tok/s")
    for column in (*columns, "onnx / builtin", "same"):
        table.add_column(column, justify="right")
    for name, r in rows.items():
        table.add_row(
            name,
            f"{r['export_pt2_s']:.1f}",
            f"{r['export_onnx_s']:.1f}",
            f"{r['builtin_tokens_per_s']:,.0f}",
            f"{r['custom_tokens_per_s']:,.0f}",
            f"{r['onnx_tokens_per_s']:,.0f}",
            f"{r['onnx_over_builtin']:.2f}x",
            "yes" if r["same_ids"] else "no",
        )
    Console().print(table)
    machine = {
        "machine": platform.processor() or platform.machine(),
        "cpus": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
