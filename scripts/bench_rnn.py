"""Speed of PyTorch's recurrent layers against rnnlab's (manual and autograd BPTT), per cell.

For each cell (Elman RNN, GRU, LSTM) and configuration it times one training step of
the char-level language model
(forward, cross-entropy over the vocabulary, backward) and the recurrent layer
alone (forward, backward of a fixed random output gradient). The variants run
interleaved in one process, the order rotating every repetition, because the
machine's speed drifts; each figure is the median of ``--steps`` repetitions
after ``--warmup``. Throughput is given in GFLOP/s over the matrix products
(input projection, recurrence, output layer; the backward counted as twice the
forward) and as a fraction of a large float32 sgemm measured in the same run.

    python scripts/bench_rnn.py --cells rnn gru lstm --steps 20 --out bench_rnn.json

It also records which kernel PyTorch runs for each cell's training step (the profiler's op
names): on CPU, nn.LSTM in float32 trains through oneDNN (``mkldnn_rnn_layer``), while
nn.RNN and nn.GRU are ATen loops over per-step ops.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from rnnlab.nn.cores import CORES, GATES
from rnnlab.nn.lm import RNNLM, ModelConfig


@dataclass(frozen=True)
class Config:
    name: str
    vocab: int
    hidden: int
    batch: int
    seq_len: int


CONFIGS = {
    c.name: c
    for c in (
        Config("h128", vocab=65, hidden=128, batch=32, seq_len=100),
        Config("h512", vocab=65, hidden=512, batch=64, seq_len=100),
        Config("v10k", vocab=10000, hidden=256, batch=20, seq_len=35),
        Config("h1024", vocab=65, hidden=1024, batch=128, seq_len=64),
    )
}
# (backend, bptt) of RNNLM for each variant; "builtin" is the baseline of every ratio.
VARIANTS = {
    "builtin": ("builtin", "manual"),
    "custom-manual": ("custom", "manual"),
    "custom-autograd": ("custom", "autograd"),
}
# Ratio custom-manual / builtin that the project aims for, by (cell, config, part).
GOALS = {
    ("rnn", "h128", "step"): 0.75,
    ("rnn", "h512", "step"): 0.95,
    ("rnn", "h1024", "step"): 0.95,
    ("rnn", "h128", "layer"): 0.6,
    **{(cell, "h128", "step"): 0.8 for cell in ("gru", "lstm")},
    **{(cell, "h512", "step"): 1.0 for cell in ("gru", "lstm")},
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], None], device: torch.device) -> float:
    """Wall time of one call, in milliseconds."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def sgemm_gflops(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """Median GFLOP/s of a size x size float32 matrix product: the machine's ceiling."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    c = torch.empty(size, size, device=device)
    for _ in range(2):
        torch.mm(a, b, out=c)
    times = [time_once(lambda: torch.mm(a, b, out=c), device) for _ in range(repeats)]
    return 2 * size**3 / (statistics.median(times) * 1e-3) / 1e9


def pytorch_kernel(cell: str, device: torch.device) -> str:
    """What PyTorch's own layer runs for a training step, from the profiler's op names."""
    layer = CORES[cell]["builtin"](16, 16).to(device)
    x = torch.randn(5, 2, 16, device=device, requires_grad=True)
    with torch.profiler.profile() as profile:
        layer(x)[0].sum().backward()
    names = {event.name for event in profile.events()}
    if "aten::mkldnn_rnn_layer" in names:
        return "oneDNN (mkldnn_rnn_layer, fused forward and backward)"
    if "aten::_cudnn_rnn" in names:
        return "cuDNN (_cudnn_rnn)"
    return "ATen loop (per-step ops; backward by autograd)"


def matmul_flops(cell: str, config: Config, part: str) -> int:
    """FLOPs of one forward + backward (3x forward) of the products that dominate."""
    rows = config.batch * config.seq_len
    forward = 2 * rows * config.hidden * config.hidden * 2 * len(GATES[cell])  # input + recurrence
    if part == "step":
        forward += 2 * rows * config.hidden * config.vocab  # output layer
    return 3 * forward


def lm_step(cell: str, config: Config, variant: str, device: torch.device) -> Callable[[], None]:
    """A closure running one training step of the language model."""
    backend, bptt = VARIANTS[variant]
    torch.manual_seed(0)
    settings = ModelConfig(cell=cell, hidden_size=config.hidden, backend=backend, bptt=bptt)
    model = RNNLM(config.vocab, settings).to(device)
    generator = torch.Generator().manual_seed(1)
    shape = (config.batch, config.seq_len)
    tokens = torch.randint(config.vocab, shape, generator=generator).to(device)
    targets = torch.randint(config.vocab, shape, generator=generator).to(device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        logits, _ = model(tokens)
        F.cross_entropy(logits.reshape(-1, config.vocab), targets.reshape(-1)).backward()

    return step


def layer_step(cell: str, config: Config, variant: str, device: torch.device) -> Callable[[], None]:
    """A closure running forward and backward of the recurrent layer alone."""
    backend, bptt = VARIANTS[variant]
    torch.manual_seed(0)
    options = {"bptt": bptt} if backend == "custom" else {}
    rnn = CORES[cell][backend](config.hidden, config.hidden, **options).to(device)
    generator = torch.Generator().manual_seed(1)
    shape = (config.seq_len, config.batch, config.hidden)
    x = torch.randn(shape, generator=generator).to(device).requires_grad_()
    grad = torch.randn(shape, generator=generator).to(device)

    def step() -> None:
        rnn.zero_grad(set_to_none=True)
        x.grad = None
        output, _ = rnn(x)
        output.backward(grad)

    return step


def measure(
    cell: str, config: Config, part: str, args: argparse.Namespace, device: torch.device
) -> dict[str, list[float]]:
    """Milliseconds per repetition and variant, variants interleaved in a rotating order."""
    build = lm_step if part == "step" else layer_step
    runs = {variant: build(cell, config, variant, device) for variant in VARIANTS}
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    names = list(VARIANTS)
    for repetition in range(args.warmup + args.steps):
        shift = repetition % len(names)
        for variant in names[shift:] + names[:shift]:
            elapsed = time_once(runs[variant], device)
            if repetition >= args.warmup:
                times[variant].append(elapsed)
    return times


def result_rows(
    cell: str, config: Config, part: str, times: dict[str, list[float]], ceiling: float
):
    """One JSON-ready row per variant: median ms, ratio to builtin, throughput, goal."""
    medians = {variant: statistics.median(values) for variant, values in times.items()}
    for variant, values in times.items():
        ms = medians[variant]
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [ms, ms, ms]
        gflops = matmul_flops(cell, config, part) / (ms * 1e-3) / 1e9
        ratio = ms / medians["builtin"]
        goal = GOALS.get((cell, config.name, part)) if variant == "custom-manual" else None
        yield {
            "cell": cell,
            **asdict(config),
            "part": part,
            "variant": variant,
            "ms": ms,
            "ms_quartiles": [quartiles[0], quartiles[2]],
            "ratio": ratio,
            "gflops": gflops,
            "sgemm_gflops": ceiling,
            "sgemm_fraction": gflops / ceiling,
            "goal": goal,
            "meets_goal": None if goal is None else ratio <= goal,
        }


def render(rows: list[dict]) -> Table:
    table = Table(title="training step (LM: forward, cross-entropy, backward) and layer alone")
    columns = ["cell", "config", "V, H, B, T", "part", "variant", "ms", "ratio", "GFLOP/s"]
    for column in [*columns, "of sgemm", "goal"]:
        left = column in ("cell", "config", "part", "variant", "goal")
        table.add_column(column, justify="left" if left else "right")
    for row in rows:
        goal = ""
        if row["goal"] is not None:
            goal = f"<= {row['goal']:.2f} {'ok' if row['meets_goal'] else 'MISSED'}"
        table.add_row(
            row["cell"],
            row["name"],
            f"{row['vocab']}, {row['hidden']}, {row['batch']}, {row['seq_len']}",
            row["part"],
            row["variant"],
            f"{row['ms']:.2f}",
            f"{row['ratio']:.2f}",
            f"{row['gflops']:.1f}",
            f"{row['sgemm_fraction']:.0%}",
            goal,
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed repetitions per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    parser.add_argument("--cells", nargs="+", choices=list(CORES), default=list(CORES))
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="bench_rnn.json", help="JSON file for the results")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(os.cpu_count() or 1)
    console = Console(width=max(120, Console().width))
    console.print(
        f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads; "
        f"median of {args.steps} after {args.warmup} warm-up, variants interleaved"
    )

    kernels = {cell: pytorch_kernel(cell, device) for cell in args.cells}
    for cell, kernel in kernels.items():
        console.print(f"PyTorch's {cell} trains with: {kernel}")
    rows = []
    for cell in args.cells:
        for name in args.configs:
            config = CONFIGS[name]
            ceiling = sgemm_gflops(device)  # again per config: the machine's speed drifts
            console.print(f"{cell} {name}: sgemm 2048^3 at {ceiling:.1f} GFLOP/s")
            for part in ("step", "layer"):
                times = measure(cell, config, part, args, device)
                rows.extend(result_rows(cell, config, part, times, ceiling))
    console.print(render(rows))
    ceilings = [row["sgemm_gflops"] for row in rows]
    if max(ceilings) > 1.25 * min(ceilings):
        console.print(
            f"[yellow]sgemm ranged {min(ceilings):.0f}-{max(ceilings):.0f} GFLOP/s during the run: "
            "something else was using the CPU; rerun on a quiet machine before trusting ratios."
        )

    meta = {
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "steps": args.steps,
        "warmup": args.warmup,
        "pytorch_kernels": kernels,
    }
    with open(args.out, "w") as handle:
        json.dump({"meta": meta, "results": rows}, handle, indent=2)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
