"""Speed and accuracy of the cells linear in their state: each scan, each backward, nn.GRU.

One layer's training step with its input projection (forward, backward of a fixed output
gradient), B=32, H=256 by default, for T in ``--steps-list``:

- ``nn.GRU``: PyTorch's GRU of the same width, the baseline of every ratio;
- ``<cell> <scan> manual``: rnnlab's layer with the hand-written BPTT (rnnlab.nn.linear);
- ``<cell> <scan> autograd``: the same forward under autograd;
- ``mingru log-space autograd``: the paper's parallel form, ``h~ = g(x)`` kept positive
  and the scan in log space (``cumsum`` and ``logcumsumexp``, Heinsen 2023), under
  autograd: an alternative to rnnlab's recursive doubling, measured, not shipped;
- ``mingru chunked autograd``: the other one, a chunked scan (sequential across chunks of
  16 steps, closed form within each), under autograd; measured, not shipped.

and, in a second table, the scan's backward alone (``dL/da``, ``dL/db``, ``dL/dh0`` from
``dL/dh``; the forward not timed): rnnlab's hand-written :func:`rnnlab.nn.scan.scan_backward`
against autograd's backward through the same scan, sequential and parallel.

The variants run interleaved in one process, the order rotating every repetition (the
machine's speed drifts); each figure is the median of ``--repeats``. It also measures the
scans' accuracy in float64 against the sequential loop at T=4096 (max abs error of ``h``)::

    python scripts/bench_scan.py --threads 2 --repeats 7 --out bench_scan.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from rnnlab.nn.mingru import MinGRU
from rnnlab.nn.minlstm import MinLSTM
from rnnlab.nn.scan import SCANS, parallel_scan, scan, scan_backward, sequential_scan

CELLS = {"mingru": MinGRU, "minlstm": MinLSTM}
#: steps per chunk of the chunked scan: its weights take C^2 B H numbers
CHUNK = 16
#: goals on 2 cores: the default mode against nn.GRU and against the autograd loop, and the
#: hand-written backward against autograd's through the parallel scan (at T=256)
GOALS = {"vs_gru": 0.25, "vs_autograd_loop": 0.05, "parallel_manual_speedup": 3.0}


def log_space_mingru(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """minGRU's parallel log-space form (Feng et al. 2024, after Heinsen 2023), h0 = 0."""
    p_z, p_h = F.linear(x, weight, bias).chunk(2, dim=-1)
    log_z, log_a = -F.softplus(-p_z), -F.softplus(p_z)  # log z, log (1 - z)
    log_candidate = torch.where(p_h >= 0, (F.relu(p_h) + 0.5).log(), -F.softplus(-p_h))
    a_star = log_a.cumsum(0)
    return (a_star + (log_z + log_candidate - a_star).logcumsumexp(0)).exp()


def chunked_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Sequential across chunks of :data:`CHUNK` steps, closed form within each: with ``c_t``
    the cumulative ``log a`` from the chunk's start, ``h_t = e^{c_t} h_start + sum_{s<=t}
    e^{c_t - c_s} b_s``, a ``(C, C)`` weight per channel (Mamba-2's chunked form; ``a > 0``)."""
    outputs, h = [], h0
    for start in range(0, a.shape[0], CHUNK):
        c = a[start : start + CHUNK].log().cumsum(0)  # (C, B, H)
        steps = c.shape[0]
        later = torch.ones(steps, steps, dtype=torch.bool).tril().view(steps, steps, 1, 1)
        weights = (c[:, None] - c[None, :]).masked_fill(~later, float("-inf")).exp()
        chunk = (weights * b[start : start + CHUNK][None]).sum(1) + c.exp() * h
        outputs.append(chunk)
        h = chunk[-1]
    return torch.cat(outputs)


def chunked_mingru(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """minGRU with :func:`chunked_scan`, under autograd, h0 = 0."""
    p_z, candidate = F.linear(x, weight, bias).chunk(2, dim=-1)
    z = torch.sigmoid(p_z)
    return chunked_scan(1 - z, z * candidate, x.new_zeros(x.shape[1:-1] + (weight.shape[0] // 2,)))


def step_of(variant: str, steps: int, batch: int, hidden: int) -> Callable[[], None]:
    """One forward and backward of one layer (and its input projection) for ``variant``."""
    torch.manual_seed(0)
    x = torch.randn(steps, batch, hidden, requires_grad=True)
    grad = torch.randn(steps, batch, hidden)
    if variant == "nn.GRU":
        layer: torch.nn.Module = torch.nn.GRU(hidden, hidden)
        run = lambda: layer(x)[0]  # noqa: E731
    elif variant.startswith("mingru log-space") or variant.startswith("mingru chunked"):
        layer = torch.nn.Linear(hidden, 2 * hidden)
        form = log_space_mingru if "log-space" in variant else chunked_mingru
        run = lambda: form(x, layer.weight, layer.bias)  # noqa: E731
    else:
        cell, scan, bptt = variant.split()
        layer = CELLS[cell](hidden, hidden, scan=scan, bptt=bptt)
        run = lambda: layer(x)[0]  # noqa: E731

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        run().backward(grad)

    return step


def scan_backward_of(variant: str, steps: int, batch: int, hidden: int) -> Callable[[], float]:
    """The milliseconds of one backward through the scan for ``variant`` (``<scan>
    manual|autograd``), the forward run first, untimed."""
    mode, bptt = variant.split()
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(steps, batch, hidden, generator=generator)
    b = torch.randn(steps, batch, hidden, generator=generator)
    h0 = torch.randn(batch, hidden, generator=generator)
    grad = torch.randn(steps, batch, hidden, generator=generator)

    def backward() -> float:
        if bptt == "manual":
            hs, g = scan(a, b, h0, mode), grad.clone()
            start = time.perf_counter()
            scan_backward(a, h0, hs, g, mode)
        else:
            inputs = [t.detach().requires_grad_() for t in (a, b, h0)]
            hs = scan(*inputs, mode)
            start = time.perf_counter()
            torch.autograd.grad(hs, inputs, grad)
        return (time.perf_counter() - start) * 1000

    return backward


def variants() -> list[str]:
    names = ["nn.GRU", "mingru log-space autograd", "mingru chunked autograd"]
    for cell in CELLS:
        for mode in SCANS:
            names += [f"{cell} {mode} manual", f"{cell} {mode} autograd"]
    return names


def timed(step: Callable[[], None]) -> Callable[[], float]:
    """``step`` as a function that returns its own milliseconds."""

    def run() -> float:
        start = time.perf_counter()
        step()
        return (time.perf_counter() - start) * 1000

    return run


def medians(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median milliseconds per function, interleaved, the order rotating each repetition."""
    names = list(fns)
    for fn in fns.values():
        fn()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(fns[name]())
    return {name: statistics.median(values) for name, values in samples.items()}


def accuracy(steps: int = 4096) -> dict[str, float]:
    """Max |h - h_sequential| in float64 of each parallel form, with a in (0, 1), b > 0 so
    that the log-space scan applies (it cannot take b < 0 without a split by sign)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(steps, 8, 64, generator=generator, dtype=torch.float64) * 0.2 + 0.8
    b = torch.rand(steps, 8, 64, generator=generator, dtype=torch.float64)
    h0 = torch.zeros(8, 64, dtype=torch.float64)
    reference = sequential_scan(a, b, h0)
    a_star = a.log().cumsum(0)
    log_space = (a_star + (b.log() - a_star).logcumsumexp(0)).exp()
    return {
        "doubling": float((parallel_scan(a, b, h0) - reference).abs().max()),
        "log-space": float((log_space - reference).abs().max()),
        "chunked": float((chunked_scan(a, b, h0) - reference).abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-list", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench_scan.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, backward_rows = [], []
    shape = (args.batch, args.hidden)
    for steps in args.steps_list:
        steps_ms = medians({v: timed(step_of(v, steps, *shape)) for v in variants()}, args.repeats)
        for name, ms in steps_ms.items():
            rows.append(
                {"T": steps, "variant": name, "ms": ms, "vs_nn_gru": ms / steps_ms["nn.GRU"]}
            )
        backward = [f"{mode} {bptt}" for mode in SCANS for bptt in ("manual", "autograd")]
        backward_ms = medians(
            {v: scan_backward_of(v, steps, *shape) for v in backward}, args.repeats
        )
        for mode in SCANS:
            manual, autograd = backward_ms[f"{mode} manual"], backward_ms[f"{mode} autograd"]
            backward_rows.append(
                {
                    "T": steps,
                    "scan": mode,
                    "manual_ms": manual,
                    "autograd_ms": autograd,
                    "speedup": autograd / manual,
                }
            )
    errors = accuracy()
    table = Table(title=f"one layer, B={args.batch}, H={args.hidden}, {args.threads} threads")
    for column in ("T", "variant", "ms", "x nn.GRU"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["T"]), row["variant"], f"{row['ms']:.1f}", f"{row['vs_nn_gru']:.2f}")
    backward_table = Table(title="the scan's backward alone")
    for column in ("T", "scan", "manual ms", "autograd ms", "autograd / manual"):
        backward_table.add_column(column, justify="right")
    for row in backward_rows:
        backward_table.add_row(
            str(row["T"]),
            row["scan"],
            f"{row['manual_ms']:.1f}",
            f"{row['autograd_ms']:.1f}",
            f"{row['speedup']:.2f}",
        )
    console = Console()
    console.print(table)
    console.print(backward_table)
    console.print(f"float64 max |h - sequential| at T=4096: {errors}")
    record = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
        "torch": torch.__version__,
        "batch": args.batch,
        "hidden": args.hidden,
        "rows": rows,
        "scan_backward_rows": backward_rows,
        "accuracy": errors,
        "goals": GOALS,
    }
    with open(args.out, "w") as file:
        json.dump(record, file, indent=2)


if __name__ == "__main__":
    main()
