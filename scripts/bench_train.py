"""Training throughput of rnnlab (both backends) against a plain PyTorch loop.

The recipe is the PyTorch word_language_model example's default: a 2-layer tanh
RNN, emsize = nhid = 200, bptt 35, batch 20, SGD lr 20, gradients clipped to norm
0.25, dropout 0.2, on WikiText-2. Three ways train it for ``--batches`` batches:

- ``plain``: the example's loop, written out below (batchify, get_batch,
  repackage_hidden, one SGD update by hand);
- ``builtin`` / ``custom``: ``rnnlab.cli.train.train`` on the composed Hydra config, with
  everything a user gets (Lightning loop, progress bar, TensorBoard, checkpoints), and
  ``model.sparse_embedding=true``, which SGD allows: the input table's gradient holds the
  rows a batch looked up, not 33,278 (the same updates; ``--dense-embedding`` turns it off);
  and ``keep_freed_memory`` (``rnnlab.cli.allocator``), which this process then keeps, so
  ``plain`` runs with it too (``--glibc-defaults``: neither);
- ``example`` (full softmax only, with ``--example-dir`` a checkout of pytorch/examples'
  ``word_language_model``): the example's own ``main.py --model RNN_TANH``, its defaults
  being the recipe, in a process of its own; its ``ms/batch`` lines give the speed and it
  is stopped after ``--batches`` batches. The ratios then read against it.

Each way is timed from the end of batch ``--warmup`` to the end of the last batch,
so set-up and the first batches are left out. The ways run interleaved, the order
rotating every repetition, for each output layer (full softmax, adaptive softmax);
the table gives medians and ratios to ``plain`` with the same output layer.

``--quality-batches K`` also trains rnnlab (builtin) K batches with each output layer
from the same seed and evaluates both on the whole validation split: the adaptive
softmax must not cost more than 5% of val perplexity for the same tokens. The
recipe's SGD at lr 20 diverges for a tanh RNN (the example publishes no RNN_TANH
number), and its two tanh layers under Adam swing between ppl 450 and 70,000 from
one setting to the next, so these runs train one layer with Adam at lr 0.002.

    PYTHONPATH=src python scripts/bench_train.py --data ../shared/data/wikitext-2 \
        --batches 60 --repeats 3 --quality-batches 1000 --out bench_train.json
    # against the example's own main.py (a checkout of pytorch/examples):
    PYTHONPATH=src python scripts/bench_train.py --data ../shared/data/wikitext-2 \
        --example-dir ../examples/word_language_model --outputs softmax --batches 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import open_dict
from rich.console import Console
from rich.table import Table
from torch import nn

from rnnlab.cli.allocator import keep_freed_memory
from rnnlab.cli.app import compose_config
from rnnlab.cli.train import train
from rnnlab.data.datamodule import LMDataModule, batchify
from rnnlab.nn.lm import default_cutoffs

EMSIZE = NHID = 200
LAYERS, BPTT, BATCH, LR, CLIP, DROPOUT = 2, 35, 20, 20.0, 0.25, 0.2
WAYS = ("plain", "builtin", "custom")
OUTPUTS = ("softmax", "adaptive")
#: Adam's learning rate for the --quality-batches runs, one tanh layer (SGD at LR diverges)
QUALITY_LR = 0.002
#: ratio of tokens/s to ``plain`` that each rnnlab way aims for
GOALS = {"builtin": 0.95, "custom": 1.0}


class PlainRNNModel(nn.Module):
    """The word_language_model example's RNNModel (RNN_TANH), optionally with adaptive output."""

    def __init__(self, ntoken: int, output: str) -> None:
        super().__init__()
        self.drop = nn.Dropout(DROPOUT)
        self.encoder = nn.Embedding(ntoken, EMSIZE)
        self.rnn = nn.RNN(EMSIZE, NHID, LAYERS, nonlinearity="tanh", dropout=DROPOUT)
        self.adaptive = output == "adaptive"
        if self.adaptive:
            self.decoder = nn.AdaptiveLogSoftmaxWithLoss(NHID, ntoken, default_cutoffs(ntoken))
        else:
            self.decoder = nn.Linear(NHID, ntoken)
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)

    def loss(
        self, data: torch.Tensor, targets: torch.Tensor, hidden: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        output, hidden = self.rnn(self.drop(self.encoder(data)), hidden)
        flat = self.drop(output).view(-1, NHID)
        if self.adaptive:
            return self.decoder(flat, targets).loss, hidden
        return nn.functional.cross_entropy(self.decoder(flat), targets), hidden


def get_batch(source: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The example's get_batch: ``source`` is time-major ``(steps, batch)``."""
    seq_len = min(BPTT, len(source) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len].reshape(-1)


def plain(ids: torch.Tensor, ntoken: int, output: str, batches: int, warmup: int) -> float:
    """Tokens/s of the example's training loop over ``batches`` batches, after ``warmup``."""
    torch.manual_seed(0)
    model = PlainRNNModel(ntoken, output)
    model.train()
    source = batchify(ids, BATCH).t().contiguous()
    hidden, start = None, 0.0
    for batch in range(batches):
        data, targets = get_batch(source, batch * BPTT)
        hidden = hidden.detach() if hidden is not None else None  # repackage_hidden
        model.zero_grad()
        loss, hidden = model.loss(data, targets, hidden)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-LR)
        if batch == warmup:
            start = time.perf_counter()
    return (batches - 1 - warmup) * BATCH * BPTT / (time.perf_counter() - start)


#: one of main.py's progress lines: ``| epoch   1 |    50/ 2983 batches | ... | ms/batch 81.23 |``
EXAMPLE_LINE = re.compile(r"\|\s*(\d+)/\s*\d+ batches .*\| ms/batch\s+([\d.]+)")
#: main.py reports every this many batches
EXAMPLE_INTERVAL = 10


def example(example_dir: Path, data: Path, workdir: Path, batches: int, warmup: int) -> float:
    """Tokens/s of the example's own main.py over batches ``warmup`` to ``batches``.

    Each progress line gives the mean ms of the interval before it, so the mean over the
    lines after ``warmup`` is the time of those batches over their number.
    """
    command = [sys.executable, "main.py", "--data", str(data.resolve()), "--model", "RNN_TANH"]
    command += ["--epochs", "1", "--log-interval", str(EXAMPLE_INTERVAL)]
    command += ["--save", str(workdir / "example_model.pt")]
    process = subprocess.Popen(
        command, cwd=example_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    times: list[float] = []
    try:
        for line in process.stdout or ():
            match = EXAMPLE_LINE.search(line)
            if match and int(match[1]) > warmup:
                times.append(float(match[2]))
            if match and int(match[1]) >= batches:
                break
    finally:
        process.kill()
        process.wait()
    if not times:
        raise SystemExit(f"error: {example_dir}/main.py printed no progress past batch {warmup}.")
    return BATCH * BPTT * 1000 / statistics.mean(times)


class BatchClock(L.Callback):
    """Times rnnlab's batches from the end of batch ``warmup`` to the end of the last one.

    Hydra builds it from the config inside ``train``, so it reports through a file.
    """

    def __init__(self, warmup: int, report: str) -> None:
        self.warmup, self.report = warmup, Path(report)
        self.start, self.end, self.tokens = 0.0, 0.0, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs, batch, idx) -> None:
        now = time.perf_counter()
        if idx == self.warmup:
            self.start = now
        elif idx > self.warmup:
            self.end, self.tokens = now, self.tokens + batch[1].numel()

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        rate = self.tokens / (self.end - self.start)
        self.report.write_text(json.dumps({"tokens_per_sec": rate}))


def rnnlab_config(data: Path, workdir: Path, overrides: list[str]) -> Any:
    """The recipe as ``rnnlab-train`` composes it, writing into a new directory in ``workdir``."""
    recipe = [
        f"data.path={data}",
        "data.level=word",
        f"data.batch_size={BATCH}",
        f"data.seq_len={BPTT}",
        f"model.hidden_size={NHID}",
        f"model.embedding_dim={EMSIZE}",
        f"model.num_layers={LAYERS}",
        f"model.dropout={DROPOUT}",
        "model.optimizer._target_=torch.optim.SGD",
        f"model.optimizer.lr={LR}",
        "model.scheduler=null",
        "model.sample_tokens=0",
        f"trainer.gradient_clip_val={CLIP}",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "test=false",
        "seed=0",
    ]
    return compose_config("train", recipe + overrides, tempfile.mkdtemp(dir=workdir))


def rnnlab(
    args: argparse.Namespace, workdir: Path, backend: str, output: str, batches: int
) -> float:
    """Tokens/s of ``rnnlab.cli.train.train`` over ``batches`` batches, after ``args.warmup``."""
    cfg = rnnlab_config(
        args.data,
        workdir,
        [
            f"model.backend={backend}",
            f"model.output={output}",
            f"model.sparse_embedding={str(args.sparse).lower()}",
            f"keep_freed_memory={str(not args.glibc_defaults).lower()}",
            f"trainer.limit_train_batches={batches}",
            "trainer.limit_val_batches=1",
        ],
    )
    report = Path(cfg.paths.output_dir) / "clock.json"
    with open_dict(cfg):
        cfg.callbacks.bench_clock = {
            "_target_": f"{__name__}.BatchClock",
            "warmup": args.warmup,
            "report": str(report),
        }
    train(cfg)
    return json.loads(report.read_text())["tokens_per_sec"]


def val_ppl(data: Path, workdir: Path, output: str, batches: int) -> float:
    """Val perplexity over the whole split after ``batches`` training batches (rnnlab builtin)."""
    cfg = rnnlab_config(
        data,
        workdir,
        [
            f"model.output={output}",
            f"trainer.limit_train_batches={batches}",
            "model.optimizer._target_=torch.optim.Adam",
            f"model.optimizer.lr={QUALITY_LR}",
            "model.num_layers=1",
        ],
    )
    return train(cfg)["val"]["ppl"]


@dataclass
class Row:
    output: str
    way: str
    tokens_per_sec: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.tokens_per_sec)


def measure(args: argparse.Namespace, workdir: Path) -> list[Row]:
    """Every (output, way), interleaved, the order rotating each repetition."""
    dm = LMDataModule(path=str(args.data), level="word", batch_size=BATCH, seq_len=BPTT)
    dm.setup("fit")
    ids = torch.as_tensor(np.asarray(dm.ids["train"], dtype=np.int64))
    rows = {(o, w): Row(o, w, []) for o in args.outputs for w in ways(args, o)}
    for output in args.outputs:
        batches = args.batches * (args.adaptive_factor if output == "adaptive" else 1)
        order = ways(args, output)
        for rep in range(args.repeats):
            for way in order[rep % len(order) :] + order[: rep % len(order)]:
                if way == "plain":
                    rate = plain(ids, len(dm.vocab), output, batches, args.warmup)
                elif way == "example":
                    rate = example(args.example_dir, args.data, workdir, batches, args.warmup)
                else:
                    rate = rnnlab(args, workdir, way, output, batches)
                rows[output, way].tokens_per_sec.append(rate)
                CONSOLE.print(f"{output:8s} {way:8s} rep {rep}: {rate:,.0f} tokens/s")
    return list(rows.values())


def ways(args: argparse.Namespace, output: str) -> tuple[str, ...]:
    """The ways to time for ``output``: the example's main.py has no adaptive softmax."""
    with_example = args.example_dir is not None and output == "softmax"
    return (*WAYS, "example") if with_example else WAYS


def reference(by_key: dict[tuple[str, str], Row], output: str) -> Row:
    """What the ratios read against: the example's own main.py where it ran, else plain."""
    return by_key.get((output, "example")) or by_key[output, "plain"]


def table(rows: list[Row], quality: dict[str, float]) -> Table:
    out = Table(title=f"bench_train: WikiText-2, word_language_model recipe ({machine()})")
    for name in ("output", "way", "tokens/s (median)", "runs", "ratio to reference", "goal"):
        out.add_column(name, justify="right")
    by_key = {(r.output, r.way): r for r in rows}
    for row in rows:
        ratio = row.median / reference(by_key, row.output).median
        goal = GOALS.get(row.way)
        mark = "" if goal is None else f">= {goal:.2f} {'ok' if ratio >= goal else 'MISSED'}"
        spread = ", ".join(f"{v:,.0f}" for v in row.tokens_per_sec)
        out.add_row(row.output, row.way, f"{row.median:,.0f}", spread, f"{ratio:.3f}", mark)
    if "adaptive" in {r.output for r in rows} and "softmax" in {r.output for r in rows}:
        for way in WAYS:
            speedup = by_key["adaptive", way].median / by_key["softmax", way].median
            mark = f">= 3 {'ok' if speedup >= 3 else 'MISSED'}"
            out.add_row("adaptive/softmax", way, f"x {speedup:.2f}", "", "", mark)
    if quality:
        ratio = quality["adaptive"] / quality["softmax"]
        values = f"{quality['softmax']:.2f} -> {quality['adaptive']:.2f}"
        mark = f"<= 1.05 {'ok' if ratio <= 1.05 else 'MISSED'}"
        out.add_row("val ppl", "builtin", values, "", f"{ratio:.3f}", mark)
    return out


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


CONSOLE = Console()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a WikiText-2 directory")
    parser.add_argument("--batches", type=int, default=60, help="batches per full-softmax run")
    parser.add_argument(
        "--adaptive-factor", type=int, default=3, help="adaptive runs train this many times more"
    )
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--outputs", default="softmax,adaptive")
    parser.add_argument("--quality-batches", type=int, default=0)
    parser.add_argument(
        "--example-dir",
        type=Path,
        default=None,
        help="pytorch/examples' word_language_model directory: time its own main.py too",
    )
    parser.add_argument(
        "--dense-embedding",
        dest="sparse",
        action="store_false",
        help="rnnlab's input table gets a dense gradient, as in the plain loop and the example",
    )
    parser.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="leave glibc's malloc as it is (rnnlab runs with keep_freed_memory=false)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench_train.json"))
    args = parser.parse_args()
    args.outputs = args.outputs.split(",")
    if not args.glibc_defaults:
        keep_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args, Path(tmp))
        quality = (
            {o: val_ppl(args.data, Path(tmp), o, args.quality_batches) for o in OUTPUTS}
            if args.quality_batches
            else {}
        )
    CONSOLE.print(table(rows, quality))
    CONSOLE.print(
        f"rnnlab's input table: a {'sparse' if args.sparse else 'dense'} gradient; glibc's "
        f"malloc: {'its defaults' if args.glibc_defaults else 'keep_freed_memory'} "
        "(plain and rnnlab; the example's main.py: its defaults)"
    )
    result = {
        "machine": machine(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "recipe": {
            "emsize": EMSIZE,
            "nhid": NHID,
            "layers": LAYERS,
            "bptt": BPTT,
            "batch": BATCH,
            "lr": LR,
            "clip": CLIP,
            "dropout": DROPOUT,
        },
        "rnnlab_sparse_embedding": args.sparse,
        "keep_freed_memory": not args.glibc_defaults,
        "batches": args.batches,
        "warmup": args.warmup,
        "rows": [{**vars(r), "median": r.median} for r in rows],
        "reference": {
            o: reference({(r.output, r.way): r for r in rows}, o).way for o in args.outputs
        },
        "quality_batches": args.quality_batches,
        "quality_model": f"1 tanh layer, Adam lr {QUALITY_LR}",
        "val_ppl": quality,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    CONSOLE.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
