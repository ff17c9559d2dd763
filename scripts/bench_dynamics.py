"""What callbacks=dynamics costs: one probe against one training step, side by side.

The training step is the ``make train`` model's (hidden 256, one layer, batch 32 x 64
characters, Adam), forward, backward and update; the probe is what DynamicsMonitor runs
(a window of 8 x 100 tokens: trace, gradient through time, step Jacobian with 20 power
iterations, spectra, saturation). Medians of ``--repeats`` timings, interleaved.

    PYTHONPATH=src python scripts/bench_dynamics.py --cells rnn gru lstm --out bench_dynamics.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from rnnlab.nn.dynamics import (
    gradient_through_time,
    recurrent_spectrum,
    saturation,
    step_jacobian_norm,
    trace,
)
from rnnlab.nn.lm import RNNLM, ModelConfig

VOCAB = 80


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(cell: str, backend: str, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    net = RNNLM(VOCAB, ModelConfig(cell=cell, backend=backend))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    batch = torch.randint(VOCAB, (32, 65))
    window = torch.randint(VOCAB, (8, 101))

    def train_step() -> None:
        loss, _ = net.loss(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def probe() -> None:
        tr = trace(net, window[:, :-1])
        gradient_through_time(tr, window[:, 1:])
        step_jacobian_norm(net, tr, 20)
        recurrent_spectrum(net, tr)
        saturation(net, tr)

    train_step()  # warm-up
    probe()
    steps, probes = [], []
    for _ in range(repeats):
        steps.append(timed(train_step))
        probes.append(timed(probe))
    step, probed = statistics.median(steps), statistics.median(probes)
    return {"step_ms": 1e3 * step, "probe_ms": 1e3 * probed, "probe_in_steps": probed / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["rnn", "gru", "lstm"])
    parser.add_argument("--backend", default="builtin")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default="bench_dynamics.json")
    args = parser.parse_args()
    rows = {cell: measure(cell, args.backend, args.repeats) for cell in args.cells}
    table = Table(title=f"one probe against one training step ({args.backend}, medians)")
    for column in ("cell", "train step ms", "probe ms", "probe / step"):
        table.add_column(column, justify="right")
    for cell, row in rows.items():
        table.add_row(
            cell, f"{row['step_ms']:.1f}", f"{row['probe_ms']:.1f}", f"{row['probe_in_steps']:.2f}"
        )
    Console().print(table)
    machine = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    with open(args.out, "w", encoding="utf-8") as file:
        json.dump({**machine, "threads": torch.get_num_threads(), "rows": rows}, file, indent=2)


if __name__ == "__main__":
    main()
